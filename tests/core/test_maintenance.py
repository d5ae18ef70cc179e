"""What a drain or maintenance entry applies to: the names a pilot and a grid answer to,
and the words a refusal carries."""

from __future__ import annotations

import pytest

from iceprod.common.errors import Invalid
from iceprod.core.maintenance import (
    Entry,
    State,
    check_node,
    grid_names,
    health,
    pilot_names,
    why_stopped,
)


def entry(node: str, message: str = "m") -> Entry:
    return Entry(node=node, message=message, retry_after=600, since="2026-01-01T00:00:00Z",
                 by="root")


PILOT = {"pilot_id": "p", "site": "WIPAC", "host": "node7.example.org", "grid_name": "cluster",
         "grid_id": "g" * 32}
GRID = {"grid_id": "g" * 32, "host": "submit.example.org", "site": "WIPAC",
        "queues": {"cluster": "slurm"}}


@pytest.mark.parametrize("node", ["WIPAC", "node7.example.org", "cluster", "g" * 32])
def test_a_pilot_is_drained_by_its_site_host_or_grid(node: str) -> None:
    state = State(None, (entry("elsewhere"), entry(node, "cooling")))
    assert why_stopped(state, pilot_names(PILOT)) == f"{node} is drained: cooling"


@pytest.mark.parametrize("node", ["WIPAC", "submit.example.org", "cluster", "g" * 32])
def test_a_grid_is_drained_by_its_id_host_site_or_name(node: str) -> None:
    state = State(None, (entry(node, "upgrade"),))
    assert why_stopped(state, grid_names(GRID)) == f"{node} is drained: upgrade"


def test_maintenance_stops_everything_and_other_nodes_nothing() -> None:
    assert why_stopped(State(None, (entry("other"),)), pilot_names(PILOT)) is None
    assert why_stopped(State(None, ()), pilot_names({})) is None
    state = State(entry("all", "store upgrade"), ())
    assert why_stopped(state, pilot_names({})) == "server in maintenance: store upgrade"
    assert health(state) == {"status": "on", "message": "store upgrade",
                             "since": "2026-01-01T00:00:00Z", "drained_nodes": 0}
    assert health(State(None, (entry("a"), entry("b"))))["drained_nodes"] == 2
    assert State(None, (entry("a"),)).as_doc() == {
        "general": {"status": "off"},
        "nodes": {"a": {"node": "a", "status": "on", "message": "m", "retry_after": 600,
                        "since": "2026-01-01T00:00:00Z", "by": "root"}}}


@pytest.mark.parametrize("node", ["", "a/b", "a b", "x" * 129, "ünï"])
def test_a_node_name_is_checked(node: str) -> None:
    with pytest.raises(Invalid, match="node: 'all' or a site, host or grid name"):
        check_node(node)
