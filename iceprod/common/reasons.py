"""Failure reasons, classified so operators can tell sick nodes from broken payloads."""

from __future__ import annotations

import re

NODE = "node"
RESOURCES = "resources"
PAYLOAD = "payload"
UNKNOWN = "unknown"
EVICTED = "evicted"
"""A run stopped from outside (its pilot shut down, its lease expired): requeued, never
counted against ``max_failures``."""

_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (RESOURCES, re.compile(r"memory|time limit|walltime|overuse|out of time|disk usage|"
                           r"exceeded", re.IGNORECASE)),
    (NODE, re.compile(r"no space left|cvmfs|glibc|cannot allocate|lost contact|sigterm|"
                      r"evicted|pilot (was )?(stopped|killed)|stage|transfer|network|"
                      r"connection|timed out|node|quota|read-only file system|"
                      r"permission denied|not found: /", re.IGNORECASE)),
    (PAYLOAD, re.compile(r"exit(ed)? (code|status|with)|non-?zero|traceback|exception|"
                         r"segmentation|error|killed by signal", re.IGNORECASE)),
)


def classify(reason: str | None) -> str:
    """``node`` (the machine or environment), ``resources`` (the task outgrew its
    requirements), ``payload`` (the task's own code failed) or ``unknown``."""
    if not reason:
        return UNKNOWN
    for cls, pattern in _RULES:
        if pattern.search(reason):
            return cls
    return UNKNOWN
