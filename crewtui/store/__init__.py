"""The SQLite store of a data dir: schema and migrations (schema.py), the batched writer (writer.py), and the
`Store` with its queries and the writer lease (store.py)."""

from __future__ import annotations

from crewtui.store.schema import APPLICATION_ID, MIGRATIONS, current_version
from crewtui.store.store import Store

__all__ = ["APPLICATION_ID", "MIGRATIONS", "Store", "current_version"]
