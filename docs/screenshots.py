"""`make screenshots`: the README tour's pictures, taken in a browser from a simulated world.

Without --url it starts `manage.py serve --demo` in a fresh, temporary TIDELINE_HOME (an
embedded PostgreSQL and Redis unless DATABASE_URL and REDIS_URL are set: then use an empty
database), so the world is seed 0's and order 4711 is there; with --url and --password it
uses a demo console that is already running. It waits until the dashboard shows every kind
of trouble, then signs in as the admin and saves one picture per tour step under
docs/screenshots/. Chromium is Debian's (/usr/bin/chromium), launched as DESIGN.md says.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
ORDER = "4711"
WAIT_SECONDS = 600


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="a running `serve --demo` console")
    parser.add_argument("--password", help="its admin password")
    parser.add_argument("--port", type=int, default=8010, help="for the console started here")
    options = parser.parse_args()
    if options.url:
        shoot(options.url.rstrip("/"), options.password or "")
        return
    with tempfile.TemporaryDirectory(prefix="tideline-screenshots-") as home:
        server, password = demo_start(home, options.port)
        try:
            shoot(f"http://127.0.0.1:{options.port}", password)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=90)


def demo_start(home: str, port: int) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "manage.py", "serve", "--demo", "--port", str(port)]
    server = subprocess.Popen(  # noqa: S603 - our own command
        command, cwd=ROOT, env={**_try_out(os.environ), "TIDELINE_HOME": home},
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert server.stdout is not None
    for line in server.stdout:
        print(line, end="")
        if found := re.search(r"admin / (\S+)", line):
            return server, found[1]
    raise SystemExit("serve --demo exited before printing the admin password")


def _try_out(environment: os._Environ[str]) -> dict[str, str]:
    """The environment without a database or broker of its own: serve --demo's try-out mode."""
    own = {"DATABASE_URL", "REDIS_URL", "TIDELINE_EMBEDDED", "TIDELINE_MIGRATE_DATABASE_URL"}
    return {key: value for key, value in environment.items() if key not in own}


def shoot(url: str, password: str) -> None:
    from playwright.sync_api import sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS
        )
        page = browser.new_page(base_url=url, viewport={"width": 1280, "height": 900})
        sign_in(page, password)
        world_wait(page)
        tour(page)
        browser.close()


def sign_in(page: Any, password: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        try:
            page.goto("/login/")
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda address: "/login/" not in address)


def world_wait(page: Any) -> None:
    """Until the dashboard shows completed, stalled, failed and missing flows, dead letters
    waiting, and order 4711 stopped at QMS."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        page.goto("/")
        html = page.content()
        shown = all(
            re.search(pattern, html, re.S)
            for pattern in (
                r'count-completed">[1-9]', r'count-stalled">[1-9]', r'count-failed">[1-9]',
                r"no run since", r"dashboard-dead-letters.*?QMS",
            )
        )  # fmt: skip
        if shown and "Certificate approved (QMS)" in flow_sentence(page):
            return
        time.sleep(5)
    raise SystemExit("the simulated world did not show every kind of trouble in time")


def flow_sentence(page: Any) -> str:
    answer = page.request.get(f"/api/v1/flows/{ORDER}")
    return str(answer.json().get("sentence", "")) if answer.ok else ""


def tour(page: Any) -> None:
    page.goto("/")
    save(page, "dashboard", full_page=True)  # the trouble lists sit below the counts
    # Support: the search box, then order 4711's page and the sentence that says why.
    page.get_by_role("searchbox").first.fill(ORDER)
    page.get_by_role("searchbox").first.press("Enter")
    page.wait_for_url(f"**/flows/{ORDER}")
    save(page, "support-order-4711")
    # Operator: QMS's dead letters, then the replay of 4711's certificate, then its flow.
    page.goto("/dead-letters/?system=QMS&state=new")
    save(page, "operator-qms-dead-letters")
    page.locator("tr", has_text=ORDER).get_by_role("link", name="Open").click()
    page.wait_for_url("**/dead-letters/*")
    page.get_by_role("button", name="Replay", exact=True).click()
    page.locator("#replays .attempt-state-delivered").wait_for(timeout=60_000)
    page.locator("#replays").scroll_into_view_if_needed()
    save(page, "operator-replayed")
    deadline = time.monotonic() + 180
    while "Completed" not in flow_sentence(page) and time.monotonic() < deadline:
        time.sleep(3)
    page.goto(f"/flows/{ORDER}")
    save(page, "operator-flow-completed")
    # Auditor: the ledger page, once it is there.
    if page.request.get("/ledger/").ok:
        page.goto("/ledger/")
        save(page, "auditor-ledger")
    else:
        print("no /ledger/ page on this console: the auditor's step has no picture")
    # Admin: the flow definitions, where a new one is pasted or uploaded.
    page.goto("/settings/flow-definitions/")
    save(page, "admin-flow-definitions")


def save(page: Any, name: str, *, full_page: bool = False) -> None:
    path = OUT / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    print(f"saved {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
