"""The `iceprod` command is a package of one module per command group, wired in one place
(`cli/__init__.py`): a command module imports only the shared `context` and `parsing`
modules of the package, so no import circle can form, and nothing server-side."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

CLI = Path(__file__).resolve().parents[2] / "iceprod" / "client" / "cli"
SHARED = {"iceprod.client.cli.context", "iceprod.client.cli.parsing"}


def cli_imports(path: Path) -> set[str]:
    """The modules of the cli package (or the package itself) that `path` imports."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
        out.update(n for n in names if n.startswith("iceprod.client.cli"))
    return out


def test_command_modules_import_only_the_shared_ones() -> None:
    modules = sorted(p for p in CLI.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert {p.stem for p in modules} >= {"admin", "auth", "context", "datasets", "grids",
                                          "logs", "parsing", "tasks"}
    offenders = {p.name: sorted(cli_imports(p) - SHARED) for p in modules}
    assert {name: bad for name, bad in offenders.items() if bad} == {}
    # the two shared modules do not import each other both ways
    assert "iceprod.client.cli.parsing" not in cli_imports(CLI / "context.py")


def test_the_package_runs_as_a_module() -> None:
    result = subprocess.run([sys.executable, "-m", "iceprod.client.cli", "--version"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0 and result.stdout.startswith("iceprod "), result.stderr
