"""The server in a real browser (Playwright driving Debian's Chromium; `playwright install` cannot
download one here): sign in, create a token, upload, watch the job finish, see the row with its CI on the
board; the organiser closes the phase and reveals. Screenshots go to tmp_path, or to
$LESIONBENCH_SCREENSHOT_DIR when set (to look at them)."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest
from _server_fixtures import PASSWORD, LiveServer, predictions_csv, task_loader

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install -y chromium; .ci/run installs it as root)"),
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]


@pytest.fixture
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package (test extra)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"])
        yield b
        b.close()


def _shots(tmp_path: Path) -> Path:
    out = Path(os.environ.get("LESIONBENCH_SCREENSHOT_DIR") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    return out


def test_participant_and_organiser_in_chromium(world, browser, tmp_path):
    from lesionbench.server.worker import run_worker

    cfg, phase = world["cfg"], world["phase"]
    srv = LiveServer(world["client"].app)
    stop = threading.Event()
    worker = threading.Thread(target=run_worker, args=(cfg.db, cfg.blobs), kwargs={"task_loader": task_loader, "poll_s": 0.2, "stop": stop}, daemon=True)
    worker.start()
    shots = _shots(tmp_path)
    # team B already has a scored entry, so the board has a comparison
    from _server_fixtures import upload

    upload(world["client"], world["b"], phase, predictions_csv(tmp_path / "b.csv", quality=0.3, seed=4))
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{srv.url}/signin")
        page.fill("input[name=email]", "alice@example.org")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{srv.url}/")
        assert "alice" in page.inner_text("nav")
        # a token, shown once
        page.goto(f"{srv.url}/account")
        page.click("#create-token")
        token = page.inner_text("#new-token").strip()
        assert token.startswith("lb_")
        page.screenshot(path=str(shots / "1-token.png"), full_page=True)
        page.reload()  # a reload re-posts nothing visible: the token is gone from the page
        # upload and watch the job finish (the page refreshes itself while work is in progress)
        page.goto(f"{srv.url}/c/toy")
        page.set_input_files(f"#file-{phase}", str(predictions_csv(tmp_path / "a.csv", quality=1.0)))
        page.click(f"#upload-{phase}")
        page.wait_for_selector("#submissions td.status-scored", timeout=90_000)
        assert "auc" in page.inner_text("#submissions")
        page.screenshot(path=str(shots / "2-scored.png"), full_page=True)
        page.click("#team-name")  # the team's page
        assert "Team A" in page.inner_text("h1") and "alice" in page.inner_text("main") and "scored" in page.inner_text("#submissions")
        # the board: Team A's row with its CI
        page.goto(f"{srv.url}/phases/{phase}/board")
        body = page.inner_text("body")
        assert "Team A" in body and "Team B" in body
        assert page.locator("span.ci").count() >= 2
        page.screenshot(path=str(shots / "3-board.png"), full_page=True)
        assert "private board" not in page.goto(f"{srv.url}/c/toy").text()
        # the organiser closes and reveals
        org = browser.new_page(viewport={"width": 1280, "height": 900})
        from lesionbench.server.auth import hash_password
        from lesionbench.server.db import User

        with cfg.db.session(lock=True) as s:  # read-then-write: take the write lock at BEGIN (a deferred upgrade fails at once when a writer came between)
            s.get(User, world["org"].user_id).password_hash = hash_password(PASSWORD)
        org.goto(f"{srv.url}/signin")
        org.fill("input[name=email]", "org@example.org")
        org.fill("input[name=password]", PASSWORD)
        org.click("button[type=submit]")
        org.goto(f"{srv.url}/c/toy")
        org.click(f"#close-{phase}")
        assert org.inner_text(f"#state-{phase}").strip() == "closed"
        org.click(f"#reveal-{phase}")
        assert org.inner_text(f"#state-{phase}").strip() == "closed, revealed"
        org.screenshot(path=str(shots / "4-organiser.png"), full_page=True)
        page.goto(f"{srv.url}/phases/{phase}/board?part=private")
        assert "Team A" in page.inner_text("body")
        page.screenshot(path=str(shots / "5-private-board.png"), full_page=True)
    finally:
        stop.set()
        worker.join(30)
        srv.stop()
