"""Materialization: turn a processing dataset's config into jobs and tasks, late and
idempotently.

Job and task ids are derived from ``(dataset_id, job_index[, task_index])`` (UUID5, see
``iceprod.core.keys``), and the store's unique keys refuse duplicates, so a materializer
killed at any point and run again creates exactly the missing documents: never an extra or
missing job or task. A dataset's
``jobs_materialized`` is only a resume hint, advanced after a batch is fully written.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from iceprod.common.errors import Invalid
from iceprod.common.params import Renderer, compile_template, task_context
from iceprod.common.requirements import materialize_requirements
from iceprod.common.timeutil import iso
from iceprod.core.keys import foreign_task_index, job_id_for, task_id_for
from iceprod.core.priority import within_dataset
from iceprod.db import Database
from iceprod.db.store import Doc
from iceprod.db.tasks import ANY_RUNTIME

log = logging.getLogger(__name__)

BACKLOG = ["waiting", "queued"]


def _has_expr(value: Any) -> bool:
    return "$(" in json.dumps(value)


@dataclass
class TaskTemplate:
    """One task of the config, parsed once so per-job work is only what varies."""

    index: int
    name: str
    body: Renderer
    requirements: Renderer
    static_requirements: Doc | None
    local_deps: list[int]
    foreign_deps: list[tuple[str, int]]

    def build(self, ds: Doc, job_index: int, steering: Mapping[str, Any]) -> Doc:
        dataset_id = ds["dataset_id"]
        ctx = task_context(dataset_id=dataset_id, dataset=ds.get("dataset", 0),
                           job_index=job_index, task_index=self.index, task_name=self.name,
                           steering=steering)
        requirements = self.static_requirements
        if requirements is None:
            requirements = materialize_requirements(
                self.requirements(ctx), None, f"tasks[{self.index}].requirements")
        depends = [task_id_for(dataset_id, job_index, i) for i in self.local_deps]
        depends += [task_id_for(other, job_index, i) for other, i in self.foreign_deps]
        body = self.body(ctx)
        if isinstance(container := body.get("container"), dict):
            # only a pilot offering this runtime (any, when the task names none) claims it
            body["container_runtime"] = container.get("runtime") or ANY_RUNTIME
        return {
            "task_id": task_id_for(dataset_id, job_index, self.index),
            "dataset_id": dataset_id,
            "job_id": job_id_for(dataset_id, job_index),
            "job_index": job_index,
            "task_index": self.index,
            "name": self.name,
            "depends": depends,
            "requirements": requirements,
            "status": "waiting",
            "priority": within_dataset(job_index, self.index, ds["jobs_submitted"],
                                       ds["tasks_per_job"]),
            "failures": 0,
            "evictions": 0,
            "walltime": 0.0,
            "walltime_err": 0.0,
            "walltime_err_n": 0,
            **body,
        }


async def templates(db: Database, config: Doc) -> list[TaskTemplate]:
    """Analyse a config once: dependency indexes and which parts need substitution."""
    names = {t["name"]: i for i, t in enumerate(config["tasks"])}
    out = []
    for i, t in enumerate(config["tasks"]):
        local, foreign = [], []
        for dep in t.get("depends", []):
            if isinstance(dep, int):
                local.append(dep)
            elif ":" in dep:
                other, name = dep.split(":", 1)
                foreign.append((other, await foreign_task_index(db, other, name)))
            else:
                local.append(names[dep])
        field = f"tasks[{i}]"
        reqs = t.get("requirements", {})
        static = None if _has_expr(reqs) else materialize_requirements(
            reqs, None, f"{field}.requirements")
        body = {"steps": t.get("steps", []), "data": t.get("data", []), "env": t.get("env", {})}
        if t.get("container"):
            body["container"] = t["container"]
        out.append(TaskTemplate(
            i, t["name"], compile_template(body, field),
            compile_template(reqs, f"{field}.requirements"), static, local, foreign))
    return out


def build_jobs(ds: Doc, tmpl: Sequence[TaskTemplate], steering: Mapping[str, Any],
               job_indexes: range) -> tuple[list[Doc], list[Doc]]:
    now = iso()
    jobs, tasks = [], []
    for j in job_indexes:
        jobs.append({"job_id": job_id_for(ds["dataset_id"], j), "dataset_id": ds["dataset_id"],
                     "job_index": j, "status": "processing", "status_changed": now})
        for t in tmpl:
            doc = t.build(ds, j, steering)
            doc["status_changed"] = now
            tasks.append(doc)
    return jobs, tasks


async def materialize_dataset(db: Database, ds: Doc, buffer: int, batch_jobs: int,
                              max_batches: int | None = None) -> int:
    """Create the next jobs of one dataset until its backlog reaches ``buffer`` tasks or all
    ``jobs_submitted`` exist; returns how many tasks were created."""
    cfg_doc = await db.config.find(ds["dataset_id"])
    if cfg_doc is None:
        return 0
    config = cfg_doc["config"]
    tmpl = await templates(db, config)
    steering = (config.get("steering") or {}).get("parameters", {})
    created = 0
    start = int(ds.get("jobs_materialized", 0))
    batches = 0
    while start < ds["jobs_submitted"] and (max_batches is None or batches < max_batches):
        backlog = await db.tasks.count(dataset_id=ds["dataset_id"], status=BACKLOG)
        room = buffer - backlog
        if room <= 0:
            break
        n = min(batch_jobs, ds["jobs_submitted"] - start,
                max(1, math.ceil(room / max(len(tmpl), 1))))
        jobs, tasks = build_jobs(ds, tmpl, steering, range(start, start + n))
        await db.jobs.insert_missing(jobs)
        created += await db.tasks.insert_missing(tasks)
        start += n
        await db.datasets.advance_materialized(ds["dataset_id"], start)
        batches += 1
    return created


async def materialize_all(db: Database, buffer: int, batch_jobs: int) -> int:
    """One pass over every processing dataset that still has jobs to create."""
    total = 0
    for ds in await db.datasets.needing_materialization():
        try:
            total += await materialize_dataset(db, ds, buffer, batch_jobs)
        except Invalid as e:
            log.warning("dataset %s cannot be materialized: %s", ds["dataset_id"], e.message)
    if total:
        log.info("materialized %d task(s)", total)
    return total
