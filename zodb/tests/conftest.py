"""pytest setup of the replicast_zodb tests.

Every test runs against a real cluster of ``replicast node`` processes (``$REPLICAST_BIN``,
built by ``.ci/run``). The certificates are made once per test process and shared by its
clusters (each cluster has its own ports and multicast group).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

import clusters
import expected_failures


def pytest_configure(config: pytest.Config) -> None:
    if not os.environ.get("REPLICAST_BIN") and not shutil.which("replicast"):
        raise pytest.UsageError(
            "the replicast binary is needed: cargo build -p replicast, then "
            "REPLICAST_BIN=target/debug/replicast"
        )


def pytest_sessionstart(session: pytest.Session) -> None:
    clusters.SESSION_DIR = Path(tempfile.mkdtemp(prefix="replicast-zodb-tests-"))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if clusters.SESSION_DIR is not None:
        shutil.rmtree(clusters.SESSION_DIR, ignore_errors=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Marks the tests of expected_failures.py as expected failures (not with
    REPLICAST_ZODB_RAW=1, which shows what passes and fails today, to update the list)."""
    if os.environ.get("REPLICAST_ZODB_RAW") == "1":
        return
    for item in items:
        cls = getattr(item, "cls", None)
        if cls is None:
            continue
        expected = expected_failures.reason(cls.__name__, item.name)
        if expected is not None:
            why, strict = expected
            item.add_marker(pytest.mark.xfail(reason=why, strict=strict))
