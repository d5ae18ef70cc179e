"""The fair-share formula of iceprod/core/priority.py, unit by unit."""

from __future__ import annotations

import pytest

from iceprod.core.priority import (
    DatasetLoad,
    quotas,
    scores,
    shares,
    within_dataset,
)


def ds(i: str, user: str, group: str, priority: float = 0.5, size: int = 1000,
       running: int = 0) -> DatasetLoad:
    return DatasetLoad(i, user, group, priority, size, running)


def test_two_users_with_equal_priority_share_equally() -> None:
    s = shares([ds("a", "alice", "g"), ds("b", "bob", "g")], {})
    assert s == {"a": 0.5, "b": 0.5}


def test_a_user_with_more_datasets_does_not_get_more() -> None:
    s = shares([ds("a1", "alice", "g"), ds("a2", "alice", "g"), ds("b", "bob", "g")], {})
    assert s["a1"] + s["a2"] == pytest.approx(s["b"]) == pytest.approx(0.5)


def test_dataset_priority_splits_a_users_share() -> None:
    s = shares([ds("hi", "alice", "g", 0.75), ds("lo", "alice", "g", 0.25)], {})
    assert s == {"hi": pytest.approx(0.75), "lo": pytest.approx(0.25)}


def test_zero_priority_gets_nothing_while_others_have_work() -> None:
    s = shares([ds("z", "alice", "g", 0.0), ds("b", "bob", "g")], {})
    assert s["z"] == 0 and s["b"] == pytest.approx(0.5)


def test_group_weights() -> None:
    s = shares([ds("p", "alice", "physics"), ds("a", "bob", "astro")], {"physics": 3})
    assert s == {"p": pytest.approx(0.75), "a": pytest.approx(0.25)}
    assert sum(shares([ds("p", "alice", "physics"), ds("a", "bob", "astro"),
                       ds("q", "carol", "physics")], {"physics": 3}).values()) == \
        pytest.approx(1.0)


def test_running_work_damps_the_score() -> None:
    idle = scores([ds("a", "alice", "g"), ds("b", "bob", "g")], {})
    busy = scores([ds("a", "alice", "g", running=90), ds("b", "bob", "g", running=10)], {})
    assert idle["a"] == pytest.approx(idle["b"])
    assert busy["a"] < busy["b"]
    # at exactly its share a dataset's score is halved (before size damping)
    even = scores([ds("a", "alice", "g", running=50), ds("b", "bob", "g", running=50)], {})
    assert even["a"] == pytest.approx(idle["a"] / 2)


def test_larger_datasets_yield_a_little() -> None:
    s = scores([ds("small", "alice", "g", size=10), ds("big", "bob", "g", size=10**6)], {})
    assert s["small"] > s["big"] > s["small"] / 2


def test_within_dataset_prefers_later_tasks_and_lower_jobs() -> None:
    assert within_dataset(0, 2, 100, 3) > within_dataset(0, 0, 100, 3)
    assert within_dataset(5, 0, 100, 3) > within_dataset(50, 0, 100, 3)
    assert within_dataset(50, 2, 100, 3) > within_dataset(0, 0, 100, 3)
    assert 0 <= within_dataset(99, 0, 100, 3) <= within_dataset(0, 2, 100, 3) <= 1


def test_quotas_split_slots_by_score_less_what_is_queued() -> None:
    assert quotas(100, {"a": 0.5, "b": 0.5}, {}) == {"a": 50, "b": 50}
    assert quotas(100, {"a": 0.75, "b": 0.25}, {"a": 70}) == {"a": 5, "b": 25}
    assert quotas(100, {"a": 0.0}, {}) == {"a": 0}
    three = quotas(100, {"a": 0.375, "b": 0.375, "c": 0.25}, {})
    assert sum(three.values()) == 100 and three["c"] == 25
