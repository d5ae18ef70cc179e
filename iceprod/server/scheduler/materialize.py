"""Materialization moved to ``iceprod.core.materialize`` (a config PUT materializes the
first batch at once, so REST needs it too); these names stay importable from here."""

from __future__ import annotations

from iceprod.core.materialize import (
    BACKLOG,
    TaskTemplate,
    build_jobs,
    materialize_all,
    materialize_dataset,
    templates,
)

__all__ = ["BACKLOG", "TaskTemplate", "build_jobs", "materialize_all", "materialize_dataset",
           "templates"]
