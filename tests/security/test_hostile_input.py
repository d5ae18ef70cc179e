"""A hostile-input sweep over every route of the route table.

For every route of ``iceprod.rest.app.all_routes()`` (with real ids seeded: a dataset with a
config, a job, a claimed task, a pilot, a grid, a log, a stats record, a stored file, a user,
a group and a role) and every verb, as admin and as anonymous, it sends each payload family:
deep nesting, NaN/Infinity, lone surrogates in values and keys, out-of-range integers in
every numeric field of the handler's own body schema, wrong types, NUL bytes, over-long
file-store names, and hostile query parameters. Bodies start from the auth matrix's valid
body for the route, with one field made hostile, so each hostile value meets the handler's
real checks rather than only "required field missing".

It asserts that no response is a 5xx, every 4xx body is exactly ``{"code", "error"}``, and
nothing was created: every table of the SQLite store has the same rows, the dataset counter
is unchanged, and the file store holds the same files.

NUL in free text (a description, a log, a failure reason) is legal JSON text and accepted:
a task's stderr may hold one. NUL is refused in object keys, in query parameters and in
constrained strings (ids, names, enums), which is what this sweep sends.
"""

from __future__ import annotations

import copy
import json
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from iceprod.rest.app import all_routes
from iceprod.rest.openapi import handler_methods, template
from tests.conftest import BY_HAND, Server, start_server
from tests.helpers import needs
from tests.ldap_server import LdapServer, missing_tools, person, start_slapd
from tests.rest.test_accounts import ldap_env
from tests.rest.test_auth_matrix import MATRIX, build_dialects, build_world, fill

NAN, INF, NEG_INF = "__NaN__", "__Infinity__", "__-Infinity__"
RAW_CONSTANTS = {f'"{NAN}"': "NaN", f'"{INF}"': "Infinity", f'"{NEG_INF}"': "-Infinity"}
BIG_INTS = [2**63, 10**30, -(2**63) - 1]
# in range for the parser: the schemas' maximums must refuse these
EDGE_NUMBERS = [2**63 - 1, 1e308]
SURROGATE = "\ud800"
NUL = "a\u0000b"
DEEP_RAW = b"[" * 100_000
DEEP_VALID = ('{"a": ' * 100 + "1" + "}" * 100).encode()
QUERY_NAMES = ["limit", "num", "job_index", "after", "keys", "status", "username", "name",
               "group", "host", "order", "last", "grid_id", "job_id", "pilot_id"]
QUERY_VALUES = [str(2**63), str(10**30), "1x", "a%00b", "%ED%A0%80"]
# refused by every route before its handler runs, so safe even on DELETE
GLOBAL_QUERY = ["%00", "%ED%A0%80"]
MAX_SECONDS = 60
WORKERS = 3


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LdapServer]:
    needs(missing_tools())
    srv = start_slapd(tmp_path_factory.mktemp("slapd"), [person("alice", "secret")])
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, slapd: LdapServer) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("hostile"), env={**ldap_env(slapd.uri), **BY_HAND},
                       args=["--only", "rest"])
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def clients(server: Server) -> Iterator[dict[str, httpx.Client]]:
    tokens = {
        "owner": server.token("alice", ["user"], ["physics"]),
        "other": server.token("bob", ["user"], ["astro"]),
        "pilot": server.token("pilot-agent", ["pilot"]),
        "system": server.token("iceprod-system", ["system"]),
        "admin": server.token("root", ["admin"]),
    }
    cs = {"anon": server.client()}
    cs.update({role: server.client(tok) for role, tok in tokens.items()})
    yield cs


@pytest.fixture(scope="module")
def ids(server: Server, clients: dict[str, httpx.Client]) -> dict[str, str]:
    admin = clients["admin"]
    setup = {"alice": clients["owner"], "system": clients["system"], "admin": admin}
    world, own = build_world(server, clients["anon"], setup,
                             {"registrar": server.token("pilot-agent", ["pilot"])})
    # the pilot caller acts with the token bound to the world's pilot, which holds its task
    clients["pilot"] = server.client(own["pilot"])
    r = admin.put("/roles/hostile-role", json={"scopes": ["read:grids"]})
    assert r.status_code == 200, r.text
    r = admin.post("/groups", json={"name": "hostile-group"})
    assert r.status_code == 201, r.text
    group_id = r.json()["result"]
    r = admin.post("/users", json={"username": "hostile-user"})
    assert r.status_code == 201, r.text
    # a catalog entry, a DRMAAtic task, a batch and an API key (the dialects' routes)
    dialects, _ = build_dialects(server, clients["owner"], admin, "{uuid}{batch_id}{key_name}",
                                 None, {})
    return {**world, **dialects, "role_name": "hostile-role", "group_id": group_id,
            "group_name": "hostile-group", "user_id": r.json()["result"],
            "new_name": "hostile-new", "username": "alice", "status": "suspended",
            "name": "a", "node": "hostile-node", "group": "hostile-group", "year": "2026",
            "month": "11"}


# -- what the store holds ------------------------------------------------------------------


def snapshot(server: Server) -> dict[str, Any]:
    """Row counts of every table, the settings rows (the dataset counter) and stored files."""
    path = server.data_dir / "iceprod.sqlite3"
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")]
        counts = {t: conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables}
        settings = sorted(map(str, conn.execute('SELECT * FROM "settings"').fetchall()))
    finally:
        conn.close()
    store = server.data_dir / "store"
    files = sorted(str(p.relative_to(store)) for p in store.rglob("*") if p.is_file()) \
        if store.exists() else []
    return {"counts": counts, "settings": settings, "files": files}


# -- payloads --------------------------------------------------------------------------------


def base_bodies() -> dict[tuple[str, str], Any]:
    """The auth matrix's valid body for each (verb, route template)."""
    out: dict[tuple[str, str], Any] = {}
    templates = [template(p) for p, _ in all_routes()]
    for method, path, body, _ in MATRIX:
        for t in templates:
            parts, real = t.split("/"), path.split("/")
            if len(parts) == len(real) and all(
                    a == b or a.startswith("{") for a, b in zip(parts, real, strict=True)):
                out.setdefault((method.lower(), t), body)
    return out


def schema_fields(schema: Any, root: Any, path: tuple[Any, ...] = (),
                  depth: int = 0) -> Iterator[tuple[tuple[Any, ...], dict[str, Any]]]:
    """(path, subschema) of every field a body schema declares: properties, the first item
    of arrays, local ``$ref``s followed; union types yield each branch."""
    if not isinstance(schema, dict) or depth > 8:
        return
    if "$ref" in schema and schema["$ref"].startswith("#/"):
        target: Any = root
        for part in schema["$ref"][2:].split("/"):
            target = target[part]
        yield from schema_fields(target, root, path, depth + 1)
        return
    for key in ("anyOf", "oneOf"):
        for branch in schema.get(key, []):
            yield from schema_fields(branch, root, path, depth + 1)
    if path:
        yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from schema_fields(sub, root, (*path, name), depth + 1)
    if isinstance(schema.get("items"), dict):
        yield from schema_fields(schema["items"], root, (*path, 0), depth + 1)


def with_value(body: Any, path: tuple[Any, ...], value: Any) -> Any:
    """A copy of ``body`` with ``value`` at ``path`` (creating objects along the way), or
    None when the path runs through something that is not there (an empty list)."""
    out = copy.deepcopy(body) if isinstance(body, dict) else {}
    node = out
    for part in path[:-1]:
        if isinstance(part, int):
            if not isinstance(node, list) or len(node) <= part:
                return None
            node = node[part]
            continue
        if not isinstance(node, dict):
            return None
        nxt = node.get(part)
        if nxt is None:
            nxt = [] if isinstance(path[path.index(part) + 1], int) else {}
            node[part] = nxt
        node = nxt
    last = path[-1]
    if isinstance(last, int):
        if not isinstance(node, list):
            return None
        if node:
            node[0] = value
        else:
            node.append(value)
    elif isinstance(node, dict):
        node[last] = value
    else:
        return None
    return out


def types_of(schema: dict[str, Any]) -> set[str]:
    t = schema.get("type")
    return set(t) if isinstance(t, list) else {t} if t else set()


WRONG = {"string": 12345, "integer": "12", "number": "1.5", "boolean": "yes",
         "array": {"a": 1}, "object": [1]}
JSON_TYPE = {"string": str, "integer": int, "number": (int, float), "boolean": bool,
             "array": list, "object": dict, "null": type(None)}


def field_values(schemas: list[dict[str, Any]]) -> list[Any]:
    """The hostile values for one field, given every schema branch it may match."""
    types = set().union(*(types_of(sub) for sub in schemas))
    values: list[Any] = [NAN, INF, f"x{SURROGATE}y"]
    if types & {"integer", "number"}:
        values += [*BIG_INTS, *EDGE_NUMBERS]
    strings = [sub for sub in schemas if "string" in types_of(sub)]
    if strings and all("pattern" in sub or "enum" in sub for sub in strings):
        values.append(NUL)
    if types:  # a value of a type no branch accepts
        values += [w for t, w in WRONG.items() if t in types and not any(
            isinstance(w, JSON_TYPE[u]) and not (u != "boolean" and isinstance(w, bool))
            for u in types)]
    return values


def encode(body: Any) -> bytes:
    text = json.dumps(body)  # escapes surrogates and NUL, writes big integers in full
    for quoted, raw in RAW_CONSTANTS.items():
        text = text.replace(quoted, raw)
    return text.encode()


def body_payloads(schema: Any, base: Any) -> Iterator[tuple[str, bytes]]:
    yield "deep raw", DEEP_RAW
    yield "deep valid", DEEP_VALID
    for whole in ([], "x", 1, None, NAN, NEG_INF, SURROGATE):
        yield f"whole {whole!r}", encode(whole)
    start = base if isinstance(base, dict) else {}
    for key in (SURROGATE, "a\u0000b", f"k{SURROGATE}"):
        yield f"key {key!r}", encode({**start, key: 1})
    yield "nested key", encode({**start, "x": {SURROGATE: 1}})
    if not isinstance(schema, dict):
        return
    branches: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for path, sub in schema_fields(schema, schema):
        branches.setdefault(path, []).append(sub)
    for path, subs in branches.items():
        for value in field_values(subs):
            body = with_value(start, path, value)
            if body is not None:
                yield f"{'.'.join(map(str, path))}={value!r}"[:80], encode(body)


# -- the sweep -------------------------------------------------------------------------------


def concrete(path_template: str, ids: dict[str, str]) -> str:
    return path_template.format(**ids)


def check(r: httpx.Response, what: str, problems: list[str]) -> None:
    if r.status_code >= 500:
        problems.append(f"{what}: {r.status_code} {r.text[:200]}")
    elif r.status_code >= 400:
        try:
            err = r.json()
        except ValueError:
            problems.append(f"{what}: {r.status_code} not JSON: {r.text[:100]}")
            return
        if not (isinstance(err, dict) and set(err) == {"code", "error"}
                and err["code"] == r.status_code and isinstance(err["error"], str)
                and err["error"]):
            problems.append(f"{what}: bad error body {r.text[:200]}")


def body_spec(fn: Any) -> Any:
    spec = getattr(fn, "auth_spec", None)
    return getattr(spec, "body", None)


Job = tuple[str, str, str, str, bytes | None]
"""(role, verb, url, what, body) of one hostile request."""


def jobs(ids: dict[str, str]) -> list[Job]:
    out: list[Job] = []
    bases = base_bodies()
    for pattern, handler in all_routes():
        route = template(pattern)
        path = concrete(route, ids)
        for verb, fn in handler_methods(handler).items():
            schema = body_spec(fn)
            base = fill(bases.get((verb, route)), ids)
            public = getattr(fn.auth_spec, "public", False)
            for role in ("admin", "anon"):
                label = f"{role} {verb.upper()} {route}"
                if schema is not None:
                    payloads = list(body_payloads(schema, base))
                    if role == "anon" and not public:
                        # refused before the body is read; a sample proves it stays so
                        payloads = payloads[:3]
                    out += [(role, verb, path, f"{label} {what}", payload)
                            for what, payload in payloads]
                if verb == "get" and (role == "admin" or public):
                    out += [(role, verb, f"{path}?{name}={value}", f"{label} ?{name}={value}",
                             None) for name in QUERY_NAMES for value in QUERY_VALUES]
                elif verb != "get":
                    body = None if base is None else encode(base)
                    out += [(role, verb, f"{path}?keys={value}", f"{label} ?keys={value}", body)
                            for value in GLOBAL_QUERY]
    return out


def run(server: Server, tokens: dict[str, str | None], batch: list[Job]) -> tuple[list[str], int]:
    """Send ``batch`` over this thread's own connections; the problems and how many passed."""
    problems: list[str] = []
    accepted = 0
    clients = {role: server.client(token) for role, token in tokens.items()}
    for role, verb, url, what, body in batch:
        r = clients[role].request(verb.upper(), url, content=body,
                                  headers={"Content-Type": "application/json"})
        if r.status_code < 400 and verb != "get":
            # every body payload and every ?keys= value sent to a writing verb is refused
            problems.append(f"{what}: accepted with {r.status_code}")
        accepted += r.status_code < 400
        check(r, what, problems)
    return problems, accepted


def sweep(server: Server, ids: dict[str, str]) -> tuple[list[str], int, int]:
    """Every hostile request, spread over a few threads (the server is one process; this
    only hides the client's own overhead)."""
    tokens = {"admin": server.token("root", ["admin"]), "anon": None}
    todo = jobs(ids)
    with ThreadPoolExecutor(WORKERS) as pool:
        results = list(pool.map(lambda i: run(server, tokens, todo[i::WORKERS]),
                                range(WORKERS)))
    problems = [p for found, _ in results for p in found]
    return problems, len(todo), sum(accepted for _, accepted in results)


def test_hostile_input_never_answers_5xx_nor_creates_anything(
        server: Server, clients: dict[str, httpx.Client], ids: dict[str, str]) -> None:
    before = snapshot(server)
    assert before["counts"]["datasets"] >= 1 and before["files"], "the world was not seeded"
    t0 = time.monotonic()
    problems, sent, accepted = sweep(server, ids)
    elapsed = time.monotonic() - t0
    assert problems == [], f"{len(problems)} of {sent} hostile requests:\n" + "\n".join(
        problems[:50])
    assert sent > 2000, f"only {sent} requests: the sweep lost its routes"
    after = snapshot(server)
    assert after == before, "a hostile request created something"
    assert elapsed < MAX_SECONDS, f"the sweep took {elapsed:.0f}s"
    # the server is still healthy and the seeded dataset still readable
    r = clients["admin"].get(f"/datasets/{ids['dataset_id']}")
    assert r.status_code == 200, r.text
    print(f"{sent} hostile requests in {elapsed:.1f}s, {accepted} accepted (reads)")


def test_every_route_is_swept() -> None:
    """Each route of the table with a body schema gets field-level payloads."""
    bases = base_bodies()
    for pattern, handler in all_routes():
        for verb, fn in handler_methods(handler).items():
            if body_spec(fn) is not None:
                assert (verb, template(pattern)) in bases, f"no base body for {verb} {pattern}"


STORE_NAMES = [
    ("a" * 256, "a segment of 256 bytes"),
    ("é" * 128, "a segment of 256 bytes in 128 characters"),
    ("d/" + "b" * 300 + "/f", "a middle segment of 300 bytes"),
    ("/".join(["s" * 200] * 30), "a name of 6 KB"),
    ("a%00b", "a NUL"),
    ("%ED%A0%80", "a UTF-8 encoded surrogate"),
]


@pytest.mark.parametrize(("name", "why"), STORE_NAMES, ids=[w for _, w in STORE_NAMES])
def test_file_store_names_are_bounded(server: Server, clients: dict[str, httpx.Client],
                                      ids: dict[str, str], name: str, why: str) -> None:
    before = snapshot(server)
    for verb in ("PUT", "GET", "DELETE"):
        r = clients["admin"].request(verb, f"/datasets/{ids['dataset_id']}/store/{name}",
                                     content=b"data")
        assert r.status_code == 400, f"{verb} {why}: {r.status_code} {r.text}"
        err = r.json()
        assert set(err) == {"code", "error"} and err["code"] == 400
        assert err["error"].startswith("name:") or "unicode" in err["error"].lower(), err
    assert snapshot(server) == before


def test_the_sweep_notices_a_created_document(server: Server,
                                              clients: dict[str, httpx.Client]) -> None:
    """The "nothing created" check can fail: a real creation changes the snapshot."""
    before = snapshot(server)
    r = clients["admin"].post("/grids", json={"host": "proof.example.org"})
    assert r.status_code == 201, r.text
    assert snapshot(server) != before
