"""The documentation site: `mkdocs build --strict` succeeds (warnings are errors), the generated
references cover every config property, command, flag and route of the code they were built
from, and the hand-written pages' claims (compatibility table, environment variables,
examples) hold against the code."""

from __future__ import annotations

import argparse
import html
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from iceprod.client.cli import build_parser
from iceprod.rest.app import all_routes
from iceprod.rest.openapi import handler_methods, template

ROOT = Path(__file__).resolve().parents[1]
HOOKS = ROOT / "docs" / "hooks"
SEED_ROUTES = 76  # routes listed by the IceProd v2.7 REST API document (shared/seeds/004_*)
V27_ROUTES = 6  # IceProd v2.7 routes its route list (the seed) leaves out


def build(config: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(out)],
        capture_output=True, text=True, timeout=300, check=False, cwd=config.parent)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = build(ROOT / "mkdocs.yml", out)
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def page(site: Path, name: str) -> str:
    return (site / name).read_text()


def section(text: str, heading: str) -> str:
    """The HTML from the heading whose text starts with ``heading`` to the next heading."""
    m = re.search(r"<h([1-6])[^>]*>" + re.escape(heading) + r"(?:<a class=\"headerlink\"|<)",
                  text)
    assert m, f"no heading {heading}"
    end = re.compile(r"<h[1-6][ >]").search(text, m.end())
    return text[m.start():end.start() if end else len(text)]


# -- the build ----------------------------------------------------------------------------


def test_every_page_of_the_nav_is_built(site: Path) -> None:
    import yaml

    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())

    def pages(nav: Any) -> Iterator[str]:
        for entry in nav:
            for value in entry.values():
                yield from ([value] if isinstance(value, str) else pages(value))

    built = [site / p.replace(".md", ".html") for p in pages(config["nav"])]
    assert len(built) >= 14
    for path in built:
        assert path.is_file(), path
        assert "<h1" in path.read_text(), path


def test_site_loads_nothing_from_the_network(site: Path) -> None:
    for path in site.rglob("*"):
        if path.suffix not in (".html", ".css", ".js"):
            continue
        text = path.read_text(errors="replace")
        loads = re.findall(r"<(?:script|img|iframe)[^>]+src=\"(?:https?:)?//[^\"]+", text)
        loads += re.findall(r"<link[^>]+href=\"(?:https?:)?//[^\"]+", text)
        loads += re.findall(r"@import\s+url\((?:['\"])?(?:https?:)?//", text)
        assert not loads, f"{path.relative_to(site)} loads {loads[:3]}"


# -- the dataset config reference -----------------------------------------------------------


def resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its ``$ref`` followed (its own keys win over the target's)."""
    while "$ref" in schema:
        target = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def schema_properties(schema: dict[str, Any], root: dict[str, Any],
                      depth: int = 0) -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, schema) of every property reachable from ``schema``, following ``$ref``s."""
    schema = resolve(schema, root)
    if depth > 8:
        return
    for name, sub in schema.get("properties", {}).items():
        yield name, resolve(sub, root)
        yield from schema_properties(sub, root, depth + 1)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            yield from schema_properties(schema[key], root, depth + 1)


def test_config_reference_has_every_property(site: Path) -> None:
    schema = json.loads((ROOT / "resources/schemas/dataset_config.schema.json").read_text())
    text = page(site, "reference/config.html")
    props = list(schema_properties(schema, schema))
    assert len(props) >= 30
    for name, sub in props:
        assert re.search(rf"<code>(?:[\w.\[\]]*\.)?{re.escape(name)}</code>", text), name
        if "description" in sub:
            assert html.escape(sub["description"], quote=False) in text, name
    # bounds and defaults, as the schema states them
    assert "≤ <code>1000</code> items" in text  # tasks.maxItems
    assert "<td><code>10</code></td>" in text  # options.max_failures default
    assert "<code>permanent</code>" in text and "<code>site_temp</code>" in text


def test_config_reference_is_regenerated_from_the_schema(tmp_path: Path) -> None:
    """A copy of the repository's docs, with a changed schema, builds a page that says what the
    changed schema says: the page is generated at build time, not stored."""
    for part in ("docs", "resources", "examples"):
        shutil.copytree(ROOT / part, tmp_path / part, ignore=shutil.ignore_patterns(
            "__pycache__"))
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    path = tmp_path / "resources/schemas/dataset_config.schema.json"
    schema = json.loads(path.read_text())
    schema["properties"]["options"]["properties"]["max_failures"]["maximum"] = 4242
    schema["properties"]["options"]["properties"]["lucky_number"] = {
        "description": "A field only this test's schema has.", "type": "integer", "default": 7}
    path.write_text(json.dumps(schema))
    result = build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "site/reference/config.html").read_text()
    assert "<code>options.lucky_number</code>" in text
    assert "A field only this test's schema has." in text
    assert "≤ <code>4242</code>" in text


# -- the CLI reference ----------------------------------------------------------------------


def parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from parsers(sub)


def test_cli_reference_has_every_command_and_flag(site: Path) -> None:
    text = page(site, "reference/cli.html")
    commands = list(parsers(build_parser()))
    assert len(commands) >= 30
    for parser in commands:
        part = section(text, f"<code>{parser.prog}</code>")
        for action in parser._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    assert f"<code>{flag}</code>" in part, (parser.prog, flag)
            if not action.option_strings and not isinstance(action,
                                                            argparse._SubParsersAction):
                assert f"<code>{action.metavar or action.dest}</code>" in part


@pytest.mark.parametrize("module", ["iceprod.server", "iceprod.pilot"])
def test_cli_reference_has_the_server_and_pilot_flags(site: Path, module: str) -> None:
    shown = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True,
                           text=True, timeout=60, check=True).stdout
    flags = set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", shown)) - {"--help"}
    assert len(flags) >= 4
    part = section(page(site, "reference/cli.html"),
                   f"<code>iceprod-{module.split('.')[1]}</code>")
    for flag in flags:
        assert f"<code>{flag}</code>" in part, flag


# -- the REST reference ---------------------------------------------------------------------


def route_table() -> dict[tuple[str, str], Any]:
    return {(verb.upper(), template(pattern)): fn.auth_spec
            for pattern, handler in all_routes()
            for verb, fn in handler_methods(handler).items()}


def test_rest_reference_has_every_route_with_its_scopes_and_body(site: Path) -> None:
    text = page(site, "reference/rest.html")
    routes = route_table()
    assert len(routes) >= 80
    for (verb, path), spec in routes.items():
        part = section(text, f"<code>{verb} {html.escape(path)}</code>")
        if spec.public:
            assert "public" in part, (verb, path)
        for scope in spec.scopes:
            assert f"<code>{scope}</code>" in part, (verb, path, scope)
        if spec.dataset:
            assert f"allowed to {spec.dataset} the dataset" in part, (verb, path)
        body = spec.body or {}
        if str(body.get("$id", "")).endswith("dataset_config.schema.json"):
            assert 'href="config.html"' in part, (verb, path)
            continue
        for name in body.get("properties", {}):
            assert re.search(rf"<code>{re.escape(name)}</code>", part), (verb, path, name)


# -- hand-written claims --------------------------------------------------------------------


def compatibility_rows() -> list[tuple[str, str]]:
    text = (ROOT / "docs/compatibility.md").read_text()
    return re.findall(r"^\| (`[A-Z]+ [^`]+`|none) \| `([A-Z]+ [^`]+)` \|", text, re.MULTILINE)


def test_every_route_the_compatibility_table_claims_exists() -> None:
    routes = route_table()
    rows = compatibility_rows()
    iceprod = [theirs.strip("`") for theirs, _ in rows if theirs != "none"]
    assert len(iceprod) == len(set(iceprod)) == SEED_ROUTES + V27_ROUTES
    for theirs, ours in rows:
        verb, path = ours.split(" ", 1)
        assert (verb, path) in routes, ours
        if theirs != "none":
            assert re.sub(r"<(\w+)>", r"{\1}", theirs.strip("`")) == ours, (theirs, ours)
    listed = {ours for _, ours in rows}
    missing = [f"{v} {p}" for v, p in routes if f"{v} {p}" not in listed]
    assert not missing, f"routes the compatibility page does not mention: {missing}"


def test_every_environment_variable_the_code_reads_is_documented() -> None:
    used = set()
    for path in (ROOT / "iceprod").rglob("*.py"):
        used |= set(re.findall(r"\bICEPROD_[A-Z0-9_]*[A-Z0-9]\b", path.read_text()))
    documented = (ROOT / "docs/operator/configuration.md").read_text()
    assert len(used) >= 40
    missing = sorted(v for v in used if f"`{v}`" not in documented)
    assert not missing, missing


def load_checks() -> Any:
    sys.path.insert(0, str(HOOKS))
    try:
        import iceprod_docs
    finally:
        sys.path.remove(str(HOOKS))
    return iceprod_docs


def test_examples_are_checked_and_a_bad_one_fails() -> None:
    hooks = load_checks()
    from docgen_checks import problems

    def found(markdown: str) -> list[str]:
        return problems(markdown, hooks.validators(), hooks.parsers())

    good = ('<!-- check: grid_config -->\n```json\n{"grids": [{"name": "a", "backend": "slurm"}]}'
            '\n```\n```sh\n.venv/bin/iceprod status 1 --watch  # follow\n'
            'T=$(iceprod-server token --user u --role user)\n```\n')
    assert found(good) == []
    bad_grid = good.replace('"slurm"', '"pbs"')
    assert any("backend" in p for p in found(bad_grid))
    bad_flag = good.replace("--watch", "--wach")
    assert any("--wach" in p for p in found(bad_flag))
    bad_role = good.replace("--role user", "--role wizard")
    assert any("wizard" in p for p in found(bad_role))
    bad_config = ('<!-- check: dataset_config -->\n```json\n{"tasks": [{"name": "a", '
                  '"depends": ["b"], "steps": [{"command": "x"}]}]}\n```\n')
    assert any("depends" in p for p in found(bad_config))
    # the pages use the mechanism: every grid example of the operator guide is checked
    grids = (ROOT / "docs/operator/grids.md").read_text()
    assert grids.count("```json") == grids.count("<!-- check: grid_config -->") >= 4


def test_readme_points_into_docs_and_nowhere_outside_the_repository() -> None:
    text = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    assert any(t.startswith("docs/") for t in targets)
    for target in targets:
        assert not re.match(r"[a-z]+:", target) and ".." not in target, target
        assert (ROOT / target.split("#")[0]).exists(), target
