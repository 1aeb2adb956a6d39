"""The HTML report in a real headless Chromium: it loads nothing, logs no error, renders.

Needs Chromium and chromedriver (``apt-get install chromium chromium-driver``),
driven through Selenium (see ``browser.py`` beside this file). Without them the
tests are skipped, except in CI (``CI=true``), where a missing browser is a
failure: the check must not silently stop running there.
"""

import os
import struct

import pytest

from gradadvisor.report.html import render_html
from browser import Browser, file_url, find_chromium
from test_report_html import EVIL, EXAMPLES, example_diagnoses, renamed

#: Seconds any single wait on the browser may take (start-up, a command, a page load).
TIMEOUT = 30


@pytest.fixture(scope="module")
def browser():
    executable = find_chromium()
    if executable is None:
        reason = ("No Chromium with chromedriver found; install them with "
                  "'apt-get install chromium chromium-driver' to check the report in a browser.")
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    with Browser(executable, timeout=TIMEOUT) as chromium:
        yield chromium


@pytest.fixture(scope="module")
def report_files(browser, tmp_path_factory):
    """``{example: path}`` of the rendered reports (after the browser check, so a
    machine without Chromium skips before probing any model)."""
    folder = tmp_path_factory.mktemp("reports")
    paths = {}
    for name, diagnosis in example_diagnoses().items():
        paths[name] = folder / f"{name}.html"
        paths[name].write_text(render_html(diagnosis), encoding="utf-8")
    return paths


def png_size(data: bytes) -> tuple:
    """Width and height from a PNG's header, checking that it is one."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize("name", EXAMPLES)
def test_report_loads_cleanly_and_renders(browser, report_files, tmp_path, name):
    page = browser.open(file_url(report_files[name]), width=1200, height=900)
    try:
        assert page.errors == []
        assert page.requests == [page.url]
        assert page.evaluate("document.querySelectorAll('script').length") == 0
        heights = page.evaluate(
            "Array.from(document.querySelectorAll('figure img'))"
            ".map(svg => svg.getBoundingClientRect().height)")
        assert len(heights) >= 2 and min(heights) > 150
        png = page.screenshot(max_height=4000)
    finally:
        page.close()
    (tmp_path / f"{name}.png").write_bytes(png)
    width, height = png_size(png)
    assert width == 1200 and height > 900 and len(png) > 20_000


def test_report_fits_a_phone_screen(browser, report_files):
    page = browser.open(file_url(report_files["deep-sigmoid"]), width=390, height=844,
                        mobile=True)
    try:
        # Wide charts and tables scroll inside their own boxes; the page itself does not.
        width, viewport = page.evaluate(
            "[document.documentElement.scrollWidth, window.innerWidth]")
        assert width <= viewport
        assert page.errors == []
    finally:
        page.close()


def test_hostile_layer_names_show_as_text(browser, tmp_path):
    diagnosis = renamed(example_diagnoses()["deep-sigmoid"], "dense_8", EVIL,
                        model_name="<img src=x onerror=alert(2)>")
    path = tmp_path / "hostile.html"
    path.write_text(render_html(diagnosis), encoding="utf-8")
    page = browser.open(file_url(path))
    try:
        assert page.errors == [] and page.requests == [page.url]
        assert page.evaluate("document.querySelectorAll('script').length") == 0
        assert page.evaluate("Array.from(document.images).every("
                             "i => i.src.startsWith('data:image/svg+xml;base64,'))")
        assert page.evaluate(f"document.body.innerText.includes({EVIL!r})")
    finally:
        page.close()


def test_the_check_catches_requests_errors_and_exceptions(browser, tmp_path):
    # A page that breaks every rule the report keeps: the checks above are not vacuous.
    path = tmp_path / "bad.html"
    path.write_text('<!doctype html><link rel="stylesheet" href="https://cdn.example.com/a.css">'
                    '<img src="http://example.com/a.png">'
                    '<script>console.error("boom"); notDefined();</script>', encoding="utf-8")
    page = browser.open(file_url(path))
    try:
        assert page.requests == [page.url, "https://cdn.example.com/a.css",
                                 "http://example.com/a.png"]
        assert any(error.endswith('"boom"') for error in page.errors)
        assert any("Uncaught ReferenceError: notDefined" in error for error in page.errors)
        assert any("net::ERR_NAME_NOT_RESOLVED" in error for error in page.errors)
    finally:
        page.close()
