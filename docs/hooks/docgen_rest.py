"""Renders the server's OpenAPI document as the REST reference: every route with its verbs,
scopes, the roles holding them, parameters, body fields and responses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from docgen_schema import Resolver, code, field_table, fields, md_text, type_of

VERBS = ("get", "post", "put", "patch", "delete")
Doc = Mapping[str, Any]


def roles_allowed(scopes: list[str], role_scopes: Mapping[str, frozenset[str]]) -> list[str]:
    """Built-in roles holding any one of ``scopes`` (a route needs any one of them)."""
    return [role for role, held in role_scopes.items()
            if "*" in held or any(s in held for s in scopes)]


def _auth(op: Doc, role_scopes: Mapping[str, frozenset[str]]) -> list[str]:
    if op.get("security") == []:
        return ["- **auth:** public (no token needed)"]
    scopes = list(op.get("x-scopes", ()))
    roles = roles_allowed(scopes, role_scopes)
    lines = [(f"- **scopes:** {' or '.join(code(s) for s in scopes)} "
             f"(built-in roles: {', '.join(roles) or 'none'})")]
    if rule := op.get("x-dataset-rule"):
        lines.append(f"- **dataset rule:** the caller must be allowed to {rule} the dataset "
                     "(admin and system bypass the rules)")
    return lines


def _parameters(op: Doc, path_item: Doc, resolver: Resolver) -> list[str]:
    params = [*path_item.get("parameters", ()), *op.get("parameters", ())]
    if not params:
        return []
    out = ["", "| parameter | in | type | required | description |", "|---|---|---|---|---|"]
    for p in params:
        p = resolver.resolve(p)
        schema = p.get("schema", {})
        out.append(f"| {code(p['name'])} | {p.get('in', '')} | "
                   f"{md_text(type_of(schema, resolver))} | "
                   f"{'yes' if p.get('required') else 'no'} | "
                   f"{md_text(p.get('description') or schema.get('description', ''))} |")
    return out


def _body(op: Doc, doc: Doc) -> list[str]:
    body = op.get("requestBody")
    if not body:
        return []
    content = body.get("content", {})
    out = [""]
    for media, spec in content.items():
        schema = spec.get("schema", {})
        resolver = Resolver(schema, doc)
        resolved = resolver.resolve(schema)
        if schema.get("$ref") == "#/components/schemas/dataset_config" or \
                str(resolved.get("$id", "")).endswith("dataset_config.schema.json"):
            out.append(f"**Body** ({media}): a dataset config, see the "
                       "[dataset config reference](config.md).")
            continue
        rows = list(fields(resolved, resolver, max_depth=3))
        if not rows:
            out.append(f"**Body** ({media}): {md_text(type_of(resolved, resolver))}.")
            continue
        out += [f"**Body** ({media}):", "", field_table(rows, resolver)]
    return out


MODEL = "#/components/schemas/responses."


def model_link(name: str) -> str:
    """A link to a response model's section on this page."""
    return f"[{name}](#response-{name.lower()})"


def _success(content: Doc) -> str:
    """What a success answer carries: its response models (links) and other media types."""
    parts = []
    for media, spec in content.items():
        schema = spec.get("schema", {})
        refs = [schema] if "$ref" in schema else schema.get("anyOf", [])
        names = [str(r.get("$ref", "")).removeprefix(MODEL) for r in refs
                 if str(r.get("$ref", "")).startswith(MODEL)]
        if media == "application/json" and names:
            parts.append(" or ".join(model_link(n) for n in names))
        else:
            parts.append(code(media))
    return ": " + ", or ".join(parts) if parts else " (no body)"


def _responses(op: Doc, doc: Doc) -> list[str]:
    answers = []
    for status, resp in op.get("responses", {}).items():
        resp = Resolver(doc).resolve(resp)
        line = f"`{status}` {md_text(resp.get('description', ''))}"
        if status.startswith("2"):
            line += _success(resp.get("content", {}))
        answers.append(line)
    return ["", "**Responses:** " + "; ".join(answers)] if answers else []


def response_models(doc: Doc) -> list[str]:
    """Every response model (``resources/schemas/responses.schema.json``) with its fields."""
    schemas = doc.get("components", {}).get("schemas", {})
    out = [
        "## Response models",
        "",
        ("What the routes answer on success, from `resources/schemas/responses.schema.json`. "
         "An object model lists every field a client may see: the server builds each answer "
         "by projecting the stored document onto its model, so a field not listed here is "
         "never sent (`keys=` may trim an answer further; only the listed required fields "
         "are always present). Errors answer the `Error` model."),
        "",
    ]
    resolver = Resolver(doc)
    for key in sorted(k for k in schemas if k.startswith("responses.")):
        name = key.removeprefix("responses.")
        schema = resolver.resolve(schemas[key])
        out += [f"### Response: {name}", ""]
        if text := str(schema.get("description", "")):
            text = text[:1].upper() + text[1:]
            out += [md_text(text if text.endswith(".") else text + "."), ""]
        if schemas[key].get("$ref") == "#/components/schemas/dataset_config":
            out += ["A dataset config: see the [dataset config reference](config.md).", ""]
            continue
        out += [f"Type: {_model_type(schemas[key], resolver)}.", ""]
        rows = list(fields(schema, resolver, max_depth=2))
        if rows:
            out += [field_table(rows, resolver), ""]
    return out


def _model_type(schema: Doc, resolver: Resolver) -> str:
    """The model's type, naming the models it holds (``object of Task``)."""
    ref = str(schema.get("$ref", ""))
    if ref.startswith(MODEL):
        return model_link(ref.removeprefix(MODEL))
    schema = resolver.resolve(schema)
    kind = schema.get("type")
    for key, word in (("additionalProperties", "object of"), ("items", "array of")):
        sub = schema.get(key)
        if isinstance(sub, Mapping) and str(sub.get("$ref", "")).startswith(MODEL):
            return f"{word} {_model_type(sub, resolver)}"
    return md_text(type_of(schema, resolver)) if kind or "anyOf" in schema else "any JSON"


def operation(verb: str, path: str, op: Doc, path_item: Doc, doc: Doc,
              role_scopes: Mapping[str, frozenset[str]]) -> list[str]:
    out = [f"### `{verb.upper()} {path}`", ""]
    if op.get("summary"):
        out += [md_text(op["summary"]), ""]
    if op.get("description"):
        out += [md_text(op["description"]), ""]
    out += _auth(op, role_scopes)
    out += _parameters(op, path_item, Resolver(doc))
    out += _body(op, doc)
    out += _responses(op, doc)
    return [*out, ""]


def sections(doc: Doc, section_of: Mapping[str, str]) -> dict[str, list[str]]:
    """Paths grouped by section (``tags`` when the document has them, else the handler
    module serving the path), in document order."""
    out: dict[str, list[str]] = {}
    for path, item in doc.get("paths", {}).items():
        tags = [t for v in VERBS if v in item for t in item[v].get("tags", ())]
        name = tags[0] if tags else section_of.get(path, "other")
        out.setdefault(name, []).append(path)
    return out


def conventions(scopes: Mapping[str, str],
                role_scopes: Mapping[str, frozenset[str]]) -> list[str]:
    out = [
        "## Conventions",
        "",
        ("- Send `Authorization: Bearer <token>` on every route that is not public. A missing "
        "or bad token answers 401; a token without the route's scope, or a dataset whose "
        "rules do not allow the caller, 403."),
        ("- Errors are JSON `{\"code\": n, \"error\": \"...\"}`; a 400 names the field "
        "(`jobs_submitted: 0 is less than the minimum of 1`). 404 missing, 409 conflict or "
        "bad state transition (`bad transition: complete -> queued`), 413 too large, "
        "429 too many failed logins (with `Retry-After`), 503 a dependency (LDAP) is down."),
        "- Creating answers `201 {\"result\": id}`.",
        ("- Every success answer is one of the [response models](#response-models) below "
         "(named on each route); fields a model does not declare are never sent."),
        ("- Lists answer `{id: document}` in id order. `keys=a|b` projects fields, "
        "`status=a|b` filters. Pages hold at most `limit` documents (10,000 at most); "
        "when there are more, the `X-Next-After` response header carries an opaque cursor: "
        "pass it as `after=` for the next page."),
        ("- Times are ISO-8601 UTC with `Z`; memory and disk in GB, time requirements in "
        "hours."),
        "",
        "## Scopes and roles",
        "",
        ("A route needs any one of its scopes. Built-in roles grant these scopes "
        "(`*` is every scope); custom roles (`PUT /roles/{role_name}`) map a name to scopes."),
        "",
        "| scope | grants | built-in roles |",
        "|---|---|---|",
    ]
    for scope, meaning in scopes.items():
        out.append(f"| {code(scope)} | {md_text(meaning)} | "
                   f"{', '.join(roles_allowed([scope], role_scopes))} |")
    return [*out, ""]


def rest_reference(doc: Doc, section_of: Mapping[str, str], scopes: Mapping[str, str],
                   role_scopes: Mapping[str, frozenset[str]]) -> str:
    info = doc.get("info", {})
    out = [
        "# REST reference",
        "",
        ("_Generated at build time from the server's OpenAPI document (the one "
        "`GET /openapi.json` serves), built in-process from the route table; do not edit "
        "by hand._"),
        "",
        (f"API version {code(str(info.get('version', '')))}, OpenAPI "
        f"{code(str(doc.get('openapi', '')))}. {md_text(info.get('description', ''))}"),
        "",
        *conventions(scopes, role_scopes),
    ]
    for name, paths in sections(doc, section_of).items():
        out += [f"## {name.replace('_', ' ').capitalize()}", ""]
        for path in paths:
            item = doc["paths"][path]
            for verb in VERBS:
                if verb in item:
                    out += operation(verb, path, item[verb], item, doc, role_scopes)
    out += response_models(doc)
    return "\n".join(out)
