"""Locating config problems in the JSON text: what `iceprod submit` prints."""

from __future__ import annotations

import pytest

from iceprod.common.configcheck import ConfigError, check_text, locate, parse_path, split_problems

TEXT = """{
  "tasks": [
    {"name": "a",
     "requirements": {"memory": -1}},
    {"name": "b", "odd key": {"x": [1, 2,
       3]}}
  ]
}"""


def test_parse_path() -> None:
    assert parse_path("tasks[1].requirements.memory") == ["tasks", 1, "requirements", "memory"]
    assert parse_path('tasks[1]["odd key"].x[2]') == ["tasks", 1, "odd key", "x", 2]


def test_locate_fields_and_missing_ones() -> None:
    assert locate(TEXT, "tasks[0].requirements.memory") == (4, 23)
    assert locate(TEXT, 'tasks[1]["odd key"].x[2]') == (6, 8)
    assert locate(TEXT, "tasks[0].steps") == (3, 5)  # missing: its task's line
    assert locate("not json", "tasks") is None


def test_split_problems_keeps_semicolons_inside_messages() -> None:
    message = "tasks[0].name: bad; really bad; tasks[1]: 'steps' is a required property"
    assert split_problems(message, None) == [
        ("tasks[0].name", "bad; really bad"), ("tasks[1]", "'steps' is a required property")]
    assert split_problems("dependency cycle a -> b -> a", "tasks") == [
        ("tasks", "dependency cycle a -> b -> a")]


def test_check_text_reports_each_problem_with_its_line() -> None:
    with pytest.raises(ConfigError) as err:
        check_text(TEXT)
    where = {(p.field, p.line) for p in err.value.problems}
    assert ("tasks[0].requirements.memory", 4) in where
    assert ('tasks[1]["odd key"]', 5) in where
