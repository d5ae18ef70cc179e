"""The Makefile as a new user meets it: `make runtime` (what `make serve` runs first) installs
quietly, and a venv made by another Python is rebuilt instead of half-used (a 3.11 venv made
for serving once broke `make test` with `No module named 'mongoeco'`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def other_python() -> str | None:
    """A Python 3.11+ other than the one running the tests."""
    mine = f"{sys.version_info.major}.{sys.version_info.minor}"
    for name in ("python3.11", "python3.12", "/usr/bin/python3"):
        path = shutil.which(name)
        if not path:
            continue
        probe = "import sys, venv; print('%d.%d' % sys.version_info[:2])"
        out = subprocess.run([path, "-c", probe], capture_output=True, text=True, check=False)
        version = out.stdout.strip()
        if out.returncode == 0 and version != mine and version >= "3.11":
            return path
    return None


def make(venv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "-C", str(ROOT), f"VENV={venv}", *args],
                          capture_output=True, text=True, check=False, timeout=600,
                          env={k: v for k, v in os.environ.items() if k != "MAKEFLAGS"})


@pytest.mark.timeout(600)  # two venvs built by pip: slow on a loaded 2-core machine
def test_runtime_venv_from_another_python_is_rebuilt_quietly(tmp_path: Path) -> None:
    other = other_python()
    if other is None:
        pytest.skip("no second Python 3.11+ on this machine")
    venv = tmp_path / "venv"
    first = make(venv, "runtime", f"PYTHON={other}")
    assert first.returncode == 0, first.stderr
    assert (venv / ".runtime").exists() and not (venv / ".installed").exists()
    second = make(venv, "runtime", f"PYTHON={sys.executable}")
    assert second.returncode == 0, second.stderr
    assert f"{venv} was made by Python" in second.stdout
    version = subprocess.run([str(venv / "bin" / "python"), "-c",
                              "import sys; print(sys.version.split()[0])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert version == sys.version.split()[0]
    for out in (first, second):
        text = (out.stdout + out.stderr).lower()
        assert "setuptools" not in text and "license" not in text, text
    again = make(venv, "runtime", f"PYTHON={sys.executable}")
    assert again.returncode == 0 and "installing" not in again.stdout  # nothing to redo
