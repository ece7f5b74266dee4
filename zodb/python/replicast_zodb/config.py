"""The ZConfig section ``<replicast>`` (component.xml): ``%import replicast_zodb``."""

from __future__ import annotations

from typing import Any

from ZODB.config import BaseConfig

from replicast_zodb.storage import ReplicastStorage


class ReplicastStorageFactory(BaseConfig):
    """Opens a :class:`ReplicastStorage` from a ``<replicast>`` section."""

    def open(self, database_name: str = "unnamed", databases: Any = None) -> ReplicastStorage:
        section = self.config
        return ReplicastStorage(
            section.config,
            name=section.name,
            read_only=section.read_only,
            timeout=section.timeout,
            max_object_size=section.max_object_size,
            cache_size=section.cache_size,
        )
