"""Accounts and access, as users see them over HTTP: LDAP login against a real OpenLDAP
``slapd``, users/groups/roles, per-dataset rules, sub-tokens and share tokens, token
revocation, pilot ownership, and the exchange of an external OpenID provider's token (a
locally generated RSA key pair stands in for the provider)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from iceprod.rest.auth.ldap_login import LdapSettings, group_filter, user_dn
from tests.conftest import SECRET, Server, free_port, start_server
from tests.helpers import (
    claim,
    create_dataset,
    create_job,
    create_task,
    minimal_config,
    needs,
    register_pilot,
)
from tests.ldap_server import (
    GROUPS,
    PEOPLE,
    LdapServer,
    dn_group,
    missing_tools,
    person,
    posix_group,
    start_slapd,
)
from tests.oidc_provider import AUDIENCE, ISSUER, Provider, new_key

BAD_LOGIN = "invalid username or password"
GROUP_MAP = {"physicists": "physics", "icecube": "icecube"}
MAX_FAILURES = 3

ENTRIES = [
    person("alice", "wonderland", "alice@example.org"),
    person("bob", "builder"),
    person("carol", "sesame"),
    person("dave", "diver"),
    person("erin", "eagle"),
    posix_group("physicists", 5000, ["alice", "dave"]),
    posix_group("astronomers", 5001, ["bob"]),
    dn_group("icecube", ["alice"]),
]


def ldap_env(uri: str) -> dict[str, str]:
    return {
        "ICEPROD_LDAP_URI": uri,
        "ICEPROD_LDAP_BIND_DN": f"uid={{username}},{PEOPLE}",
        "ICEPROD_LDAP_GROUP_BASE": GROUPS,
        "ICEPROD_LDAP_GROUP_MAP": json.dumps(GROUP_MAP),
        "ICEPROD_LDAP_TIMEOUT": "3",
        "ICEPROD_LOGIN_MAX_FAILURES": str(MAX_FAILURES),
        "ICEPROD_LOGIN_WINDOW_SECONDS": "60",
    }


def oidc_env(**kw: str) -> dict[str, str]:
    return {"ICEPROD_OIDC_ISSUER": ISSUER, "ICEPROD_OIDC_AUDIENCE": AUDIENCE, **kw}


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LdapServer]:
    needs(missing_tools())
    srv = start_slapd(tmp_path_factory.mktemp("slapd"), ENTRIES)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    p = Provider(tmp_path_factory.mktemp("provider"))
    yield p
    p.stop()


@pytest.fixture(scope="module")
def acct(tmp_path_factory: pytest.TempPathFactory, slapd: LdapServer,
         provider: Provider) -> Iterator[Server]:
    """A server logging in against slapd and trusting the provider's key file."""
    env = {**ldap_env(slapd.uri),
           **oidc_env(ICEPROD_OIDC_PUBLIC_KEY_FILE=str(provider.key_file))}
    srv = start_server(tmp_path_factory.mktemp("accounts"), env=env, args=["--only", "rest"])
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def admin_c(acct: Server) -> httpx.Client:
    return acct.client(acct.token("root", ["admin"]))


@pytest.fixture(scope="module")
def system_c(acct: Server) -> httpx.Client:
    return acct.client(acct.token("iceprod-system", ["system"]))


def login(srv: Server, username: str, password: str) -> httpx.Response:
    return httpx.post(srv.url + "/ldap", json={"username": username, "password": password},
                      timeout=30)


def login_ok(srv: Server, username: str, password: str) -> dict[str, Any]:
    r = login(srv, username, password)
    assert r.status_code == 200, r.text
    return r.json()


def user_id(admin: httpx.Client, username: str) -> str:
    r = admin.get("/users", params={"username": username})
    assert r.status_code == 200, r.text
    (uid,) = r.json()
    return uid


def claims_of(token: str) -> dict[str, Any]:
    return jwt.decode(token, SECRET, algorithms=["HS256"])


def add_user(admin: httpx.Client, username: str, **fields: Any) -> str:
    r = admin.post("/users", json={"username": username, **fields})
    assert r.status_code == 201, r.text
    return r.json()["result"]


def add_group(admin: httpx.Client, name: str) -> str:
    r = admin.post("/groups", json={"name": name})
    assert r.status_code == 201, r.text
    return r.json()["result"]


# -- LDAP login ---------------------------------------------------------------------------


def test_first_login_creates_the_user_with_mapped_groups(acct: Server,
                                                         admin_c: httpx.Client) -> None:
    body = login_ok(acct, "alice", "wonderland")
    assert body["username"] == "alice" and body["roles"] == ["user"]
    # users by default, plus the mapped LDAP groups; the unmapped ones are ignored
    assert sorted(body["groups"]) == ["icecube", "physics", "users"]
    assert claims_of(body["token"])["groups"] == body["groups"]
    assert body["expires"].endswith("Z")

    user = admin_c.get(f"/users/{user_id(admin_c, 'alice')}").json()
    assert user["email"] == "alice@example.org" and user["source"] == "ldap"
    groups = admin_c.get("/groups", params={"name": "physics"}).json()
    assert [g["name"] for g in groups.values()] == ["physics"]

    with acct.client(body["token"]) as alice:
        assert alice.get(f"/users/{user['user_id']}").status_code == 200
        create_dataset(alice, "physics")  # the token's groups are usable at once

    again = login_ok(acct, "Alice", "wonderland")  # the directory's spelling wins
    assert again["username"] == "alice"
    assert user_id(admin_c, "alice") == user["user_id"]


def test_bad_password_and_unknown_user_answer_the_same_401(acct: Server,
                                                          admin_c: httpx.Client) -> None:
    answers = [login(acct, "carol", "wrong"), login(acct, "nobody", "whatever"),
               login(acct, "carol", "")]
    for r in answers:
        assert r.status_code == 401, r.text
        assert r.json() == {"code": 401, "error": BAD_LOGIN}
    assert admin_c.get("/users", params={"username": "nobody"}).json() == {}
    assert login(acct, "carol", "sesame").status_code == 200


@pytest.mark.parametrize("username", [
    "*", "alice)(uid=*", "alice,ou=People", "uid=alice", "alice\\", "alice\x00",
])
def test_ldap_injection_never_logs_anyone_in(acct: Server, username: str) -> None:
    r = login(acct, username, "wonderland")
    assert r.status_code == 401, r.text
    assert r.json()["error"] == BAD_LOGIN


def test_usernames_are_escaped_into_the_dn_and_the_group_filter() -> None:
    settings = LdapSettings("ldap://x", f"uid={{username}},{PEOPLE}", GROUPS,
                            "(|(memberUid={username})(member={dn}))", "cn", 1)
    assert user_dn(settings, "a,ou=x+cn=y") == f"uid=a\\,ou\\=x\\+cn\\=y,{PEOPLE}"
    assert group_filter(settings, "*)(cn=*", "uid=a,dc=x") == (
        "(|(memberUid=\\2a\\29\\28cn=\\2a)(member=uid=a,dc=x))"
    )


def test_body_errors_never_echo_the_password(acct: Server) -> None:
    secret = "p" * 2000
    r = httpx.post(acct.url + "/ldap", json={"username": "bob", "password": secret})
    assert r.status_code == 400
    assert secret not in r.text and "password" in r.json()["error"]
    r = httpx.post(acct.url + "/ldap", json={"username": "bob"})
    assert r.status_code == 400


def test_ldap_groups_are_synced_at_each_login(acct: Server, slapd: LdapServer,
                                              admin_c: httpx.Client) -> None:
    first = login_ok(acct, "dave", "diver")
    assert sorted(first["groups"]) == ["physics", "users"]
    dave = user_id(admin_c, "dave")
    add_group(admin_c, "divers")
    assert admin_c.post(f"/users/{dave}/groups", json={"group": "divers"}).status_code == 200

    slapd.modify(f"dn: cn=physicists,{GROUPS}\nchangetype: modify\n"
                 "delete: memberUid\nmemberUid: dave\n\n"
                 f"dn: cn=icecube,{GROUPS}\nchangetype: modify\n"
                 f"add: member\nmember: uid=dave,{PEOPLE}\n")
    second = login_ok(acct, "dave", "diver")
    # the directory took physics away and gave icecube; the group given by hand stays
    assert sorted(second["groups"]) == ["divers", "icecube", "users"]
    # losing a group revokes the tokens that still carry it
    with acct.client(first["token"]) as old, acct.client(second["token"]) as new:
        assert old.get(f"/users/{dave}").status_code == 401
        assert new.get(f"/users/{dave}").status_code == 200


def test_repeated_failures_are_rate_limited(acct: Server) -> None:
    for _ in range(MAX_FAILURES):
        assert login(acct, "bob", "wrong").status_code == 401
    for name, password in (("bob", "builder"), ("BOB", "wrong")):
        r = login(acct, name, password)
        assert r.status_code == 429, r.text
        assert 0 < int(r.headers["Retry-After"]) <= 60
        assert r.json()["code"] == 429
    # other usernames are not affected
    assert login(acct, "erin", "eagle").status_code == 200


def test_ldap_down_answers_503_and_is_not_counted(tmp_path: Path) -> None:
    needs(missing_tools())
    ldap = start_slapd(tmp_path / "slapd", [person("gina", "granite")])
    srv = start_server(tmp_path / "data", env=ldap_env(ldap.uri), args=["--only", "rest"])
    try:
        assert login(srv, "gina", "granite").status_code == 200
        ldap.stop()
        for _ in range(MAX_FAILURES + 2):
            r = login(srv, "gina", "granite")
            assert r.status_code == 503, r.text
            assert "unavailable" in r.json()["error"]
    finally:
        srv.stop()
        ldap.stop()


def test_passwords_and_tokens_never_reach_the_log(acct: Server) -> None:
    token = login_ok(acct, "erin", "eagle")["token"]
    login(acct, "erin", "not-erins-password")
    log = acct.log_path.read_text() if acct.log_path else ""
    assert "LDAP login" in log
    for secret in ("eagle", "not-erins-password", "wonderland", token):
        assert secret not in log


@pytest.mark.parametrize("username,password", [
    ("frank", "bell\u0007"),      # an ASCII control character: SASLprep refuses it
    ("frank", "no\u00a0break"),   # a non-ASCII space is mapped, not refused: a bad password
    ("frank", "\ue000private"),   # a private-use character: SASLprep refuses it
    ("frank\u0007", "x"),         # in the username: the DN and filters never see it
])
def test_input_the_directory_refuses_is_a_failed_login(
        tmp_path: Path, username: str, password: str) -> None:
    """Not 503 (the directory is up): 401, counted by the limiter until 429."""
    needs(missing_tools())
    ldap = start_slapd(tmp_path / "slapd", [person("frank", "fishing")])
    srv = start_server(tmp_path / "data", env=ldap_env(ldap.uri), args=["--only", "rest"])
    try:
        for _ in range(MAX_FAILURES):
            r = login(srv, username, password)
            assert r.status_code == 401, r.text
            assert r.json() == {"code": 401, "error": BAD_LOGIN}
        assert login(srv, username, password).status_code == 429
        # the limit is per username: the right password waits for the window too
        limited = login(srv, "frank", "fishing").status_code
        assert limited == (429 if username == "frank" else 200)
    finally:
        srv.stop()
        ldap.stop()


def test_failed_usernames_are_not_logged_verbatim(acct: Server) -> None:
    typed = "Tr0ub4dor&3-typed-as-username"  # a password typed into the username field
    assert login(acct, typed, "whatever").status_code == 401
    assert login(acct, typed, "whatever").status_code == 401
    log = acct.log_path.read_text() if acct.log_path else ""
    refusals = [line for line in log.splitlines() if "LDAP login refused" in line]
    assert len(refusals) >= 2 and typed not in log
    # the same name gives the same mark, so repeated attempts can still be told apart
    marks = {line.split("username ", 1)[1].split(" from ", 1)[0] for line in refusals[-2:]}
    assert len(marks) == 1 and marks.pop().startswith(f"<{len(typed)} chars, ")


def test_login_and_exchange_answer_404_when_not_configured(server: Server) -> None:
    assert login(server, "alice", "wonderland").status_code == 404
    r = httpx.get(server.url + "/token/alice", headers={"Authorization": "Bearer x"})
    assert r.status_code == 404


# -- users, groups, roles -------------------------------------------------------------------


def test_users_create_read_patch_delete(admin_c: httpx.Client) -> None:
    uid = add_user(admin_c, "henry", email="Henry@Example.org",
                   orcid="https://orcid.org/0000-0001-0000-0001")
    user = admin_c.get(f"/users/{uid}").json()
    assert (user["username"], user["roles"], user["groups"]) == ("henry", ["user"], ["users"])
    assert (user["email"], user["orcid"]) == ("henry@example.org", "0000-0001-0000-0001")
    assert admin_c.post("/users", json={"username": "henry"}).status_code == 409
    r = admin_c.post("/users", json={"username": "ida", "email": "henry@example.org"})
    assert r.status_code == 409 and "email" in r.json()["error"]
    r = admin_c.post("/users", json={"username": "ida", "roles": ["wizard"]})
    assert r.status_code == 400 and "role" in r.json()["error"]
    r = admin_c.post("/users", json={"username": "ida", "groups": ["no-such-group"]})
    assert r.status_code == 400 and "group" in r.json()["error"]
    assert admin_c.post("/users", json={"username": "ida", "x": 1}).status_code == 400

    r = admin_c.patch(f"/users/{uid}", json={"email": None, "orcid": "0000-0001-0000-0002"})
    assert r.status_code == 200
    assert "email" not in r.json() and r.json()["orcid"] == "0000-0001-0000-0002"
    assert admin_c.delete(f"/users/{uid}").status_code == 200
    assert admin_c.get(f"/users/{uid}").status_code == 404


def test_a_user_reads_only_its_own_record(acct: Server, admin_c: httpx.Client) -> None:
    me = add_user(admin_c, "jack")
    other = add_user(admin_c, "kate")
    with acct.client(acct.token("jack", ["user"], ["users"])) as jack:
        assert jack.get(f"/users/{me}").json()["username"] == "jack"
        assert jack.get(f"/users/{me}/groups").json() == {"groups": ["users"]}
        assert jack.get(f"/users/{other}").status_code == 403
        assert jack.get(f"/users/{other}/groups").status_code == 403
        assert jack.get("/users").status_code == 403
        assert jack.put(f"/users/{me}/roles", json={"roles": ["admin"]}).status_code == 403


def test_groups_and_memberships(acct: Server, admin_c: httpx.Client) -> None:
    gid = add_group(admin_c, "sim")
    add_group(admin_c, "ana")
    assert admin_c.post("/groups", json={"name": "sim"}).status_code == 409
    assert admin_c.post("/groups", json={"name": "bad name"}).status_code == 400
    assert admin_c.get(f"/groups/{gid}").json()["name"] == "sim"
    uid = add_user(admin_c, "liam")
    r = admin_c.put(f"/users/{uid}/groups", json={"groups": ["sim", "ana"]})
    assert r.json() == {"groups": ["sim", "ana"]}
    assert admin_c.get(f"/users/{uid}/groups").json() == {"groups": ["sim", "ana"]}
    r = admin_c.post(f"/users/{uid}/groups", json={"group": "nope"})
    assert r.status_code == 400
    assert list(admin_c.get("/users", params={"group": "sim"}).json()) == [uid]

    token = acct.token("liam", ["user"], ["sim", "ana"])
    with acct.client(token) as liam:
        assert liam.get(f"/users/{uid}").status_code == 200
        assert admin_c.delete(f"/groups/{gid}").status_code == 200
        # the group is gone from its members, whose tokens still named it: revoked
        assert liam.get(f"/users/{uid}").status_code == 401
    assert admin_c.get(f"/users/{uid}/groups").json() == {"groups": ["ana"]}
    assert admin_c.get(f"/groups/{gid}").status_code == 404


def test_builtin_roles_are_fixed_and_custom_roles_map_to_scopes(
        acct: Server, admin_c: httpx.Client, slapd: LdapServer) -> None:
    roles = admin_c.get("/roles").json()
    assert {"admin", "user", "system", "pilot", "anonymous"} <= set(roles)
    assert roles["user"]["builtin"] and "read:datasets" in roles["user"]["scopes"]
    assert admin_c.put("/roles/admin", json={"scopes": []}).status_code == 409
    assert admin_c.delete("/roles/user").status_code == 409
    r = admin_c.put("/roles/auditor", json={"scopes": ["read:datasets", "bogus"]})
    assert r.status_code == 400
    r = admin_c.put("/roles/auditor", json={"scopes": ["read:datasets"], "description": "ro"})
    assert r.status_code == 200 and r.json()["builtin"] is False
    assert admin_c.get("/roles/auditor").json()["scopes"] == ["read:datasets"]

    token = acct.token("mia", ["auditor"], custom_roles=["auditor"])
    with acct.client(token) as mia:
        assert mia.get("/datasets").status_code == 200
        assert mia.post("/datasets", json={}).status_code == 403
        # a role's scopes are resolved when the token is used
        assert admin_c.put("/roles/auditor", json={"scopes": []}).status_code == 200
        assert mia.get("/datasets").status_code == 403
        admin_c.put("/roles/auditor", json={"scopes": ["read:datasets"]})
        assert mia.get("/datasets").status_code == 200

        # a custom role given to an LDAP user travels in its login token
        login_ok(acct, "carol", "sesame")
        carol = user_id(admin_c, "carol")
        r = admin_c.put(f"/users/{carol}/roles", json={"roles": ["user", "auditor"]})
        assert r.status_code == 200
        assert login_ok(acct, "carol", "sesame")["roles"] == ["user", "auditor"]

        assert admin_c.delete("/roles/auditor").status_code == 200
        assert mia.get("/datasets").status_code == 403
    assert admin_c.get("/roles/auditor").status_code == 404
    assert admin_c.get(f"/users/{carol}").json()["roles"] == ["user"]


# -- revocation ---------------------------------------------------------------------------


def test_admin_revokes_a_users_tokens(acct: Server, admin_c: httpx.Client) -> None:
    before = login_ok(acct, "erin", "eagle")["token"]
    erin = user_id(admin_c, "erin")
    with acct.client(before) as c:
        sub = c.post("/create_token", json={"type": "temp"}).json()["token"]
    r = admin_c.post(f"/users/{erin}/actions/revoke_tokens")
    assert r.status_code == 200 and r.json()["not_before"].endswith("Z")
    for token in (before, sub):
        r = httpx.get(f"{acct.url}/users/{erin}", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401 and r.json()["error"] == "token revoked"
    after = login_ok(acct, "erin", "eagle")["token"]  # logging in again works at once
    with acct.client(after) as c:
        assert c.get(f"/users/{erin}").status_code == 200


def test_losing_a_role_or_the_account_revokes(acct: Server, admin_c: httpx.Client) -> None:
    uid = add_user(admin_c, "nina", roles=["user", "system"])
    with acct.client(acct.token("nina", ["user", "system"])) as nina:
        assert nina.get("/users").status_code == 200
        admin_c.put(f"/users/{uid}/roles", json={"roles": ["user", "system", "pilot"]})
        assert nina.get("/users").status_code == 200  # gaining a role revokes nothing
        admin_c.put(f"/users/{uid}/roles", json={"roles": ["user"]})
        assert nina.get("/users").status_code == 401
    with acct.client(acct.token("nina", ["user"])) as nina:
        assert nina.get(f"/users/{uid}").status_code == 200
        assert admin_c.delete(f"/users/{uid}").status_code == 200
        assert nina.get("/datasets").status_code == 401


# -- sub-tokens -----------------------------------------------------------------------------


def test_a_subtoken_never_outlives_its_parent(acct: Server) -> None:
    parent = acct.token("olga", ["user"], ["users"], exp=120)
    with acct.client(parent) as c:
        r = c.post("/create_token", json={"type": "user", "exp": 30 * 86400})
        assert r.status_code == 200, r.text
        assert claims_of(r.json()["token"])["exp"] <= claims_of(parent)["exp"]
        short = c.post("/create_token", json={"type": "temp", "exp": 10}).json()["token"]
        assert claims_of(short)["exp"] <= time.time() + 11
        assert claims_of(short)["groups"] == ["users"]


def test_a_subtoken_never_has_more_rights(acct: Server) -> None:
    user = acct.token("pete", ["user"], ["users"])
    with acct.client(user) as c:
        for body in ({"type": "temp", "role": "admin"}, {"type": "temp", "scope": "internal"},
                     {"type": "system"}, {"type": "pilot"}):
            r = c.post("/create_token", json=body)
            assert r.status_code == 403, (body, r.text)
        for body in ({"type": "temp", "scope": "read:nothing"},
                     {"type": "temp", "dataset_id": "0" * 32}, {"type": "share"},
                     {"type": "root"}):
            assert c.post("/create_token", json=body).status_code == 400, body
        ds = create_dataset(c, "users")
        r = c.post("/create_token", json={"type": "temp", "scope": "read:datasets"})
        narrow = r.json()["token"]
    with acct.client(narrow) as c:
        assert c.get(f"/datasets/{ds}").status_code == 200
        assert c.put(f"/datasets/{ds}/status", json={"status": "suspended"}).status_code == 403
        assert c.post("/create_token", json={"type": "temp"}).status_code == 403
    with acct.client(acct.token("pilot-x", ["pilot"])) as c:
        assert c.post("/create_token", json={"type": "temp"}).status_code == 403


def test_admin_mints_system_and_pilot_tokens_system_only_pilot(acct: Server,
                                                              system_c: httpx.Client,
                                                              admin_c: httpx.Client) -> None:
    r = admin_c.post("/create_token", json={"type": "system"})
    assert r.status_code == 200 and claims_of(r.json()["token"])["roles"] == ["system"]
    assert system_c.post("/create_token", json={"type": "system"}).status_code == 403
    r = system_c.post("/create_token", json={"type": "pilot", "role": "user"})
    assert r.status_code == 400
    a = system_c.post("/create_token", json={"type": "pilot"}).json()
    b = system_c.post("/create_token", json={"type": "pilot"}).json()
    assert a["roles"] == ["pilot"] and a["username"] != b["username"]
    # a token bound to a pilot works only while that pilot exists and is active
    pid = register_pilot(system_c, cpu=1)
    bound = admin_c.post("/create_token", json={"type": "pilot", "pilot_id": pid}).json()
    assert claims_of(bound["token"])["pilot_id"] == pid
    with acct.client(bound["token"]) as c:
        r = c.patch(f"/pilots/{pid}", json={"resources_available": {"cpu": 1}})
        assert r.status_code == 200, r.text
    nobody = admin_c.post("/create_token", json={"type": "pilot", "pilot_id": "f" * 32}).json()
    with acct.client(nobody["token"]) as c:
        r = c.patch(f"/pilots/{'f' * 32}", json={})
        assert r.status_code == 401 and "does not exist" in r.json()["error"]


# -- per-dataset rules, share tokens, pilots ---------------------------------------------------


def test_a_user_never_touches_another_users_dataset_without_a_rule(acct: Server) -> None:
    alice = acct.client(acct.token("alice", ["user"], ["physics"]))
    bob = acct.client(acct.token("bob", ["user"], ["astro"]))
    ds = create_dataset(alice, "physics")
    mine = create_dataset(bob, "astro")
    for method, path, body in (
        ("GET", f"/datasets/{ds}", None), ("GET", f"/config/{ds}", None),
        ("GET", f"/datasets/{ds}/tasks", None), ("GET", f"/auths/{ds}", None),
        ("PUT", f"/datasets/{ds}/description", {"description": "mine now"}),
        ("PUT", f"/auths/{ds}", {"read_users": ["bob"]}),
        ("GET", f"/auths/{ds}/actions/read", None), ("GET", f"/auths/{ds}/actions/write", None),
    ):
        r = bob.request(method, path, json=body)
        assert r.status_code == 403, (method, path, r.text)
    assert list(bob.get("/datasets").json()) == [mine]
    assert ds not in json.dumps(bob.get("/dataset_summaries/status").json())

    r = alice.put(f"/auths/{ds}", json={"read_users": ["bob"]})
    assert r.status_code == 200 and r.json()["write_users"] == ["alice"]
    assert bob.get(f"/datasets/{ds}").status_code == 200
    assert bob.get(f"/auths/{ds}/actions/read").status_code == 200
    assert bob.get(f"/auths/{ds}/actions/write").status_code == 403
    assert bob.put(f"/datasets/{ds}/description", json={"description": "x"}).status_code == 403
    alice.put(f"/auths/{ds}", json={"write_groups": ["physics", "astro"]})
    assert bob.put(f"/datasets/{ds}/description", json={"description": "x"}).status_code == 200
    assert sorted(bob.get("/datasets").json()) == sorted([ds, mine])
    assert alice.put(f"/auths/{ds}", json={}).status_code == 400


def test_a_share_token_reads_one_dataset_and_nothing_else(acct: Server) -> None:
    alice = acct.client(acct.token("alice", ["user"], ["physics"]))
    bob = acct.client(acct.token("bob", ["user"], ["astro"]))
    shared, other = create_dataset(alice, "physics"), create_dataset(alice, "physics")
    for ds in (shared, other):
        assert alice.put(f"/config/{ds}", json=minimal_config()).status_code == 200
    assert bob.post("/create_token", json={"type": "share", "dataset_id": shared}
                    ).status_code == 403
    assert alice.post("/create_token", json={"type": "share", "dataset_id": "0" * 32}
                      ).status_code == 404
    r = alice.post("/create_token", json={"type": "share", "dataset_id": shared, "exp": 600})
    assert r.status_code == 200, r.text
    assert r.json()["scope"] == f"dataset:{shared}:read"
    with acct.client(r.json()["token"]) as share:
        for path in (f"/datasets/{shared}", f"/config/{shared}", f"/datasets/{shared}/tasks",
                     f"/datasets/{shared}/task_counts/status", f"/auths/{shared}/actions/read"):
            assert share.get(path).status_code == 200, path
        assert list(share.get("/datasets").json()) == [shared]
        for method, path, body in (
            ("GET", f"/datasets/{other}", None), ("GET", f"/config/{other}", None),
            ("GET", f"/auths/{shared}/actions/write", None),
            ("PUT", f"/datasets/{shared}/status", {"status": "suspended"}),
            ("POST", "/datasets", {"description": "d", "jobs_submitted": 1,
                                   "tasks_submitted": 1, "tasks_per_job": 1,
                                   "group": "physics"}),
            ("POST", "/create_token", {"type": "share", "dataset_id": shared}),
            ("GET", "/grids", None), ("GET", "/pilots", None), ("GET", "/roles", None),
        ):
            r = share.request(method, path, json=body)
            assert r.status_code == 403, (method, path, r.text)


def test_a_pilot_token_acts_only_on_its_own_pilot_and_tasks(acct: Server,
                                                           system_c: httpx.Client) -> None:
    alice = acct.client(acct.token("alice", ["user"], ["physics"]))
    ds = create_dataset(alice, "physics", jobs=1, tasks_per_job=2)
    job = create_job(system_c, ds, 0)
    site = f"site-{ds}"
    for index in (0, 1):
        create_task(system_c, ds, job, index, f"t{index}", status="queued",
                    requirements={"cpu": 1, "memory": 1, "site": site})
    minted = [system_c.post("/create_token", json={"type": "pilot"}).json()["token"]
              for _ in range(2)]
    one, two = (acct.client(t) for t in minted)
    p1, p2 = register_pilot(one, cpu=1, memory=1), register_pilot(two, cpu=1, memory=1)
    task = claim(one, p1, cpu=1, memory=1, site=site).json()
    tid, iid = task["task_id"], task["instance_id"]

    assert claim(two, p1, cpu=1, memory=1, site=site).status_code == 403
    assert two.patch(f"/pilots/{p1}", json={"resources_available": {"cpu": 0}}
                     ).status_code == 403
    assert two.delete(f"/pilots/{p1}").status_code == 403
    assert two.get(f"/tasks/{tid}").status_code == 403
    r = two.post(f"/tasks/{tid}/task_actions/complete", json={"instance_id": iid})
    assert r.status_code == 403
    assert list(two.get("/pilots").json()) == [p2]
    assert two.get(f"/datasets/{ds}").status_code == 403
    assert two.get(f"/datasets/{ds}/tasks").status_code == 403

    assert one.get(f"/tasks/{tid}").status_code == 200
    assert one.patch(f"/pilots/{p1}", json={"resources_available": {"cpu": 0}}
                     ).status_code == 200
    r = one.post(f"/tasks/{tid}/task_actions/complete", json={"instance_id": iid})
    assert r.status_code == 200, r.text


# -- external token exchange ----------------------------------------------------------------


def exchange(srv: Server, username: str, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(f"{srv.url}/token/{username}", headers=headers, timeout=30)


def test_exchange_with_a_provider_key_file(acct: Server, admin_c: httpx.Client,
                                           provider: Provider) -> None:
    uid = add_user(admin_c, "quinn", email="quinn@example.org", groups=["users"])
    good = provider.token(sub="q-123", email="Quinn@Example.org")
    r = exchange(acct, "quinn", good)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["username"], body["roles"], body["groups"]) == ("quinn", ["user"], ["users"])
    with acct.client(body["token"]) as quinn:
        assert quinn.get(f"/users/{uid}").status_code == 200

    now = int(time.time())
    refused = {
        "another user's name": exchange(acct, "alice", good),
        "unknown user": exchange(acct, "nobody", good),
        "wrong audience": exchange(acct, "quinn", provider.token(aud="other",
                                                                 email="quinn@example.org")),
        "wrong issuer": exchange(acct, "quinn", provider.token(iss="https://evil.example",
                                                               email="quinn@example.org")),
        "expired": exchange(acct, "quinn", provider.token(exp=now - 3600, iat=now - 7200,
                                                          email="quinn@example.org")),
        "no email": exchange(acct, "quinn", provider.token(sub="q-123")),
        "unverified email": exchange(acct, "quinn", provider.token(
            email="quinn@example.org", email_verified=False)),
        "another key": exchange(acct, "quinn", provider.token(
            key=new_key(), email="quinn@example.org")),
        "public key as HMAC secret": exchange(acct, "quinn", _hs256_with_public_key(provider)),
        "our own token": exchange(acct, "quinn", acct.token("quinn", ["user"])),
        "garbage": exchange(acct, "quinn", "not.a.jwt"),
    }
    for why, r in refused.items():
        assert r.status_code == 403, (why, r.text)
        assert r.json()["error"] == "external token refused", why
    assert exchange(acct, "quinn", None).status_code == 401


def _hs256_with_public_key(provider: Provider) -> str:
    """The classic algorithm-confusion forgery: HS256 keyed with the RSA public key."""
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    now = int(time.time())
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64(json.dumps({"iss": ISSUER, "aud": AUDIENCE, "exp": now + 300,
                              "email": "quinn@example.org"}).encode())
    signing_input = f"{header}.{payload}".encode()
    key = provider.key_file.read_bytes()
    return f"{header}.{payload}.{b64(hmac.new(key, signing_input, hashlib.sha256).digest())}"


def test_exchange_with_a_jwks_url_matching_orcid(tmp_path: Path) -> None:
    provider = Provider(tmp_path)
    url = provider.serve_jwks()
    env = oidc_env(ICEPROD_OIDC_JWKS_URL=url, ICEPROD_OIDC_CLAIM="sub")
    srv = start_server(tmp_path / "data", env=env, args=["--only", "rest"])
    try:
        with srv.client(srv.token("root", ["admin"])) as admin:
            add_user(admin, "rosa", orcid="https://orcid.org/0000-0002-1825-0097")
            add_user(admin, "sam", orcid="0000-0003-0000-0000")
        r = exchange(srv, "rosa", provider.token(sub="0000-0002-1825-0097"))
        assert r.status_code == 200, r.text
        assert r.json()["username"] == "rosa"
        assert exchange(srv, "sam", provider.token(sub="0000-0002-1825-0097")
                        ).status_code == 403
        (tmp_path / "other").mkdir()
        other = Provider(tmp_path / "other", kid="unknown-kid")
        assert exchange(srv, "rosa", other.token(sub="0000-0002-1825-0097")
                        ).status_code == 403
    finally:
        srv.stop()
        provider.stop()


def test_exchange_answers_503_when_the_provider_is_down(tmp_path: Path) -> None:
    provider = Provider(tmp_path)
    dead = f"http://127.0.0.1:{free_port()}/jwks.json"
    srv = start_server(tmp_path / "data", env=oidc_env(ICEPROD_OIDC_JWKS_URL=dead),
                       args=["--only", "rest"])
    try:
        r = exchange(srv, "rosa", provider.token(email="rosa@example.org"))
        assert r.status_code == 503, r.text
    finally:
        srv.stop()


def test_cli_login_with_an_ldap_password(acct: Server, tmp_path: Path) -> None:
    """README's `iceprod login --username alice` against the real slapd: the token lands in
    the user's config dir (0600) and works."""
    env = {k: v for k, v in os.environ.items() if k not in ("ICEPROD_TOKEN", "ICEPROD_URL")}
    env["XDG_CONFIG_HOME"] = str(tmp_path)
    cli = [sys.executable, "-m", "iceprod.client.cli"]
    bad = subprocess.run([*cli, "login", "--url", acct.url, "--username", "alice",
                          "--password-stdin"], input="not-it\n", capture_output=True,
                         text=True, env=env, check=False)
    assert bad.returncode == 3 and not (tmp_path / "iceprod" / "token").exists()
    ok = subprocess.run([*cli, "login", "--url", acct.url, "--username", "alice",
                         "--password-stdin"], input="wonderland\n", capture_output=True,
                        text=True, env=env, check=False)
    assert ok.returncode == 0, ok.stderr
    token_file = tmp_path / "iceprod" / "token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    who = subprocess.run([*cli, "whoami", "--json"], capture_output=True, text=True, env=env,
                         check=True)
    assert json.loads(who.stdout)["user"] == "alice"
    assert "wonderland" not in ok.stdout + ok.stderr + who.stdout
