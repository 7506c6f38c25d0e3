"""Opens the smoke-built book in headless Chromium with no network but the book's own
server: equations are typeset by the MathJax the site serves, every chapter's figures
load, no page shows error text or loads anything from elsewhere, and the browser logs no
error for our pages.

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
    # no background connections, and no network at all: every host name but the book's
    # server (127.0.0.1) fails to resolve, so a CDN cannot stand in for the site's own files
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                 "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=127.0.0.1"):
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
    for chapter in ("02_bn_ablation", "03_lambda_search", "04_sigma_sensitivity",
                    "05_how_bn_helps"):
        assert counts[f"executed/{chapter}.html"] >= 1, counts


MATH_PAGES = ("intro.html", "executed/01_gradient_check.html", "executed/02_bn_ablation.html")


def _typeset(browser):
    """Wait for MathJax (the site's copy) to finish; the number of typeset formulas (0 on
    a page without math, where Sphinx loads no MathJax)."""
    browser.set_script_timeout(60)
    return browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "if (!document.querySelector('script[src*=\"mathjax\"]')) { done(0); return; }"
        "const wait = () => (window.MathJax && MathJax.startup && MathJax.startup.promise)"
        "  ? MathJax.startup.promise.then(() => done(document.querySelectorAll("
        "      'mjx-container').length))"
        "  : setTimeout(wait, 100);"
        "wait();")


@pytest.mark.parametrize("page", MATH_PAGES)
def test_equations_are_typeset_offline(browser, site, page):
    _load(browser, f"{site}/{page}")
    n = _typeset(browser)
    assert n > 5, f"{page}: {n} typeset formulas"
    text = browser.execute_script("return document.querySelector('main').innerText;")
    for raw in ("\\(", "\\)", "$$", "\\frac", "\\lambda"):
        assert raw not in text, f"{page} shows raw LaTeX {raw!r}"
    mathjax = browser.execute_script(
        "return Array.from(document.scripts).map(s => s.src).filter(s => /mathjax/i.test(s));")
    assert mathjax and all(src.startswith(site) for src in mathjax), mathjax


@pytest.mark.parametrize("page", PAGES)
def test_nothing_is_loaded_from_outside_the_site(browser, site, page):
    _load(browser, f"{site}/{page}")
    _typeset(browser)
    outside = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
        ".filter(n => !n.startsWith(arguments[0]) && !n.startsWith('data:'));", site)
    assert not outside, f"{page} requested {outside}"
