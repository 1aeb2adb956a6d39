"""Opening a report in headless Chromium through Selenium, for tests and screenshots.

The report promises to load nothing from the network and to run cleanly in a
real browser; ``test_report_browser.py`` and ``scripts/make_screenshot.py``
check that here.  Selenium drives Debian's Chromium through Debian's
``chromedriver`` (``apt-get install chromium chromium-driver``), both named by
path, so Selenium never looks for a driver to download.

Chromium's own logs give what a page did: the browser log holds console
errors, uncaught exceptions and failed loads; the performance log holds every
network request.  Each :meth:`Browser.open` drains both before loading, so a
:class:`Page` describes one page load only.

Example:
    >>> with Browser() as browser:
    ...     page = browser.open(file_url("/tmp/report.html"), width=1200)
    ...     assert not page.errors and page.requests == [page.url]
    ...     png = page.screenshot(max_height=2400)
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path

#: Where Chromium usually is: Debian's path first, then names found on PATH.
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome",
                       "google-chrome-stable")
#: Where its driver usually is.
DRIVER_CANDIDATES = ("/usr/bin/chromedriver", "chromedriver")
#: Flags for a quiet, offline, throw-away browser.  ``--no-sandbox`` because CI
#: containers run as root, where Chromium's sandbox refuses to start.
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--disable-quic", "--no-first-run",
    "--no-default-browser-check", "--mute-audio", "--hide-scrollbars",
    "--force-device-scale-factor=1",
    # Nothing a page could ask for resolves: a stray request shows up in the
    # check instead of reaching the internet.
    "--host-resolver-rules=MAP * ~NOTFOUND",
)


class BrowserError(RuntimeError):
    """Chromium or its driver could not be found or started."""


def _find(candidates) -> str | None:
    for candidate in candidates:
        if os.path.isabs(candidate):
            if os.access(candidate, os.X_OK):
                return candidate
        else:
            found = shutil.which(candidate)
            if found:
                return found
    return None


def find_chromium() -> str | None:
    """The path of a Chromium (or Chrome) and of its driver, or None if either is missing."""
    browser, driver = _find(CHROMIUM_CANDIDATES), _find(DRIVER_CANDIDATES)
    return browser if browser and driver else None


def file_url(path) -> str:
    """The ``file://`` URL of a local file."""
    return Path(path).resolve().as_uri()


class Page:
    """One page load: what it logged and requested, and ways to look at it.

    Attributes:
        url: The URL that was opened.
        errors: Console errors, uncaught exceptions and failed loads, as Chromium
            logged them (its browser log at level SEVERE).
        requests: Every URL the page requested, the document itself included;
            ``data:`` URIs carry their content inline and are not counted.
    """

    def __init__(self, browser: "Browser", url: str, errors: list, requests: list):
        self._driver = browser.driver
        self.url, self.errors, self.requests = url, errors, requests

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page."""
        return self._driver.execute_script(f"return ({expression});")

    def screenshot(self, max_height: int | None = None) -> bytes:
        """A PNG of the page from its top, its whole height or at most ``max_height`` pixels."""
        width, height = self.evaluate(
            "[document.documentElement.clientWidth, document.documentElement.scrollHeight]")
        if max_height is not None:
            height = min(height, max_height)
        shot = self._driver.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}})
        return base64.b64decode(shot["data"])

    def close(self) -> None:
        """Leave the page (the browser stays open for the next one)."""
        self._driver.get("about:blank")


class Browser:
    """A headless Chromium driven by Selenium, ended when its ``with`` block exits."""

    def __init__(self, executable: str | None = None, timeout: float = 30.0):
        self.executable = executable or _find(CHROMIUM_CANDIDATES)
        self.driver_path = _find(DRIVER_CANDIDATES)
        self.timeout = timeout
        self.driver = None

    def __enter__(self) -> "Browser":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def start(self) -> None:
        if self.executable is None or self.driver_path is None:
            raise BrowserError(
                "Chromium and chromedriver are needed: install them with "
                "'apt-get install chromium chromium-driver'.")
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = self.executable
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        self.driver = webdriver.Chrome(service=Service(executable_path=self.driver_path),
                                       options=options)
        self.driver.set_page_load_timeout(self.timeout)
        self.driver.set_script_timeout(self.timeout)

    def _drain(self) -> tuple:
        browser_log = self.driver.get_log("browser")
        performance_log = self.driver.get_log("performance")
        return browser_log, performance_log

    def open(self, url: str, width: int = 1200, height: int = 900, mobile: bool = False) -> Page:
        """Load ``url`` in a ``width`` x ``height`` viewport and return what it did."""
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})
        self.driver.get("about:blank")
        self._drain()
        self.driver.get(url)
        browser_log, performance_log = self._drain()
        errors = [entry["message"] for entry in browser_log if entry.get("level") == "SEVERE"]
        requests = []
        for entry in performance_log:
            message = json.loads(entry["message"])["message"]
            if message.get("method") == "Network.requestWillBeSent":
                requested = message["params"]["request"]["url"]
                if not requested.startswith("data:"):
                    requests.append(requested)
        return Page(self, url, errors, requests)

    def close(self) -> None:
        if self.driver is not None:
            self.driver.quit()
            self.driver = None
