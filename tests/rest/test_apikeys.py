"""API keys: created and named by their user, accepted the ways the seed clients send them,
stored hashed, and refused once deleted or revoked."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.conftest import Server


def test_api_keys_lifecycle(server: Server, admin: httpx.Client) -> None:
    token = server.token("kate", ["user"], ["physics"])
    with server.client(token) as kate:
        r = kate.post("/users/kate/apikeys", json={"name": "laptop"})
        assert r.status_code == 201, r.text
        made = r.json()
        key = made["key"]
        assert key.startswith("ipk_") and made["groups"] == ["physics"]
        assert made["roles"] == ["user"] and made["expires"] is None
        assert kate.post("/users/kate/apikeys", json={"name": "laptop"}).status_code == 409
        r = kate.post("/users/kate/apikeys", json={"name": "bad name"})
        assert r.status_code == 400 and r.json()["error"].startswith("name"), r.text
        listed = kate.get("/users/kate/apikeys").json()
        assert [k["name"] for k in listed] == ["laptop"]
        assert key not in str(listed) and "hash" not in listed[0]

    # accepted as a bearer token, bare in Authorization, and as X-Api-Key
    for headers in ({"Authorization": f"Bearer {key}"}, {"Authorization": key},
                    {"X-Api-Key": key}):
        r = httpx.get(server.url + "/batches", headers=headers)
        assert r.status_code == 200, (headers, r.text)
    r = httpx.post(server.url + "/datasets", headers={"X-Api-Key": key}, json={
        "description": "by key", "jobs_submitted": 1, "tasks_submitted": 1,
        "tasks_per_job": 1, "group": "physics"})
    assert r.status_code == 201, r.text
    assert httpx.get(server.url + r.json()["result"],
                     headers={"X-Api-Key": key}).json()["username"] == "kate"
    # a key with a wrong secret, a token in X-Api-Key, another user's keys
    forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    assert httpx.get(server.url + "/batches",
                     headers={"X-Api-Key": forged}).status_code == 401
    assert httpx.get(server.url + "/batches",
                     headers={"X-Api-Key": token}).status_code == 401
    assert httpx.get(server.url + "/users/kate/apikeys",
                     headers={"Authorization": f"Bearer {server.token('bob', ['user'])}"}
                     ).status_code == 403

    # only the hash is stored: the secret is nowhere in the data dir
    # (ipk_<id>_<secret>: the secret is base64url, so it may hold '_' itself)
    secret = key.split("_", 2)[2].encode()
    assert len(secret) == 43
    assert not any(secret in p.read_bytes() for p in Path(server.data_dir).rglob("*")
                   if p.is_file())

    # deleting revokes it at once
    with server.client(token) as kate:
        assert kate.delete("/users/kate/apikeys/laptop").json() == {"deleted": 1}
        assert kate.delete("/users/kate/apikeys/laptop").status_code == 404
        assert kate.get("/users/kate/apikeys").json() == []
    r = httpx.get(server.url + "/batches", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 401 and r.json()["error"] == "invalid API key"


def test_revoking_a_users_tokens_refuses_its_keys(server: Server, admin: httpx.Client) -> None:
    r = admin.post("/users", json={"username": "keyholder"})
    assert r.status_code == 201, r.text
    user_id = r.json()["result"]
    # an admin creates a key for a user from the user's record
    r = admin.post(f"/users/{user_id}/apikeys", json={"name": "ci", "expires_days": 30})
    assert r.status_code == 201, r.text
    key, expires = r.json()["key"], r.json()["expires"]
    assert expires > r.json()["created"] and r.json()["username"] == "keyholder"
    assert httpx.get(server.url + "/datasets", headers={"X-Api-Key": key}).status_code == 200
    r = admin.post(f"/users/{user_id}/actions/revoke_tokens")
    assert r.status_code == 200, r.text
    r = httpx.get(server.url + "/datasets", headers={"X-Api-Key": key})
    assert r.status_code == 401 and "revoked" in r.json()["error"]
