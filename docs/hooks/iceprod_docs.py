"""MkDocs hooks for the iceprod site.

``on_files`` adds the generated reference pages (dataset config from its JSON Schema, CLI from
the argparse parsers, REST from the OpenAPI document built in-process from the route table),
so they are rebuilt from the code on every build and never stored. ``on_page_markdown``
fails the build when a hand-written page shows an invalid config or command
(``docgen_checks``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from docgen_checks import ArgParse, Validator, problems
from docgen_cli import capture_parser, cli_reference
from docgen_rest import rest_reference
from docgen_schema import config_reference
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

log = logging.getLogger("mkdocs.hooks.iceprod")

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ("reference/config.md", "reference/cli.md", "reference/rest.md")


def openapi_document() -> tuple[dict[str, Any], dict[str, str]]:
    """The document ``GET /openapi.json`` serves, and the handler module of each path."""
    from iceprod.rest.app import all_routes
    from iceprod.rest.openapi import build, template

    routes = all_routes()
    section = {template(pattern): handler.__module__.rsplit(".", 1)[-1]
               for pattern, handler in routes}
    return build(routes), section


def schema_file(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(
        (ROOT / "resources" / "schemas" / f"{name}.schema.json").read_text())
    return doc


def page_sources() -> dict[str, Callable[[], str]]:
    def config_page() -> str:
        example = ROOT / "examples" / "chain.json"
        return config_reference(schema_file("dataset_config"), "examples/chain.json",
                                example.read_text())

    def cli_page() -> str:
        from iceprod.client.cli import build_parser
        from iceprod.pilot.__main__ import parser as pilot_parser
        from iceprod.server.__main__ import parse as server_parse

        return cli_reference(build_parser(), capture_parser(server_parse), pilot_parser())

    def rest_page() -> str:
        from iceprod.core.roles import ROLE_SCOPES, SCOPES

        doc, section = openapi_document()
        return rest_reference(doc, section, SCOPES, ROLE_SCOPES)

    return dict(zip(GENERATED, (config_page, cli_page, rest_page), strict=True))


def as_value_error(check: Callable[[Any], None]) -> Validator:
    """A validator raising ``ValueError`` with the server's own message (which names the
    field) instead of its ``Invalid``."""
    from iceprod.common.errors import Invalid

    def run(value: Any) -> None:
        try:
            check(value)
        except Invalid as e:
            raise ValueError(e.message) from None

    return run


def check_grids(doc: Any) -> None:
    """The schema, and unique names as the grid manager requires."""
    from iceprod.common.errors import Invalid
    from iceprod.common.schema import validate

    validate(doc, schema_file("grid_config"))
    names = [g["name"] for g in doc["grids"]]
    if len(names) != len(set(names)):
        raise Invalid("grids: grid names must be unique")


@cache
def validators() -> Mapping[str, Validator]:
    from iceprod.common.schema import validate_dataset_config

    return {"dataset_config": as_value_error(validate_dataset_config),
            "grid_config": as_value_error(check_grids)}


@cache
def parsers() -> Mapping[str, ArgParse]:
    from iceprod.client.cli import build_parser
    from iceprod.pilot.__main__ import parser as pilot_parser
    from iceprod.server.__main__ import parse as server_parse

    return {"iceprod": build_parser().parse_args, "iceprod-server": server_parse,
            "iceprod-pilot": pilot_parser().parse_args}


def on_files(files: Files, config: MkDocsConfig) -> Files:
    for uri, render in page_sources().items():
        files.append(File.generated(config, uri, content=render()))
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig,
                     files: Files) -> str:
    if page.file.src_uri in GENERATED:
        return markdown
    found = problems(markdown, validators(), parsers())
    if found:
        raise PluginError(f"{page.file.src_uri}: " + "; ".join(found))
    return markdown
