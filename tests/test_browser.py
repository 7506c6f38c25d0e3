"""Opens the smoke-built book in headless Chromium: every chapter's figures load, no page
shows error text, and the browser logs no error for our pages.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them); skipped
with a reason when they are missing, like the other tests that need the real data.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import tempfile
import threading

import pytest
from book_fixtures import PAGES

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
)

ERROR_WORDS = ("Traceback", "Error:", "NameError", "KeyError", "ValueError",
               "Could not find", "glue key")


@pytest.fixture(scope="module")
def site(built_book):
    """The built HTML served on 127.0.0.1 (as a user's browser would load it)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler,
                                directory=str(built_book.html))

    class Quiet(http.server.ThreadingHTTPServer):
        def handle_error(self, request, client_address):  # browser aborts are not errors
            pass

    handler.log_message = lambda *a, **k: None
    server = Quiet(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # the flags this machine's closed network needs (no background connections)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="kbn-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _load(browser, url):
    browser.get(url)
    browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "const imgs = Array.from(document.images);"
        "Promise.all(imgs.map(i => i.complete ? null : new Promise(r => {"
        "  i.addEventListener('load', r); i.addEventListener('error', r); })))"
        ".then(() => done());")


@pytest.mark.parametrize("page", PAGES)
def test_figures_load_and_no_error_text(browser, site, page):
    _load(browser, f"{site}/{page}")
    figures = browser.execute_script(
        "return Array.from(document.querySelectorAll('main figure img')).map(i => "
        "({src: i.currentSrc, w: i.naturalWidth, h: i.naturalHeight}));")
    for fig in figures:
        assert fig["w"] > 0 and fig["h"] > 0, f"{page}: figure {fig['src']} did not load"
    text = browser.execute_script("return (document.querySelector('main') || document.body).innerText;")
    assert text.strip(), f"{page} is empty"
    for word in ERROR_WORDS:
        assert word not in text, f"{page} shows {word!r}"
    severe = [e for e in browser.get_log("browser")
              if e["level"] == "SEVERE" and site in e.get("message", "")]
    assert not severe, f"{page}: browser errors {severe}"


def test_chapters_have_their_figures(browser, site):
    counts = {}
    for page in PAGES:
        _load(browser, f"{site}/{page}")
        counts[page] = browser.execute_script(
            "return document.querySelectorAll('main figure img').length;")
    for chapter in ("02_bn_ablation", "03_lambda_search", "04_sigma_sensitivity"):
        assert counts[f"executed/{chapter}.html"] >= 1, counts
