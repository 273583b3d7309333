"""The demo notebook in a real browser: JupyterLab on a loopback port, Debian's Chromium driven by Playwright.

Runs all cells of `01_demo.ipynb` (its short-video parameters injected, as papermill does, so the run takes about
a minute on a CPU), waits until every cell has run, then presses Start in the player, waits for the model's
replies in the chat, sends a message while the video plays, and moves the grounding explorer's threshold: the
metric it shows changes to what the evaluator gives for the new setting. Screenshots of the player and the
explorer go to `outputs/browser/` (not under git). `make test` installs Chromium when it is missing
(`make browser`); elsewhere the test skips saying what is missing.

Waiting for the whole notebook before pressing Start is what keeps the test independent of machine load: while a
cell runs, the kernel reads no widget event, so a click sent earlier would only be queued.
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
SHOTS = ROOT / "outputs" / "browser"  # git-ignored
NOTEBOOK_TIMEOUT_MS = 900_000  # the whole notebook under heavy load (about a minute on an idle CPU)


def _chromium() -> str:
    found = os.environ.get("MMDUET_CHROMIUM") or next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)
    if not found:
        pytest.skip("needs a Chromium browser (Debian: apt-get install chromium; `make browser` does it)")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _parameterized_copy(work, parameters: dict) -> None:
    """notebooks/ copied into `work`, the demo notebook with `parameters` injected after its parameters cell."""
    from papermill.iorw import load_notebook_node, write_ipynb
    from papermill.parameterize import parameterize_notebook

    shutil.copytree(ROOT / "notebooks", work / "notebooks")
    notebook = parameterize_notebook(load_notebook_node(str(ROOT / "notebooks" / "01_demo.ipynb")), parameters)
    write_ipynb(notebook, str(work / "notebooks" / "01_demo.ipynb"))


@pytest.fixture
def jupyterlab(tmp_path):
    """A JupyterLab server on a free loopback port with a token, serving a parameterized copy of notebooks/."""
    from mmduet_core.model.checkpoint import ASSETS

    work = tmp_path / "work"
    _parameterized_copy(work, {"VIDEO": str(ASSETS / "sample_toy.mp4"), "EXPLORE_QUERIES": 8, "EXPLORE_VIDEOS": 0,
                               "DATA_ROOT": str(tmp_path / "toyworld")})
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
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError as exc:
                if server.poll() is not None:
                    log_text = (tmp_path / "jupyterlab.log").read_text()[-2000:]
                    raise RuntimeError(f"JupyterLab exited: {log_text}") from exc
                if time.monotonic() > deadline:
                    raise RuntimeError("JupyterLab did not start within 180 s") from exc
                time.sleep(0.5)
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


ALL_CELLS_RUN = """() => {
  const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')].map(p => p.textContent);
  return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p));
}"""


def test_demo_player_and_explorer_in_jupyterlab(jupyterlab, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    chromium = _chromium()
    url, token, work = jupyterlab
    SHOTS.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        page.set_default_timeout(60_000)
        try:
            page.goto(f"{url}/lab/tree/notebooks/01_demo.ipynb?token={token}", wait_until="domcontentloaded")
            page.locator(".jp-Notebook").first.wait_for(timeout=180_000)
            page.get_by_text("Python (mmduet) | Idle").wait_for(timeout=180_000)  # the kernel is up
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
            # every code cell numbered: the whole notebook has run, the kernel reads widget events again
            page.wait_for_function(ALL_CELLS_RUN, timeout=NOTEBOOK_TIMEOUT_MS, polling=1000)
            notebook_s = time.monotonic() - started
            assert not page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
                                    has_text="Traceback").count()

            # -- the player
            player = page.locator(".duet-player")  # not the scripted session's static chat above it
            start = _button(player, "Start")
            start.scroll_into_view_if_needed()
            shown = player.locator("input[type='text']").first.input_value()
            assert shown.endswith(".mp4") and "/" not in shown  # a file name, no folders
            start.click()
            player.locator(".duet-chat .duet-assistant").first.wait_for(timeout=300_000)
            assert _button(player, "Pause Video").is_enabled()
            pace = player.locator(".duet-pace").filter(has_text="real time")  # on time, or saying it is behind
            pace.wait_for()
            box = player.get_by_placeholder("Type a message; it is read at the current video time")
            box.fill("Which shape is it?")
            _button(player, "Send").click()
            mine = player.locator(".duet-chat .duet-user", has_text="Which shape is it?")
            mine.wait_for(timeout=60_000)
            stamp = mine.inner_text()
            assert "[time=" in stamp and "[time=0.0s]" not in stamp  # read mid-video, not at the start
            time.sleep(5)  # more frames, so the screenshot shows the stream going on after the message
            chat = player.locator(".duet-chat").inner_text()
            assert chat.count("[time=") >= 3, chat
            assert player.locator("img.widget-image").count() >= 2  # the current frame and the score plot
            player.screenshot(path=str(SHOTS / "player.png"))
            print("player pace:", pace.inner_text())
            _button(player, "Stop Video").click()
            playwright.expect(start).to_be_enabled(timeout=60_000)

            # -- the grounding explorer: move the threshold, see the evaluator's number for the new setting
            explorer = page.locator(".policy-explorer").first
            explorer.scroll_into_view_if_needed()
            value = explorer.locator(".explorer-value[data-metric='mIoU']")
            before = value.inner_text()
            readout = explorer.locator(".widget-slider", has_text="Threshold").locator(".widget-readout")
            readout.click()
            page.keyboard.press("Control+A")
            page.keyboard.type("0.66")
            page.keyboard.press("Enter")
            playwright.expect(value).not_to_have_text(before, timeout=60_000)
            from mmduet_core.evaluation.grounding import evaluate_grounding

            out = work / "reports" / "01_demo"
            expected = evaluate_grounding(out / "explore_grounding.jsonl", tmp_path / "toyworld" / "annotations" /
                                          "test" / "grounding.json", 6, 0.66, coverage="predictions")
            playwright.expect(value).to_have_text(f"{expected['mIoU']:.2f}")
            assert "threshold 0.66" in explorer.locator(".explorer-note").inner_text()
            explorer.screenshot(path=str(SHOTS / "explorer.png"))
            assert not page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
                                    has_text="Traceback").count()
        except Exception:
            page.screenshot(path=str(SHOTS / "failure.png"), full_page=True)
            raise
        finally:
            browser.close()
    print(f"browser test: notebook ran in {notebook_s:.0f} s, whole test {time.monotonic() - started:.0f} s")
    assert (SHOTS / "player.png").stat().st_size > 20_000 and (SHOTS / "explorer.png").stat().st_size > 20_000
