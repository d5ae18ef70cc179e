"""What the dialects share: reading a catalog entry for a caller, and submitting an ordinary
dataset with its config in one step."""

from __future__ import annotations

import logging

from iceprod.common.errors import Forbidden, NotFound
from iceprod.common.ids import new_id
from iceprod.common.schema import validate_dataset_config
from iceprod.common.timeutil import iso
from iceprod.core.taskflow import carry_dataset_status
from iceprod.db.store import Doc
from iceprod.rest.auth.tokens import Principal
from iceprod.rest.base import APIHandler

log = logging.getLogger(__name__)
NO_GROUP = "users"
"""A dataset's group when its submitter belongs to none."""


async def usable_script(h: APIHandler, name: str, field: str) -> Doc:
    """The catalog entry ``name``, when the caller may use it: a member of one of its
    ``groups`` (none: everyone), or admin/system. 404 naming ``field`` when missing."""
    doc = await h.db.scripts.find(name)
    if doc is None:
        raise NotFound(f"{field}: no script named {name!r}")
    p = h.principal
    groups = doc.get("groups") or []
    if groups and not p.privileged and not set(groups) & set(p.groups):
        raise Forbidden(f"{field}: script {name!r} is for the groups {', '.join(groups)}")
    return doc


def dataset_group(p: Principal, script: Doc) -> str:
    """The group a dialect dataset is submitted under: the caller's first group the script
    allows, else its first group."""
    allowed = script.get("groups") or []
    for g in p.groups:
        if not allowed or g in allowed:
            return g
    return p.groups[0] if p.groups else NO_GROUP


async def submit(h: APIHandler, *, description: str, group: str, tasks_per_job: int,
                 config: Doc, submission: Doc) -> str:
    """Create a processing dataset of one job running ``config`` (checked first), and the
    dialect's record of it. The config is written last: until then the scheduler creates
    nothing, so inputs stored by the caller beforehand are in place when the task runs."""
    validate_dataset_config(config)
    p = h.principal
    dataset_id = submission["dataset_id"] if "dataset_id" in submission else new_id()
    now = iso()
    doc = {
        "dataset_id": dataset_id, "description": description, "group": group,
        "username": p.username, "status": "processing", "priority": 0.5,
        "jobs_submitted": 1, "tasks_submitted": tasks_per_job, "tasks_per_job": tasks_per_job,
        "debug": False, "jobs_immutable": True,
        "max_failures": (config.get("options") or {}).get("max_failures",
                                                          h.ctx.config.max_failures),
        "start_date": now, "status_changed": now,
    }
    rules = {"read_users": [p.username], "write_users": [p.username], "read_groups": [group],
             "write_groups": []}
    doc["dataset"] = await h.db.settings.next_counter("dataset")
    await h.db.auths.set_rules(dataset_id, rules)
    try:
        await h.db.datasets.create(doc)
        await h.db.submissions.create({**submission, "dataset_id": dataset_id,
                                       "username": p.username, "deleted": False,
                                       "created": now, "updated": now})
        await h.db.config.put(dataset_id, config)
    except BaseException:
        log.warning("dialect submission %s failed half-way: its dataset (if created) has "
                    "no rules, so nobody but admins sees it", dataset_id)
        await h.db.auths.remove(dataset_id)
        raise
    return dataset_id


async def stop(h: APIHandler, dataset_id: str) -> int:
    """Suspend a dialect dataset (its running task is taken from its pilot, which stops
    it); one already finished is left as it is. Answers how many tasks changed."""
    ds = await h.db.datasets.get(dataset_id, keys=["status"])
    if ds["status"] not in ("processing", "errors"):
        return 0
    doc = await h.db.datasets.set_status(dataset_id, "suspended")
    return await carry_dataset_status(h.db, h.ctx.events, doc, ds["status"])
