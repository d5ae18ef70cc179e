"""Choosing a store backend from the database URL.

Kept apart from ``store.py`` so that the interfaces there are imported by each backend and
never import a backend back; a backend's module (and PyMongo) loads only when chosen.
"""

from __future__ import annotations

from iceprod.db.store import Store


def open_store(db_url: str | None, data_dir: str) -> Store:
    """``mongodb://...`` selects MongoDB; anything else the embedded SQLite store under
    ``data_dir``."""
    if db_url and db_url.startswith(("mongodb://", "mongodb+srv://")):
        from iceprod.db.mongo import MongoStore

        return MongoStore(db_url)
    from iceprod.db.sqlite import SQLiteStore

    return SQLiteStore(data_dir)
