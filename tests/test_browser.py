"""The demo notebook in a real browser: JupyterLab on a loopback port, Debian's Chromium driven by Playwright.

Runs all cells of `01_demo.ipynb`, presses Start in the player, waits for the model's replies in the chat,
sends a message while the video plays, and takes a screenshot (`reports/01_demo/player.png`). `make test`
installs Chromium when it is missing (`make browser`); elsewhere the test skips saying what is missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.slow

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
SCREENSHOT = ROOT / "reports" / "01_demo" / "player.png"  # committed beside the demo report


def _chromium() -> str:
    found = os.environ.get("MMDUET_CHROMIUM") or next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)
    if not found:
        pytest.skip("needs a Chromium browser (Debian: apt-get install chromium; `make browser` does it)")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def jupyterlab(tmp_path):
    """A JupyterLab server on a free loopback port with a token, serving a copy of the notebooks folder."""
    work = tmp_path / "work"
    shutil.copytree(ROOT / "notebooks", work / "notebooks")
    settings = tmp_path / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false",
                                                                           "checkForUpdates": False}))
    port, token = _free_port(), "mmduet-browser-test"
    env = {**{k: v for k, v in os.environ.items() if k != "MPLBACKEND"},  # the kernel's own inline figures
           "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "lab-settings"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    log = (tmp_path / "jupyterlab.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}", "--ServerApp.open_browser=False",
         "--ServerApp.allow_root=True"],
        cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError as exc:
                if server.poll() is not None:
                    log_text = (tmp_path / "jupyterlab.log").read_text()[-2000:]
                    raise RuntimeError(f"JupyterLab exited: {log_text}") from exc
                time.sleep(0.5)
        else:
            raise RuntimeError("JupyterLab did not start within 60 s")
        yield url, token, work
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def _button(scope, label: str):
    """An ipywidgets button by its text (its icon's glyph is part of the accessible name, so roles don't match)."""
    return scope.locator("button.jupyter-button").filter(has_text=re.compile(rf"^\s*{re.escape(label)}\s*$"))


def test_demo_player_in_jupyterlab(jupyterlab, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    chromium = _chromium()
    url, token, work = jupyterlab
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        try:
            page.goto(f"{url}/lab/tree/notebooks/01_demo.ipynb?token={token}", wait_until="domcontentloaded")
            page.locator(".jp-Notebook").first.wait_for(timeout=90_000)
            page.get_by_text("Python (mmduet) | Idle").wait_for(timeout=90_000)  # the kernel is up
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()

            player = page.locator(".duet-player")  # not the scripted session's static chat above it
            start = _button(player, "Start")
            start.wait_for(timeout=180_000)
            start.scroll_into_view_if_needed()
            start.click()
            player.locator(".duet-chat .duet-assistant").first.wait_for(timeout=120_000)
            assert _button(player, "Pause Video").is_enabled()

            box = player.get_by_placeholder("Type a message; it is read at the current video time")
            box.fill("Which shape is it?")
            _button(player, "Send").click()
            mine = player.locator(".duet-chat .duet-user", has_text="Which shape is it?")
            mine.wait_for(timeout=30_000)
            stamp = mine.inner_text()
            assert "[time=" in stamp and "[time=0.0s]" not in stamp  # read mid-video, not at the start
            time.sleep(8)  # more frames, so the screenshot shows the stream going on after the message

            chat = player.locator(".duet-chat").inner_text()
            assert chat.count("[time=") >= 3, chat
            images = player.locator("img.widget-image")
            assert images.count() >= 2  # the current frame and the score plot
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            player.screenshot(path=str(SCREENSHOT))
            _button(player, "Stop Video").click()
            playwright.expect(start).to_be_enabled(timeout=10_000)
            assert not page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
                                    has_text="Traceback").count()
        except Exception:
            page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            shutil.copy(tmp_path / "failure.png", ROOT / "reports" / "01_demo_player_failure.png")
            raise
        finally:
            browser.close()
    assert SCREENSHOT.stat().st_size > 20_000
