"""Screenshots of a built feature browser in headless Chromium (Selenium, the ``dev`` extra; Debian's ``chromium`` and
``chromium-driver``: ``make browser-deps``). README's picture of the site is made with it:

    python -m paper_lib.browser --profile cpu --screenshot figures/browser.png
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

# Chromium's own network traffic (updates, sync, field trials) is switched off: the pages need none, and on a closed
# network it only produces refused connections.
CHROMIUM_ARGS = ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run")


class BrowserMissing(RuntimeError):
    """No Chromium, ChromeDriver or Selenium here."""


def chrome(width: int = 1400, height: int = 1000):
    """A headless Chromium driven by Selenium; the caller quits it."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as err:
        raise BrowserMissing("selenium is not installed: pip install -e '.[dev]'") from err
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (binary and driver):
        raise BrowserMissing("no chromium / chromedriver on PATH: run `make browser-deps`")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in (*CHROMIUM_ARGS, f"--window-size={width},{height}"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=options)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the caller's output clean
        pass


@contextlib.contextmanager
def served(path: Path) -> Iterator[str]:
    """Serve ``path`` on a free localhost port for the duration; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def screenshot(site: Path, out: Path, page: str = "lua.html", width: int = 1400, height: int = 1000) -> Path:
    """A PNG of one page of the site as a reader first sees it (top of the page, window ``width`` x ``height``)."""
    if not (Path(site) / page).is_file():
        raise FileNotFoundError(f"{site} has no {page}: build the site first (python -m paper_lib.browser)")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    browser = chrome(width, height)
    try:
        with served(Path(site)) as url:
            browser.get(f"{url}/{page}")
            tmp = out.with_name(f".{out.name}.tmp.png")
            if not browser.save_screenshot(str(tmp)):
                raise RuntimeError(f"Chromium could not save a screenshot of {page}")
            tmp.replace(out)  # atomic: a failed run leaves the old picture
    finally:
        browser.quit()
    return out
