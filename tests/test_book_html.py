"""Reads the smoke-built HTML book: every page, table, figure and glued number is there."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from bs4 import BeautifulSoup
from book_fixtures import PAGES

# tables (rendered DataFrames and Markdown tables) and figures expected on each page
EXPECTED = {
    "intro.html": (1, 0),  # the recipe (glued from chapter 2)
    "executed/01_gradient_check.html": (5, 0),  # Table 1 (4-layer), 2- and 3-layer, overview, recheck
    "executed/02_bn_ablation.html": (3, 3),  # recipe, Table 2, all runs; LR schedule, 2 x curves
    "executed/03_lambda_search.html": (3, 1),  # Tables 3 and 4, the chosen lambda over seeds; plot
    "executed/04_sigma_sensitivity.html": (2, 2),  # Table 5, all runs; 3- and 9-layer curves
    "summary.html": (1, 0),
}
CAPTIONS = {  # words each chapter's own table captions must show
    "executed/01_gradient_check.html": ["Table 1."],
    "executed/02_bn_ablation.html": ["Table 2."],
    "executed/03_lambda_search.html": ["Table 3.", "Table 4."],
    "executed/04_sigma_sensitivity.html": ["Table 5."],
}
ERROR_TEXT = re.compile(r"Traceback|\b[A-Za-z]*Error\b|Exception\b")


def article(html: Path, page: str):
    soup = BeautifulSoup((html / page).read_text(encoding="utf-8"), "html.parser")
    main = soup.find("main") or soup.body
    return main.find("article") or main


def test_every_page_is_built(built_book):
    assert set(EXPECTED) == set(PAGES)
    for page in PAGES:
        assert (built_book.html / page).is_file(), page
    assert (built_book.html / "index.html").is_file()


@pytest.mark.parametrize("page", PAGES)
def test_tables_and_figures_are_present(built_book, page):
    doc = article(built_book.html, page)
    n_tables, n_figures = EXPECTED[page]
    assert len(doc.find_all("table")) == n_tables
    figures = doc.find_all("figure")
    assert len(figures) == n_figures
    for fig in figures:
        img = fig.find("img")
        assert img is not None and img.get("src")
        src = (built_book.html / page).parent / img["src"]
        assert src.resolve().is_file() and src.stat().st_size > 1000, img["src"]
        caption = fig.find("figcaption")
        assert caption is not None and re.search(r"Fig\. \d+", caption.get_text()), caption
    for word in CAPTIONS.get(page, []):
        assert word in doc.get_text(), f"{page}: no {word!r}"


@pytest.mark.parametrize("page", PAGES)
def test_every_image_exists(built_book, page):
    doc = article(built_book.html, page)
    for img in doc.find_all("img"):
        assert ((built_book.html / page).parent / img["src"]).resolve().is_file(), img["src"]


@pytest.mark.parametrize("page", PAGES)
def test_no_error_text(built_book, page):
    text = article(built_book.html, page).get_text(" ")
    hit = ERROR_TEXT.search(text)
    assert hit is None, f"{page}: {text[max(0, hit.start() - 200):hit.end() + 200]!r}"


@pytest.mark.parametrize("page", [p for p in PAGES if p != "intro.html"])
def test_glued_values_are_filled_in(built_book, page):
    spans = article(built_book.html, page).find_all("span", class_="pasted-text")
    assert spans, f"{page}: no glued values"
    for s in spans:
        text = s.get_text().strip()
        assert text and text.lower() not in ("nan", "none", "inf", "-inf"), f"{page}: {text!r}"


def _number(text: str) -> float:
    return float(text.replace("−", "-").strip())


def test_summary_numbers_are_numbers(built_book):
    table = article(built_book.html, "summary.html").find("table")
    head = [th.get_text(" ", strip=True) for th in table.find("thead").find_all("th")]
    cols = [head.index(c) for c in ("Original", "Ours", "Difference")]
    rows = table.find("tbody").find_all("tr")
    assert len(rows) >= 11
    for tr in rows:
        cells = tr.find_all("td")
        for i in cols:
            spans = cells[i].find_all("span", class_="pasted-text")
            assert len(spans) == 1, f"{head[i]} of {cells[0].get_text()!r} is not glued"
            value = _number(spans[0].get_text())
            assert math.isfinite(value), f"{head[i]} of {cells[0].get_text()!r}: {value}"
        assert cells[-1].get_text(strip=True), "empty assessment"


def test_summary_sets_each_reference_value_beside_ours(built_book):
    from kbn.experiments.reference import REFERENCE

    table = article(built_book.html, "summary.html").find("table")
    originals = [_number(tr.find_all("td")[2].get_text()) for tr in table.find("tbody").find_all("tr")]
    for key, value in REFERENCE.items():
        assert any(math.isclose(value, o, rel_tol=0.02) for o in originals), key
