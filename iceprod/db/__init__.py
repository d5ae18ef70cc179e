"""The data layer: one repository per collection over a backend-neutral store.

Nothing above this package knows which backend runs (see ``store.py``).
"""

from __future__ import annotations

from iceprod.db.archive import ArchiveRepo
from iceprod.db.audit import AuditRepo
from iceprod.db.auths import AuthsRepo
from iceprod.db.backends import open_store
from iceprod.db.config import ConfigRepo
from iceprod.db.datasets import DatasetsRepo
from iceprod.db.dialects import ApiKeysRepo, ScriptsRepo, SubmissionsRepo
from iceprod.db.events import EventsRepo
from iceprod.db.files import FilesRepo
from iceprod.db.grids import GridsRepo
from iceprod.db.groups import GroupsRepo
from iceprod.db.jobs import JobsRepo
from iceprod.db.logs import LogsRepo
from iceprod.db.pilots import PilotsRepo
from iceprod.db.projects import ProjectsRepo
from iceprod.db.revocations import RevocationsRepo
from iceprod.db.roles import RolesRepo
from iceprod.db.settings import SettingsRepo
from iceprod.db.store import CollectionSpec, Store
from iceprod.db.task_stats import TaskStatsRepo
from iceprod.db.tasks import TasksRepo
from iceprod.db.usage import UsageRepo
from iceprod.db.users import UsersRepo

REPOSITORIES = (
    AuditRepo, AuthsRepo, ConfigRepo, DatasetsRepo, FilesRepo, GridsRepo, JobsRepo, LogsRepo,
    PilotsRepo, SettingsRepo, TaskStatsRepo, TasksRepo,
    GroupsRepo, RevocationsRepo, RolesRepo, UsersRepo,
    ProjectsRepo, UsageRepo, ArchiveRepo,
    EventsRepo,
    ScriptsRepo, SubmissionsRepo, ApiKeysRepo,
)


def all_specs() -> list[CollectionSpec]:
    """Every collection the repositories keep, for creating tables and indexes."""
    return [spec for repo in REPOSITORIES for spec in (repo.spec, *repo.extra_specs)]


class Database:
    """Every repository of one store, created once per process and passed in."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.audit = AuditRepo(store)
        self.auths = AuthsRepo(store)
        self.config = ConfigRepo(store)
        self.datasets = DatasetsRepo(store)
        self.files = FilesRepo(store)
        self.grids = GridsRepo(store)
        self.jobs = JobsRepo(store)
        self.logs = LogsRepo(store)
        self.pilots = PilotsRepo(store)
        self.settings = SettingsRepo(store)
        self.task_stats = TaskStatsRepo(store)
        self.tasks = TasksRepo(store)
        self.groups = GroupsRepo(store)
        self.revocations = RevocationsRepo(store)
        self.roles = RolesRepo(store)
        self.users = UsersRepo(store)
        self.projects = ProjectsRepo(store)
        self.usage = UsageRepo(store)
        self.archive = ArchiveRepo(store)
        self.events = EventsRepo(store)
        self.scripts = ScriptsRepo(store)
        self.submissions = SubmissionsRepo(store)
        self.apikeys = ApiKeysRepo(store)

    @classmethod
    async def open(cls, db_url: str | None, data_dir: str) -> Database:
        store = open_store(db_url, data_dir)
        await store.ensure_indexes(all_specs())
        return cls(store)

    async def close(self) -> None:
        await self.store.close()
