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
    "executed/01_gradient_check.html": (6, 0),  # Table 1 (4-layer), 2-, 3-, 9-layer, overview, recheck
    "executed/02_bn_ablation.html": (3, 3),  # recipe, Table 2, all runs; LR schedule, 2 x curves
    "executed/03_lambda_search.html": (3, 1),  # Tables 3 and 4, the chosen lambda over seeds; plot
    "executed/04_sigma_sensitivity.html": (2, 2),  # Table 5, all runs; 3- and 9-layer curves
    # best runs, ablation, per class, literature, all runs; curves, Pareto front, confusion
    "executed/06_pushing_the_mlp.html": (5, 3),
    "summary.html": (1, 0),
    "provenance.html": (2, 0),  # the chapters of this build, its environment
    "references.html": (0, 0),
}
CAPTIONS = {  # words each chapter's own table captions must show
    "executed/01_gradient_check.html": ["Table 1."],
    "executed/02_bn_ablation.html": ["Table 2."],
    "executed/03_lambda_search.html": ["Table 3.", "Table 4."],
    "executed/04_sigma_sensitivity.html": ["Table 5."],
    "executed/06_pushing_the_mlp.html": ["Ablation.", "Per-class test accuracy"],
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
        assert img.get("alt") and not img["alt"].endswith(".png"), f"{page}: no alt text"
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


@pytest.mark.parametrize("page", [p for p in PAGES if p.startswith("executed/") or p == "summary.html"])
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


@pytest.mark.parametrize("page", PAGES)
def test_tables_have_no_row_numbers(built_book, page):
    """No pandas index: every header cell names a column, no row starts with a number
    header (<th>0</th>) the way DataFrame._repr_html_ writes one."""
    for table in article(built_book.html, page).find_all("table"):
        heads = [th.get_text(strip=True) for th in table.find("thead").find_all("th")]
        assert all(heads), f"{page}: an unnamed column {heads}"
        assert not table.find("tbody").find_all("th"), f"{page}: row headers (an index)"


def test_no_file_of_the_site_contains_a_path_of_the_build_machine(built_book):
    """Not the build folder, not the source tree kbn runs from, in any page, notebook
    source or data file of the site."""
    from book_fixtures import PROJECT

    paths = {str(built_book.root), str(built_book.root.resolve()), str(PROJECT)}
    hits = []
    for f in built_book.html.rglob("*"):
        if f.is_file() and "mathjax" not in f.parts and f.suffix in (
                ".html", ".ipynb", ".txt", ".js", ".csv", ".json", ".md"):
            text = f.read_text(encoding="utf-8", errors="replace")
            hits += [f"{f.relative_to(built_book.html)}: {p}" for p in paths if p in text]
    assert not hits


def test_citations_link_to_the_references(built_book):
    refs = article(built_book.html, "references.html")
    entries = refs.find_all(["dt", "div", "li"], id=True)
    text = refs.get_text(" ")
    for author in ("Ioffe", "Smith", "He", "Glorot", "Krizhevsky", "DD2424"):
        assert author in text, author
    assert entries
    for page in ("intro.html", "executed/04_sigma_sensitivity.html"):
        links = [a["href"] for a in article(built_book.html, page).find_all("a", href=True)
                 if "references.html#" in a["href"]]
        assert links, f"{page}: no citation"


def test_the_provenance_page_shows_what_ran_and_links_the_data(built_book):
    doc = article(built_book.html, "provenance.html")
    chapters, environment = doc.find_all("table")
    rows = chapters.find("tbody").find_all("tr")
    assert [r.find("td").get_text(strip=True) for r in rows] == list(
        p.split("/")[1].removesuffix(".html") for p in PAGES if p.startswith("executed/"))
    for r in rows:
        assert "executed in this build" in r.get_text() and r.find("a", href=True)
    text = environment.get_text(" ")
    for word in ("kbn", "numpy", "BLAS", "checksum", "cores", "smoke build"):
        assert word in text, word
    record = built_book.record()
    assert record["data_checksum"] in text and record["environment"]["numpy"] in text
    downloads = {a.get_text(strip=True): a["href"] for a in doc.find_all("a", href=True)
                 if a["href"].endswith(".csv")}
    assert set(downloads) == {"runs.csv", "histories.csv"}
    for href in downloads.values():
        assert (built_book.html / href).stat().st_size > 100
