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
    # Table 5, the lambda race, Table 5b (9-layer), all runs; 3- and 9-layer curves, the race
    "executed/04_sigma_sensitivity.html": (4, 3),
    # best runs, ablation, per class, literature, all runs; curves, Pareto front, confusion
    "executed/06_pushing_the_mlp.html": (5, 3),
    "summary.html": (4, 0),  # Table 1, Table 2 and its text, Tables 3-4, Table 5
    # drift, gradients, landscape, learning rate, placement, inference, batch size, all runs;
    # activations, gradients, landscape, learning rate, mode gap, batch size
    "executed/05_how_bn_helps.html": (8, 6),
    "provenance.html": (2, 0),  # the chapters of this build, its environment
    "references.html": (0, 0),
}
CAPTIONS = {  # words each chapter's own table captions must show
    "executed/01_gradient_check.html": ["Table 1."],
    "executed/02_bn_ablation.html": ["Table 2."],
    "executed/03_lambda_search.html": ["Table 3.", "Table 4."],
    "executed/04_sigma_sensitivity.html": ["Table 5.", "Table 5b."],
    "executed/06_pushing_the_mlp.html": ["Ablation.", "Per-class test accuracy"],
    "executed/05_how_bn_helps.html": ["Drift of the ReLU inputs.", "Gradient ratio",
                                      "Test accuracy (%) per η_max"],
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


def _summary_rows(built_book) -> dict[str, list]:
    """{first cell: [its cells]} over every table of the summary page."""
    rows = {}
    for table in article(built_book.html, "summary.html").find_all("table"):
        for tr in table.find("tbody").find_all("tr"):
            cells = tr.find_all("td")
            rows[cells[0].get_text(" ", strip=True).replace("’", "'")] = cells
    return rows


def _glued(cell) -> str:
    spans = cell.find_all("span", class_="pasted-text")
    assert len(spans) == 1, f"not one glued value: {cell}"
    return spans[0].get_text().strip()


def _runs(built_book, chapter: str):
    import pandas as pd

    runs = pd.read_csv(built_book.executed / "results" / f"{chapter}_runs.csv")
    return runs.assign(test=100 * runs["test_accuracy"], val=100 * runs["final_val_accuracy"])


def _mean(runs, **where) -> float:
    import numpy as np

    m = np.ones(len(runs), bool)
    for column, value in where.items():
        m &= np.isclose(runs[column], value) if isinstance(value, float) else (runs[column] == value)
    assert m.any(), where
    return float(runs[m]["test"].mean())


def _recomputed(built_book) -> dict[str, tuple[float, float]]:
    """{summary row: (the original's value, ours recomputed from the per-run results)}: every
    'Ours' the summary shows, from the chapters' runs CSV (or, for the gradient check, its
    rows), without any of the chapters' own summary code."""
    import json

    from kbn.experiments.reference import REFERENCE as R

    out = {}
    ab = _runs(built_book, "bn_ablation")
    nets = {3: "[50, 50]", 9: "[50, 30, 20, 10, 10, 10, 10, 10]"}
    m = {(k, bn): _mean(ab, hidden=h, batch_norm=bn) for k, h in nets.items() for bn in (False, True)}
    for k in (3, 9):
        for bn, lab in ((False, "no BN"), (True, "BN")):
            key = f"ablation_{k}_{'bn' if bn else 'nobn'}"
            out[f"{k}-layer, {lab}: test accuracy (%)"] = (R[key], m[(k, bn)])
        out[f"{k}-layer: BN gain (points)"] = (R[f"ablation_{k}_bn"] - R[f"ablation_{k}_nobn"],
                                               m[(k, True)] - m[(k, False)])
    out["the text: no BN, 3 → 9 layers, relative drop in test accuracy (%)"] = (
        R["text_depth_drop_nobn_pct"], 100 * (m[(3, False)] - m[(9, False)]) / m[(3, False)])
    out["the text: 3-layer BN gain (points)"] = (R["text_gain_3"], m[(3, True)] - m[(3, False)])

    ls = _runs(built_book, "lambda_search")
    saved = json.loads((built_book.executed / "results" / "lambda_search.json").read_text())
    search_seed = saved["parameters"]["seed"]
    trials = ls[ls["seed"] == search_seed].reset_index(drop=True)  # in the order drawn
    coarse = trials.iloc[:saved["search_config"]["n_coarse"]]
    best_coarse, best = coarse.loc[coarse["val"].idxmax()], trials.loc[trials["val"].idxmax()]
    fresh = ls[ls["seed"] != search_seed]
    out["best coarse λ"] = (R["coarse_best_lambda"], best_coarse["lam"])
    out["best coarse λ: test accuracy (%)"] = (R["coarse_best_test"], best_coarse["test"])
    out["best fine λ"] = (R["best_lambda"], best["lam"])
    out["best λ: test accuracy (%)"] = (R["best_lambda_test"], _mean(fresh, lam=float(best["lam"])))
    out["the original's λ: test accuracy (%)"] = (R["best_lambda_test"],
                                                 _mean(fresh, lam=R["best_lambda"]))
    out["trials in the search"] = (R["search_n_trials"], len(trials))

    sz = _runs(built_book, "sigma_sensitivity")
    for sigma in ("1e-1", "1e-3", "1e-4"):
        for bn, lab in ((False, "no BN"), (True, "BN")):
            out[f"σ = {sigma}, {lab}: test accuracy (%)"] = (
                R[f"sigma_{sigma}_{'bn' if bn else 'nobn'}"],
                _mean(sz, hidden="[50, 50]", init="sigma", sigma=float(sigma), batch_norm=bn,
                      lam=R["sigma_lambda"]))
    deep_lam = json.loads((built_book.executed / "results" / "sigma_sensitivity.json").read_text())
    out["9-layer, no BN, σ = 0.1 in every layer: test accuracy (%), against Table 2"] = (
        R["ablation_9_nobn"], _mean(sz, hidden=nets[9], init="sigma", sigma=0.1, batch_norm=False,
                                    lam=float(deep_lam["parameters"]["deep_lam"])))

    gc = json.loads((built_book.executed / "results" / "gradient_check.json").read_text())
    near = {(r["architecture"], r["batch_norm"]) for r in gc["summary"] if r["near_kink"]}
    rows = [r for r in gc["rows"] if (r["architecture"], r["batch_norm"]) not in near]
    rows += gc["recheck"]
    for k, name in ((2, "2-layer [50]"), (3, "3-layer [50, 50]"), (4, "4-layer [50, 50, 50]")):
        for bn, lab in ((False, "no BN"), (True, "BN")):
            worst = max(r["max_rel_error"] for r in rows
                        if r["n_layers"] == k and r["batch_norm"] == bn and not r["zero_gradient"])
            out[f"{name}, {lab}"] = (R["gradcheck_max_rel_error"], worst)
    return out


def _digits(text: str) -> float:
    """Half a unit of the last digit shown: how far a shown value may be from the true one."""
    mantissa = text.replace("−", "-").split("e")[0]
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    scale = 10 ** int(text.split("e")[1]) if "e" in text else 1
    return 0.5 * 10 ** -decimals * scale


def test_every_summary_value_is_the_one_recomputed_from_the_runs(built_book):
    """Row by row: the original's value is REFERENCE's for that row (not any reference
    number), ours is what the per-run results give, and the difference is ours minus the
    original's, each to the precision shown."""
    rows, expected = _summary_rows(built_book), _recomputed(built_book)
    assert set(expected) <= set(rows), set(expected) - set(rows)
    for name, (original, ours) in expected.items():
        cells = rows[name]
        shown_orig, shown_ours = _glued(cells[1]), _glued(cells[2])
        assert abs(_number(shown_orig) - original) <= _digits(shown_orig) + 1e-12, (name, shown_orig, original)
        assert abs(_number(shown_ours) - ours) <= _digits(shown_ours) * 1.0001 + 1e-12, (name, shown_ours, ours)
        if len(cells) == 6 and cells[4].find("span", class_="pasted-text"):
            shown = _glued(cells[4])
            if name in ("best coarse λ", "best fine λ"):  # in decades
                import math as _m
                want = _m.log10(ours / original)
            else:
                want = ours - original
            assert abs(_number(shown) - want) <= 2 * _digits(shown) * 1.0001 + 1e-12, (name, shown, want)
        assert cells[-1].get_text(strip=True), f"{name}: empty assessment"
    # the range of the trials: ours from the runs, the original's said to be unknown
    rng = rows["test accuracy over the trials"]
    assert _glued(rng[1]) == "not recorded" and "not recorded" in rng[-1].get_text()
    lo, hi = re.match(r"([\d.]+)–([\d.]+) %", _glued(rng[2])).groups()
    ls = _runs(built_book, "lambda_search")
    trials = ls[ls["seed"] == 0]
    assert (float(lo), float(hi)) == (round(trials["test"].min(), 2), round(trials["test"].max(), 2))


def test_every_original_number_is_in_the_summary(built_book):
    """Each value of REFERENCE appears in the summary, in the row that is about it."""
    from kbn.experiments.reference import REFERENCE

    shown = {_number(_glued(cells[1])) for cells in _summary_rows(built_book).values()
             if _glued(cells[1]) != "not recorded"}
    for key, value in REFERENCE.items():
        assert any(math.isclose(value, v, rel_tol=1e-3) for v in shown), key


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
