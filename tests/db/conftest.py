"""Fixtures running every store test against each backend.

``store`` is parametrized over the embedded SQLite store, a MongoStore against the
``mongoeco`` wire-protocol server (one server per test, from mongoeco's pytest kit), and a
real MongoDB when ``ICEPROD_TEST_MONGODB_URL`` is set (the parameter exists only then). Because ``store`` consumes
``mongoeco_uri``, the kit's engine parameter (``--mongoeco-backend``) appears in every test id.

pytest only accepts ``pytest_plugins`` in the top-level conftest, so the kit is registered in
``pytest_configure`` here unless it already is (e.g. ``-p mongoeco.pytest_asyncio``, which is
also what makes its ``--mongoeco-*`` command-line options available).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from mongoeco.compat import resolve_pymongo_profile

from iceprod.db import Database, all_specs
from iceprod.db.mongo import MongoStore
from iceprod.db.sqlite import SQLiteStore
from iceprod.db.store import Store

MONGOECO_PLUGIN = "mongoeco.pytest_asyncio"
MONGODB_URL_ENV = "ICEPROD_TEST_MONGODB_URL"
STRICT_PROFILE = "strict-auto-installed"
FALLBACK_PROFILE = "auto-installed"


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.import_plugin(MONGOECO_PLUGIN)
    use_known_pymongo_profile(config)


def use_known_pymongo_profile(config: pytest.Config) -> None:
    """mongoeco's default PyMongo profile refuses PyMongo versions newer than it knows;
    fall back to the nearest known profile instead of erroring every mongo test."""
    if config.getoption("--mongoeco-pymongo-profile") != STRICT_PROFILE:
        return
    try:
        resolve_pymongo_profile(STRICT_PROFILE)
    except ValueError:
        config.option.mongoeco_pymongo_profile = FALLBACK_PROFILE


def unique_db_name() -> str:
    return f"iceprod_test_{uuid.uuid4().hex[:12]}"


def store_backends() -> list[str]:
    """The backends every store test runs on: a real MongoDB only when one is configured, so
    a run without one reports no skips for it (instead of one per store test)."""
    return ["sqlite", "mongoeco", *(["mongodb"] if os.environ.get(MONGODB_URL_ENV) else [])]


@pytest.fixture(params=store_backends())
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, mongoeco_uri: str
) -> AsyncIterator[Store]:
    """A fresh, empty store of each backend."""
    backend: str = request.param
    if backend == "sqlite":
        sqlite_store = SQLiteStore(str(tmp_path / "data"))
        yield sqlite_store
        await sqlite_store.close()
    elif backend == "mongoeco":
        mongo_store = MongoStore(mongoeco_uri, unique_db_name())
        yield mongo_store
        await mongo_store.close()
    else:
        mongo_store = MongoStore(os.environ[MONGODB_URL_ENV], unique_db_name())
        yield mongo_store
        await mongo_store.client.drop_database(mongo_store.db_name)
        await mongo_store.close()


@pytest.fixture
def mongoeco_engine(request: pytest.FixtureRequest) -> str | None:
    """The mongoeco engine ("memory" or "sqlite") when ``store`` is the mongoeco one."""
    params = request.node.callspec.params
    return params["mongoeco_uri"] if params.get("store") == "mongoeco" else None


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    """The SQLite store alone, for tests of SQLite-specific behaviour."""
    store = SQLiteStore(str(tmp_path / "data"))
    yield store
    await store.close()


@pytest.fixture
async def db(store: Store) -> Database:
    """Every repository over a fresh store of each backend, with its indexes."""
    await store.ensure_indexes(all_specs())
    return Database(store)
