"""The dashboard's vendored files are the ones ui/package-lock.json pins (``make vendor``
copies them from the npm registry), listed with their versions and licences, and shipped as
package data."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENDOR = ROOT / "iceprod" / "ui" / "static" / "vendor"


def test_vendored_files_match_the_lock_and_are_listed() -> None:
    lock = json.loads((ROOT / "ui" / "package-lock.json").read_text())
    uplot = lock["packages"]["node_modules/uplot"]
    declared = json.loads((ROOT / "ui" / "package.json").read_text())["dependencies"]
    assert declared == {"uplot": uplot["version"]}  # pinned exactly
    assert uplot["license"] == "MIT"
    header = (VENDOR / "uPlot.esm.js").read_text()[:400]
    assert f"(v{uplot['version']})" in header
    assert "MIT" in (VENDOR / "uPlot.LICENSE").read_text()
    listed = (VENDOR / "VERSIONS.md").read_text()
    assert re.search(rf"\| \[uPlot\]\([^)]+\) \| {re.escape(uplot['version'])} \| MIT", listed)
    docs = (ROOT / "docs" / "dashboard.md").read_text()
    assert f"| {uplot['version']} | MIT |" in docs


def test_the_dashboard_files_are_package_data() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())[
        "tool"]["setuptools"]["package-data"]["iceprod"]
    pkg = ROOT / "iceprod"
    shipped = {p for pattern in patterns for p in pkg.glob(pattern) if p.is_file()}
    ui = {p for p in (pkg / "ui").rglob("*") if p.is_file()}
    assert ui and ui <= shipped, sorted(str(p) for p in ui - shipped)
