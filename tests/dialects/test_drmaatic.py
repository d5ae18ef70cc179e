"""DRMAAtic's API driven the way its documentation shows (Python `requests`, multipart
upload, zip download), end to end on a local grid of real pilots."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path
from typing import Any

from tests.client.test_cli import CLI
from tests.conftest import Server
from tests.dialects.conftest import MAX_DOWNLOAD, Session
from tests.helpers import wait_for


def status(session: Session, uuid: str) -> str:
    r = session.get(f"/task/{uuid}")
    assert r.status_code == 200, r.text
    return str(r.json()["status"])


def dataset_count(session: Session) -> int:
    return len(session.get("/datasets").json())


def test_catalog_lists_in_drmaatic_shape(users: dict[str, Session], catalog: Path) -> None:
    alice = users["alice"]
    r = alice.get("/script", params={"page": 1, "page_size": 2})
    assert r.status_code == 200, r.text
    page = r.json()
    assert page["count"] >= 3 and page["previous"] is None and len(page["results"]) == 2
    assert "page=2" in page["next"]
    second = alice.get(page["next"].split(alice.base, 1)[1]).json()
    assert second["previous"] and "page=1" in second["previous"]
    names = [s["name"] for s in page["results"] + second["results"]]
    assert names == sorted(names) and {"echo", "repeat", "sleeper"} <= set(names)
    one = alice.get("/script/repeat").json()
    assert one["param"][0] == {"name": "n", "type": "int", "required": True, "min": 1,
                               "max": 10}
    assert one["max_clock_time"] == "00:05:00" and one["is_output_visible"] is True
    assert alice.get("/script/nothing").status_code == 404
    # only admins write the catalog; a shell-string parameter is refused
    assert alice.put("/script/mine", json={"command": "/bin/true"}).status_code == 403
    r = users["admin"].put("/script/bad", json={
        "command": "/bin/sh", "args": ["-c", "echo $(param.x)"],
        "param": [{"name": "x", "type": "string"}]})
    assert r.status_code == 400 and "args[1]" in r.json()["error"], r.text
    assert users["anon"].get("/script").status_code == 401


def test_task_runs_with_an_upload_and_its_directory_is_downloaded(
        users: dict[str, Session], catalog: Path, tmp_path: Path, grid_server: Server) -> None:
    alice = users["alice"]
    source = tmp_path / "lines.txt"
    source.write_text("a line\n")
    with open(source, "rb") as fh:
        # DRMAAtic's "Running a Task" example, parameters as form fields
        payload = {"task_name": "repeat", "n": "3"}
        files = [("input", ("lines.txt", fh, "application/octet-stream"))]
        r = alice.request("POST", "/task/", data=payload, files=files)
    assert r.status_code == 201, r.text
    task: dict[str, Any] = r.json()
    uuid = task["uuid"]
    assert task["task_name"] == "repeat" and task["deleted"] is False
    assert task["files_name"] == {"input": "lines.txt"}
    assert {"name": "n", "value": 3} in task["param"]
    assert task["sender_ip_addr"] == "127.0.0.1" and task["creation_date"].endswith("Z")
    assert task["status"] in ("created", "queued", "running")

    assert wait_for(lambda: status(alice, uuid) in ("completed", "failed") and
                    status(alice, uuid), timeout=90, what="the task to finish") == "completed"
    done = alice.get(f"/task/{uuid}").json()
    assert done["drm_job_id"] and done["update_date"] >= done["creation_date"]
    listed = alice.get(f"/task/{uuid}/file").json()
    assert listed == ["lines.txt", "result.txt", "sub/note.txt"]

    r = alice.get(f"/task/{uuid}/download", stream=True)
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(r.content))
    assert sorted(archive.namelist()) == listed
    assert archive.read("result.txt") == b"a line\n" * 3
    assert archive.read("sub/note.txt") == b"n=3\n"

    # the task is an ordinary dataset, seen through the IceProd API and the CLI
    ds = alice.get(f"/datasets/{uuid}").json()
    assert ds["status"] == "complete" and ds["username"] == "alice"
    run = CLI(tmp_path / "config", grid_server.url)
    run.login(grid_server.token("alice", ["user"], ["physics"]))
    shown = run("status", uuid)
    assert shown.returncode == 0, shown.stderr
    assert "status:      complete" in shown.stdout
    assert "description: DRMAAtic task: repeat" in shown.stdout
    # a task depending on it (afterok) runs once it completed
    r = alice.post("/task", data={"task_name": "echo", "word": "after",
                                  "depends_on": uuid, "dependency_type": "afterok"})
    assert r.status_code == 201, r.text
    assert r.json()["depends_on"] == [uuid]
    after = r.json()["uuid"]
    assert wait_for(lambda: status(alice, after) in ("completed", "failed") and
                    status(alice, after), timeout=90, what="the dependent") == "completed"
    assert alice.get(f"/task/{after}/file").json() == []  # its outputs are not visible
    # another user reads none of it
    assert users["bob"].get(f"/task/{uuid}").status_code == 403
    assert users["bob"].get(f"/task/{uuid}/download").status_code == 403


def test_bad_values_and_foreign_groups_create_nothing(
        users: dict[str, Session], catalog: Path) -> None:
    alice, bob = users["alice"], users["bob"]
    before = dataset_count(users["admin"])
    upload = [("input", ("x.txt", b"x", "text/plain"))]
    for data, files, field in [
        ({"task_name": "repeat", "n": "11"}, upload, "n"),
        ({"task_name": "repeat", "n": "three"}, upload, "n"),
        ({"task_name": "repeat", "n": "2"}, None, "input"),
        ({"task_name": "repeat", "n": "2", "extra": "1"}, upload, "extra"),
        ({"task_name": "echo", "word": "Not Allowed!"}, None, "word"),
        ({"task_name": "repeat", "n": "2", "depends_on": "f" * 32}, upload, "depends_on"),
    ]:
        r = alice.post("/task", data=data, files=files)
        assert r.status_code == 400, (data, r.text)
        assert r.json()["error"].startswith(f"{field}:"), r.text
    r = bob.post("/task", data={"task_name": "repeat", "n": "2"}, files=upload)
    assert r.status_code == 403 and "physics" in r.json()["error"], r.text
    assert alice.post("/task", data={"task_name": "nothing"}).status_code == 404
    assert users["anon"].post("/task", data={"task_name": "echo"}).status_code == 401
    assert dataset_count(users["admin"]) == before


def test_deleting_a_running_task_stops_it(users: dict[str, Session], catalog: Path) -> None:
    alice = users["alice"]
    pidfile = catalog / "sleeper.pid"
    r = alice.post("/task", data={"task_name": "sleeper", "pidfile": str(pidfile)})
    assert r.status_code == 201, r.text
    uuid = r.json()["uuid"]
    wait_for(pidfile.exists, timeout=90, what="the sleeper to start")
    pid = int(pidfile.read_text())
    assert status(alice, uuid) == "running"

    r = alice.delete(f"/task/{uuid}")
    assert r.status_code == 200, r.text
    assert r.json()["deleted"] is True and r.json()["status"] == "stopped"
    records = alice.get(f"/datasets/{uuid}/audit").json()["records"]
    assert [(r["action"], r["username"], r["counts"]) for r in records
            if r["action"].startswith("drmaatic")] == [("drmaatic.delete", "alice",
                                                        {"changed": 1})]

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(gone, timeout=30, what="the pilot to kill the deleted task")
    again = alice.get(f"/task/{uuid}").json()
    assert again["deleted"] is True and again["status"] == "stopped"
    assert alice.get(f"/datasets/{uuid}").json()["status"] == "suspended"


def test_a_directory_over_the_download_limit_is_refused(
        users: dict[str, Session], catalog: Path) -> None:
    alice = users["alice"]
    chunk = b"x" * (MAX_DOWNLOAD // 5)
    r = alice.post("/task", data={"task_name": "repeat", "n": "6"},
                   files=[("input", ("big.bin", chunk, "application/octet-stream"))])
    assert r.status_code == 201, r.text
    uuid = r.json()["uuid"]
    wait_for(lambda: status(alice, uuid) == "completed", timeout=90, what="the task")
    assert "result.txt" in alice.get(f"/task/{uuid}/file").json()
    r = alice.get(f"/task/{uuid}/download")
    assert r.status_code == 413 and "limit" in r.json()["error"], r.text
