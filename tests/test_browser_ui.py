"""JupyterLab and the feature browser in a real browser (headless Chromium through Selenium; slow, ``make test-all``).

Needs Debian's ``chromium`` and ``chromium-driver`` (``make browser-deps``); skipped with that hint where they are
missing. Screenshots are saved in the run folder's ``screenshots/``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="no chromium / chromedriver: run make browser-deps"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def driver():
    from paper_lib.browser.screenshot import chrome

    browser = chrome()
    yield browser
    browser.quit()


def _screenshots() -> Path:
    folder = Path(os.environ["PAPER_RUNS_DIR"]) / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _wait(condition, timeout: float, what: str, step: float = 1.0):
    end = time.time() + timeout
    while time.time() < end:
        found = condition()
        if found:
            return found
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_jupyterlab_runs_notebook_01_on_smoke_through_the_ui(driver, tmp_path):
    """JupyterLab on localhost with a token; notebook 01 opened, Run > Run All Cells clicked; every cell runs
    without an error output and the training curve renders as an image."""
    from selenium.webdriver.common.by import By

    folder = tmp_path / "notebooks"
    folder.mkdir()
    shutil.copy(PROJECT_ROOT / "notebooks" / "01_training.ipynb", folder)
    # Every cell stays in the page (JupyterLab 4 drops off-screen cells by default), so the checks see all outputs.
    settings = tmp_path / "settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    (settings / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    port, token = _free_port(), "feature-tracking-test"
    # The tests' Agg backend would keep figures out of the page; a reader's kernel draws them inline.
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={folder}", "--ServerApp.open_browser=False",
         f"--LabApp.user_settings_dir={tmp_path / 'settings'}", *(["--allow-root"] if os.geteuid() == 0 else [])],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/lab/tree/01_training.ipynb?token={token}"
        _wait(lambda: _reachable(port), 60, "JupyterLab to listen")
        driver.get(url)
        _wait(lambda: driver.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell"), 90, "the notebook's cells")
        _wait(lambda: "Idle" in driver.find_element(By.CSS_SELECTOR, ".jp-StatusBar-Widget, body").text
              or driver.find_elements(By.CSS_SELECTOR, ".jp-Notebook-ExecutionIndicator[data-status='idle']"),
              120, "the kernel to start")
        driver.find_element(By.XPATH, "//div[contains(@class, 'lm-MenuBar-itemLabel') and text()='Run']").click()
        item = "//li[contains(@class, 'lm-Menu-item')][.//div[contains(@class, 'lm-Menu-itemLabel') and text()='Run All Cells']]"
        _wait(lambda: driver.find_elements(By.XPATH, item), 20, "the Run menu")[0].click()
        n_code = len(driver.find_elements(By.CSS_SELECTOR, ".jp-CodeCell"))

        def finished():
            prompts = [p.text for p in driver.find_elements(By.CSS_SELECTOR, ".jp-CodeCell .jp-InputPrompt")]
            return len(prompts) == n_code and all(p.strip() not in ("[ ]:", "[*]:", "") for p in prompts)

        try:
            _wait(finished, 600, "every code cell to run", step=2.0)
        finally:  # on a timeout too: the picture shows where the run stood
            driver.save_screenshot(str(_screenshots() / "jupyterlab_01_training.png"))
        errors = driver.find_elements(By.CSS_SELECTOR, "[data-mime-type='application/vnd.jupyter.error']")
        assert not errors, errors[0].text[:2000]
        images = driver.find_elements(By.CSS_SELECTOR, ".jp-RenderedImage img")
        assert images and images[0].size["width"] > 100  # the training curve, rendered
    finally:
        server.terminate()
        server.wait(timeout=30)


def _reachable(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_the_feature_browser_follows_a_match_to_its_partner(driver, smoke_cfg):
    """The smoke run's site, served on localhost: a match link on BabyPython's page opens the partner's model page
    at the partner feature, whose own links lead back to BabyPython."""
    from selenium.webdriver.common.by import By

    from paper_lib.browser import site_dir
    from paper_lib.browser.screenshot import screenshot, served

    path = site_dir(smoke_cfg)
    with served(path) as url:
        driver.get(f"{url}/babypython.html")
        links = driver.find_elements(By.CSS_SELECTOR, "section.feat a[href^='lua.html#f']")
        assert links, "no BabyPython feature links to a Lua feature"
        target = links[0].get_attribute("href").split("#f")[1]
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", links[0])  # clear of the sticky filter
        links[0].click()
        _wait(lambda: driver.current_url.endswith(f"lua.html#f{target}"), 20, "the Lua page")
        section = driver.find_element(By.ID, f"f{target}")
        assert section.find_element(By.TAG_NAME, "h3").text.startswith(f"#{target}")
        assert section.find_elements(By.CSS_SELECTOR, "a[href^='babypython.html#f']"), "no link back to BabyPython"
        driver.save_screenshot(str(_screenshots() / "browser_lua_partner.png"))
        driver.get(f"{url}/babypython.html")
        sections = driver.find_elements(By.CSS_SELECTOR, "section.feat")
        word = "kept" if "kept" in sections[0].get_attribute("data-text") else "disappearing"
        expected = sum(word in s.get_attribute("data-text") for s in sections)
        driver.find_element(By.ID, "q").send_keys(word)
        shown = [s for s in sections if s.is_displayed()]
        assert len(shown) == expected > 0 and all(word in s.get_attribute("data-text") for s in shown)
        driver.save_screenshot(str(_screenshots() / "browser_babypython.png"))
    out = screenshot(path, _screenshots() / "browser_lua_page.png")  # the helper README's picture is made with
    assert out.stat().st_size > 10_000
