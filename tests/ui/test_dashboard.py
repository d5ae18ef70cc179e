"""The web dashboard in a real browser (Playwright driving Debian's chromium, headless) against
a real server running its local grid: log in, submit (a broken config first), watch a
dataset complete without reloading, read a failed task's stderr, reset failed tasks after the
preview, a reader without the actions, another user locked out, XSS payloads rendered as
text, and no console error on any page.

Each page is screenshotted; with ``ICEPROD_SCREENSHOTS=<dir>`` (``make screenshots``) the
pictures are written there (docs/images is where the docs page shows them from).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Server, start_server
from tests.helpers import needs, submit, wait_for
from tests.ldap_server import missing_tools, start_slapd
from tests.rest.test_accounts import ENTRIES, ldap_env
from tests.server.test_grids_local import local_grid

CHROMIUM = Path("/usr/bin/chromium")

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
XSS_DESCRIPTION = "<script>alert(1)</script>"
XSS_LOG = "<img src=x onerror=alert(2)><b>boom</b>"
SHOTS = Path(os.environ["ICEPROD_SCREENSHOTS"]) if os.environ.get("ICEPROD_SCREENSHOTS") else None


def steps(script: str) -> list[dict[str, Any]]:
    return [{"name": "run", "command": "/bin/sh", "args": ["-c", script], "timeout": 60}]


def failing_config() -> dict[str, Any]:
    return {"version": 3, "options": {"max_failures": 1}, "tasks": [{
        "name": "explode", "requirements": {"cpu": 1, "memory": 0.1, "time": 0.1},
        "steps": steps(f"echo starting; echo '{XSS_LOG}' >&2; exit 3")}]}


GOOD_CONFIG = """{
  "version": 3,
  "tasks": [
    {"name": "work", "requirements": {"cpu": 1, "memory": 0.1, "time": 0.1},
     "steps": [{"name": "run", "command": "/bin/sh", "args": ["-c", "sleep 0.5; echo done"]}]}
  ]
}
"""
BROKEN_CONFIG = """{
  "version": 3,
  "tasks": [
    {"name": "work",
     "requirements": {"cpu": "many"},
     "steps": [{"command": "/bin/true"}]}
  ]
}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("ui")
    srv = start_server(tmp / "data", env=local_grid(tmp))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    needs(None if CHROMIUM.exists() else "chromium is not installed (.ci/run installs it)")
    from playwright import sync_api

    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        yield b
        b.close()


class Tab:
    """A page in its own browser context (its own memory: a fresh login), recording console
    errors, uncaught exceptions and dialogs (an alert() would mean a payload ran)."""

    def __init__(self, browser: Any, server: Server, tmp: Path, width: int = 1280) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": 900})
        self.page = self.context.new_page()
        self.page.set_default_timeout(20_000)
        self.server, self.tmp = server, tmp
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("console", lambda m: self.errors.append(f"console: {m.text} "
                                                             f"{m.location.get('url', '')}")
                     if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"exception: {e}"))
        self.page.on("dialog", self._dialog)

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def login(self, token: str) -> None:
        self.page.goto(self.server.url + "/", wait_until="domcontentloaded")
        self.page.wait_for_url("**/ui/#/login")
        self.page.fill("#token", token)
        self.page.click("#token-form button[type=submit]")
        self.page.wait_for_selector("#datasets-table")

    def go(self, hash_: str, ready: str) -> None:
        self.page.evaluate("h => { location.hash = h; }", hash_)
        self.page.wait_for_selector(ready)

    def shot(self, name: str, full_page: bool = True) -> None:
        path = self.tmp / f"dashboard-{name}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        if SHOTS:
            SHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, SHOTS / path.name)

    def clean(self) -> None:
        assert self.errors == [], self.errors
        assert self.dialogs == [], f"a payload ran: {self.dialogs}"

    def close(self) -> None:
        self.context.close()


def test_the_dashboard_end_to_end(server: Server, browser: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    alice_token = server.token("alice", ["user"], ["physics"])
    alice = server.client(alice_token)
    tab = Tab(browser, server, tmp_path)
    page = tab.page

    # a browser at / lands on the login page; the page is keyboard-usable from the start
    page.goto(server.url + "/", wait_until="domcontentloaded")
    page.wait_for_url("**/ui/#/login")
    page.wait_for_selector("#token")
    tab.shot("login")
    # log in with the keyboard alone: tab to the token field, type, tab to the button, enter
    for _ in range(6):
        if page.evaluate("document.activeElement.id") == "token":
            break
        page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "token"
    page.keyboard.insert_text(alice_token)
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    page.wait_for_selector("#datasets-table")

    # submit: a broken config shows its errors by line and creates nothing
    tab.go("#/submit", "#s-config")
    page.fill("#s-description", XSS_DESCRIPTION)
    page.fill("#s-jobs", "3")
    page.fill("#s-config", BROKEN_CONFIG)
    page.click("form button[type=submit]")
    problems = page.locator("#s-result .problems li")
    problems.first.wait_for()
    assert "line 5" in problems.first.inner_text()
    assert "requirements.cpu" in problems.first.inner_text()
    tab.shot("submit")
    assert alice.get("/datasets").json() == {}

    # a good one is created; its page shows the progress advance to complete, no reload
    page.fill("#s-config", GOOD_CONFIG)
    page.click("form button[type=submit]")
    page.wait_for_url("**/#/datasets/*")
    page.wait_for_selector("#ds-facts")
    page.evaluate("window.__stillTheSamePage = true")
    # every progress figure the page shows, as it redraws itself
    page.evaluate("""() => {
        const box = document.querySelector('#ds-progress');
        window.__seen = [box.querySelector('.pct')?.textContent];
        new MutationObserver(() => {
            const pct = box.querySelector('.pct');
            if (pct && window.__seen.at(-1) !== pct.textContent) window.__seen.push(pct.textContent);
        }).observe(box, {childList: true, subtree: true});
    }""")
    title = page.locator("h1 .desc")
    assert title.inner_text() == XSS_DESCRIPTION
    expect(page.locator("#ds-facts")).to_contain_text("complete", timeout=90_000)
    assert page.evaluate("window.__stillTheSamePage") is True
    seen = page.evaluate("window.__seen")
    assert seen[0] == "0%" and seen[-1] == "100%", seen  # it advanced, drawn by the page
    assert page.locator("#ds-progress .pct").inner_text() == "100%"
    assert "complete 3" in page.locator("#ds-counts").inner_text()
    # the plots follow: completions over time, walltime and memory of the runs
    page.locator("#ds-plots .uplot").nth(2).wait_for()
    captions = page.locator("#ds-plots figcaption").all_inner_texts()
    assert captions[:3] == ["Tasks completed over time", "Walltime of work (seconds)",
                            "Memory of work (GB)"], captions
    tab.shot("dataset")
    good = page.url.rsplit("/", 1)[1]

    # the datasets table: the payload is text, the row links to the dataset
    tab.go("#/datasets", "#datasets-table table")
    row = page.locator("#datasets-table tbody tr").first
    assert row.locator(".desc").inner_text() == XSS_DESCRIPTION
    assert page.locator("main script").count() == 0
    tab.shot("datasets")

    # a failed task: its stderr reads as text, the HTML in it is not markup
    bad = submit(alice, failing_config(), jobs=1, description="fails on purpose")
    wait_for(lambda: alice.get(f"/datasets/{bad}/task_counts/status").json().get("failed"),
             timeout=60, what="the failed task")
    tab.go(f"#/datasets/{bad}", "#ds-tasks")
    page.select_option("#t-status", "failed")
    page.locator("#ds-tasks a").first.click()
    page.wait_for_selector("#log")
    expect(page.locator("#log")).to_contain_text("boom")
    assert XSS_LOG in page.locator("#log").inner_text()
    assert page.locator("#log img, #log b").count() == 0
    # why it is not running: failed too often, in plain words
    expect(page.locator("#explain")).to_be_visible()
    expect(page.locator("#explain")).to_contain_text("fail")
    page.check("#log-follow")
    tab.shot("task")

    # reset the failed tasks: a preview first, then the change
    tab.go(f"#/datasets/{bad}", "#act-reset")
    page.click("#act-reset")
    preview = page.locator("#confirm-preview")
    preview.wait_for()
    # the server's dry run: what is selected, what would change and from which status
    text = preview.inner_text()
    assert "Matched: 1; would change: 1." in text and "By status: failed 1." in text, text
    tab.shot("reset-preview", full_page=False)
    page.click("#confirm-yes")
    page.wait_for_selector("#ds-notice .ok")
    assert "1 task(s) changed" in page.locator("#ds-notice").inner_text()
    runs = alice.get(f"/datasets/{bad}/tasks").json()
    assert next(iter(runs.values()))["status"] in ("waiting", "queued", "processing", "failed")

    # pilots and grids
    tab.go("#/pilots", "#grids table")
    tab.shot("pilots")
    tab.clean()
    tab.close()

    check_reader_and_other_user(server, browser, tmp_path, alice, good)
    check_phone_width(server, browser, tmp_path)
    check_admin(server, browser, tmp_path)


def check_reader_and_other_user(server: Server, browser: Any, tmp_path: Path,
                                alice: httpx.Client, ds: str) -> None:
    assert alice.put(f"/auths/{ds}", json={"read_users": ["alice", "rita"]}).status_code == 200
    reader = Tab(browser, server, tmp_path)
    reader.login(server.token("rita", ["user"], ["readers"]))
    reader.go(f"#/datasets/{ds}", "#ds-matrix table")
    assert reader.page.locator("#ds-actions, #act-reset, #act-suspend, #rules-form").count() == 0
    reader.clean()
    reader.close()

    other = Tab(browser, server, tmp_path)
    other.login(server.token("bob", ["user"], ["astro"]))
    assert other.page.locator("#datasets-table").inner_text().strip() == "No datasets match."
    other.clean()
    # opening the dataset by its address: refused by the API, a plain message on the page
    # (the browser itself logs the 403 answer as a console line, so that is not checked here)
    other.go(f"#/datasets/{ds}", "main .msg.error")
    assert "may not read it" in other.page.locator("main").inner_text()
    assert XSS_DESCRIPTION not in other.page.locator("main").inner_text()
    assert other.dialogs == []
    other.close()


def check_phone_width(server: Server, browser: Any, tmp_path: Path) -> None:
    phone = Tab(browser, server, tmp_path, width=390)
    phone.login(server.token("alice", ["user"], ["physics"]))
    phone.page.wait_for_selector("#datasets-table table")
    assert phone.page.evaluate(
        "document.documentElement.scrollWidth <= window.innerWidth"), "the page is wider than a phone"
    phone.shot("phone")
    phone.clean()
    phone.close()


def check_admin(server: Server, browser: Any, tmp_path: Path) -> None:
    root = server.token("root", ["admin"])
    with server.client(root) as api:
        assert api.post("/groups", json={"name": "physics"}).status_code in (201, 409)
        r = api.post("/users", json={"username": "alice"})
        assert r.status_code == 201, r.text
        assert api.put(f"/users/{r.json()['result']}/groups",
                       json={"groups": ["physics"]}).status_code == 200
    alice = server.client(server.token("alice", ["user"], ["physics"]))
    admin = Tab(browser, server, tmp_path)
    admin.login(root)
    page = admin.page
    admin.go("#/admin", "#admin-users table")
    assert "alice" in page.locator("#admin-users").inner_text()
    page.fill("#rules-dataset", "1")
    page.click("#admin-rules button[type=submit]")
    page.locator("#admin-rules table").wait_for()
    assert "rita" in page.locator("#admin-rules").inner_text()
    admin.shot("admin")
    # revoking alice's tokens: confirmed first, then her token stops working
    assert alice.get("/datasets").status_code == 200
    page.locator("#admin-users button", has_text="Revoke tokens").click()
    page.click("#confirm-yes")
    page.wait_for_selector("#admin-notice .ok")
    wait_for(lambda: alice.get("/datasets").status_code == 401, timeout=30,
             what="the revoked token to be refused")
    admin.clean()
    admin.close()


def test_pages_carry_a_policy_without_inline_code(server: Server) -> None:
    r = httpx.get(server.url + "/ui/")
    policy = r.headers["Content-Security-Policy"]
    assert "script-src 'self';" in policy and "style-src 'self';" in policy
    assert "unsafe-inline" not in policy and "<script>" not in r.text.split("<script type")[0]
    assert "style=" not in r.text and not re.search(r"\son[a-z]+=", r.text)
    assert httpx.get(server.url + "/").status_code == 404  # API clients: as before
    assert httpx.get(server.url + "/ui/static/../app.py").status_code == 404
    for name in ("app.js", "api.js", "dom.js", "plots.js"):
        js = httpx.get(f"{server.url}/ui/static/{name}")
        assert js.headers["Content-Type"].startswith("text/javascript")
        # data reaches the page as text only: no markup from strings anywhere in our code
        assert not re.search(r"\.(inner|outer)HTML\s*=|insertAdjacentHTML|document\.write",
                             js.text), name


def test_ldap_login_form(browser: Any, tmp_path: Path) -> None:
    """With LDAP configured the page offers the directory form; a login there works like
    `iceprod login` (the same `POST /ldap`), with the directory's groups."""
    needs(missing_tools())
    slapd = start_slapd(tmp_path / "slapd", ENTRIES)
    srv = start_server(tmp_path / "data", env=ldap_env(slapd.uri), args=["--only", "rest"])
    try:
        tab = Tab(browser, srv, tmp_path)
        tab.page.goto(srv.url + "/ui/", wait_until="domcontentloaded")
        tab.page.fill("#ldap-user", "alice")
        tab.page.fill("#ldap-pass", "wonderland")
        tab.page.click("#ldap-form button[type=submit]")
        tab.page.wait_for_selector("#datasets-table")
        assert tab.page.locator("header .who").inner_text() == "alice"
        tab.go("#/submit", "#s-group")
        assert {"icecube", "physics"} <= set(tab.page.locator("#s-group option").all_inner_texts())
        tab.clean()
        tab.close()
    finally:
        srv.stop()
        slapd.stop()
