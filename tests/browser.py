"""A real browser for the tests: Debian's headless Chromium, driven through its ChromeDriver.

``browser`` (a pytest fixture in the tests that use it) opens pages in a fresh profile with
the flags this machine needs (no sandbox as root, no GPU, no background network traffic: the
closed network refuses Chromium's own connections), reads the page's console, and saves
screenshots. Nothing is downloaded: Chromium and ChromeDriver are Debian's packages
(``make test`` installs them where it can, see the Makefile's ``apt-deps``); without them the
browser tests are skipped, saying why.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1400,1000", "--hide-scrollbars",
)  # fmt: skip


def missing() -> str | None:
    """Why the browser tests cannot run here (None: they can)."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).is_file():
            return f"{path} is not installed (Debian's chromium and chromium-driver: make apt-deps)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (requirements-dev.lock)"
    return None


class Browser:
    """One headless Chromium session."""

    def __init__(self, profile: Path) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={profile}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
        self.driver.set_page_load_timeout(60)

    def open(self, url: str) -> None:
        self.driver.get(url)

    def run(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def wait_for(self, check: Callable[[], Any], timeout_s: float = 30.0, what: str = "") -> Any:
        """Poll ``check()`` until it returns something true; fail after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s} s waiting for {what or check}")
            time.sleep(0.2)

    def console_errors(self) -> list[str]:
        """The console's errors (and failed loads) since the last call."""
        return [e["message"] for e in self.driver.get_log("browser") if e["level"] == "SEVERE"]

    def screenshot(self, path: Path, full_page: bool = True) -> Path:
        """A PNG of the page (the whole page's height when ``full_page``)."""
        if full_page:
            height = int(self.run("return document.documentElement.scrollHeight"))
            self.driver.set_window_size(1400, min(max(height, 600), 12000))
        self.driver.save_screenshot(str(path))
        print(f"screenshot: {path}")
        return path

    def close(self) -> None:
        self.driver.quit()


#: Set to 1 to skip the browser tests where Chromium cannot be installed (no root, no apt):
#: without it a missing browser fails them, since `make test` installs it (CI runs as root).
ALLOW_NO_BROWSER = "PCM_TWIN_ALLOW_NO_BROWSER"


@pytest.fixture
def browser():
    """A fresh headless Chromium. A missing one fails the test (``make test`` installs it)
    unless ``PCM_TWIN_ALLOW_NO_BROWSER=1`` says this machine cannot have it."""
    why = missing()
    if why:
        if os.environ.get(ALLOW_NO_BROWSER) == "1":
            pytest.skip(f"{why}; {ALLOW_NO_BROWSER}=1")
        pytest.fail(f"{why}; set {ALLOW_NO_BROWSER}=1 to skip the browser tests here")
    profile = Path(tempfile.mkdtemp(prefix="pcm-twin-chromium-"))
    b = Browser(profile)
    try:
        yield b
    finally:
        b.close()
        shutil.rmtree(profile, ignore_errors=True)


#: JavaScript: per plotly graph on the page, its id and how many traces and drawn points it has.
PLOTS_JS = """
return Array.from(document.querySelectorAll('.js-plotly-plot')).map(function (el) {
  var points = el.querySelectorAll('.point, .trace path, .bars path, .scatterlayer path').length;
  return {id: el.id, traces: (el.data || []).length, drawn: points,
          width: el.getBoundingClientRect().width, height: el.getBoundingClientRect().height};
});
"""
