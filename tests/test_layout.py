"""The import direction of STYLE.md: pilot/ and client/ never import rest/, server/ or db/."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "iceprod"
FORBIDDEN = ("iceprod.rest", "iceprod.server", "iceprod.db")


def imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def test_pilot_and_client_import_no_server_code() -> None:
    offenders = []
    for part in ("pilot", "client"):
        for path in (PKG / part).rglob("*.py"):
            for name in imports(path):
                if name.startswith(FORBIDDEN):
                    offenders.append(f"{path.relative_to(PKG)} imports {name}")
    assert offenders == []


def test_db_does_not_import_rest() -> None:
    offenders = [
        f"{p.relative_to(PKG)} imports {n}"
        for p in (PKG / "db").rglob("*.py") for n in imports(p)
        if n.startswith(("iceprod.rest", "iceprod.server"))
    ]
    assert offenders == []
