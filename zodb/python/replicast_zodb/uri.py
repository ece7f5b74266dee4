"""The zodburi resolver of ``replicast:///path/to/client.toml``.

Query parameters: ``read_only`` (0/1), ``timeout`` (seconds), ``max_object_size`` (bytes),
``cache_size`` (bytes), ``name``; the others are zodburi's database keywords (``database_name``,
``connection_cache_size``, ...).
"""

from __future__ import annotations

from typing import Any, Callable
from urllib.parse import parse_qsl, urlsplit

from replicast_zodb.storage import ReplicastStorage

_FALSE = {"0", "false", "no", "off", ""}


def resolve_uri(uri: str) -> tuple[Callable[[], ReplicastStorage], dict[str, str]]:
    """zodburi's resolver: ``(factory, unused keywords)``."""
    parts = urlsplit(uri)
    if parts.scheme != "replicast":
        raise ValueError(f"not a replicast URI: {uri!r}")
    if parts.netloc:
        raise ValueError(
            f"{uri!r}: a replicast URI names a local configuration file "
            "(replicast:///path/to/client.toml), not a host"
        )
    if not parts.path:
        raise ValueError(f"{uri!r}: the path of the client configuration file is missing")
    unused = dict(parse_qsl(parts.query, keep_blank_values=True))
    options: dict[str, Any] = {}
    if "read_only" in unused:
        options["read_only"] = unused.pop("read_only").lower() not in _FALSE
    if "timeout" in unused:
        options["timeout"] = float(unused.pop("timeout"))
    if "max_object_size" in unused:
        options["max_object_size"] = int(unused.pop("max_object_size"))
    if "cache_size" in unused:
        options["cache_size"] = int(unused.pop("cache_size"))
    if "name" in unused:
        options["name"] = unused.pop("name")
    path = parts.path

    def factory() -> ReplicastStorage:
        return ReplicastStorage(path, **options)

    return factory, unused
