"""The book's front door: the notebooks as committed, ``jupyter-book build book/`` in a fresh
copy of the repository (smoke mode), rebuilding, failing loudly, papermill by hand, and
the front ends (make report, kbn report, python -m kbn.report)."""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml
from book_fixtures import (CHAPTERS, PROJECT, closed_port, copy_built_book, copy_repo,
                           jupyter_book_build)

from kbn import report

NOTEBOOKS = PROJECT / "notebooks"
requires_data = pytest.mark.skipif(not os.environ.get("KBN_DATA_DIR"), reason="set KBN_DATA_DIR")


def module_of(name: str):
    return importlib.import_module(f"kbn.experiments.{name.split('_', 1)[1]}")


def parameters_cell(name: str, root: Path = PROJECT) -> tuple[int, str]:
    nb = nbformat.read(root / "notebooks" / f"{name}.ipynb", as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert "parameters" in cell.metadata.get("tags", []), f"{name}: first code cell untagged"
            return i, cell.source
    raise AssertionError(f"{name} has no code cell")


def parameters_of(name: str) -> dict:
    """The values assigned in a notebook's `parameters` cell."""
    scope: dict = {}
    exec(parameters_cell(name)[1], {}, scope)  # the cell only assigns literals
    return scope


# ---------------------------------------------------------------- the sources (fast)
@pytest.mark.parametrize("name", CHAPTERS)
def test_notebooks_are_committed_without_outputs(name):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name} has outputs"


@pytest.mark.parametrize("name", CHAPTERS)
def test_parameters_cell_is_the_chapter_parameters(name):
    """The notebook's parameters cell declares exactly the module's Parameters, with the
    same defaults, so from_notebook knows every name papermill can inject."""
    cell = parameters_of(name)
    params = module_of(name).Parameters
    recipe = set(getattr(params, "RECIPE", ()))
    # every parameter but the recipe, whose values are TrainConfig's defaults, kept in one place
    assert sorted(cell) == sorted(f.name for f in dataclasses.fields(params) if f.name not in recipe)
    assert params.from_values(**cell) == params()
    if recipe:  # ... and a recipe value papermill injects is still a known parameter
        from kbn.config import TrainConfig

        assert all(getattr(params(), r) == getattr(TrainConfig(), r) for r in recipe)
        assert params.from_notebook({**cell, "n_s": 100}).train_config().n_s == 100


@pytest.mark.parametrize("name", CHAPTERS)
def test_notebook_is_parameters_then_one_call_then_displays(name):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    module = name.split("_", 1)[1]
    assert code[1] == (f"from kbn.experiments import {module} as chapter\n\n"
                       "out = chapter.run(chapter.Parameters.from_notebook(globals()))")
    for src in code[2:-1]:
        assert src.startswith("out.show("), src
    assert code[-1].startswith("out.glue()")


def test_toc_and_config():
    toc = yaml.safe_load((PROJECT / "_toc.yml").read_text())
    files = [c["file"] for c in toc["chapters"]]
    assert toc["root"] == "intro"
    assert files == [*(f"executed/{c}" for c in CHAPTERS), "summary", "provenance", "references"]
    link = PROJECT / "book" / "_toc.yml"
    assert link.is_symlink() and link.resolve() == (PROJECT / "_toc.yml").resolve()
    cfg = yaml.safe_load((PROJECT / "_config.yml").read_text())
    assert cfg["execute"]["execute_notebooks"] == "off"  # papermill (the extension) executes
    assert cfg["sphinx"]["local_extensions"] == {"kbn_book": "book/_ext"}
    assert "sphinx-mathjax-offline" in cfg["sphinx"]["extra_extensions"]
    assert cfg["bibtex_bibfiles"] == ["references.bib"]
    for page in ("intro.md", "summary.md", "provenance.md", "references.md", "references.bib"):
        assert (PROJECT / "book" / page).is_file()


def test_every_citation_is_in_the_bibliography():
    bib = (PROJECT / "book" / "references.bib").read_text()
    keys = {line.split("{", 1)[1].rstrip(",\n") for line in bib.splitlines() if line.startswith("@")}
    assert {"ioffe2015batch", "smith2017cyclical", "he2015delving", "glorot2010understanding",
            "krizhevsky2009learning", "dd2424assignment3"} <= keys
    import re

    cited = set()
    for path in [*(PROJECT / "book").glob("*.md"), *NOTEBOOKS.glob("*.ipynb")]:
        cited |= set(re.findall(r"\{cite(?::\w+)?\}`([^`]+)`", path.read_text()))
    assert cited and cited <= keys
    assert keys <= cited, f"in references.bib but never cited: {keys - cited}"


# ---------------------------------------------------------------- the front ends
def test_front_ends_run_jupyter_book_with_the_options_as_environment(tmp_path):
    env = report.build_environment(smoke=True, data_dir="~/d", executor="serial", environ={})
    assert env["KBN_SMOKE"] == "1" and env["KBN_EXECUTOR"] == "serial"
    assert Path(env["KBN_DATA_DIR"]).is_absolute() and env["KBN_DATA_DIR"].endswith("/d")
    assert report.build_environment(environ={"KBN_SMOKE": "0"}) == {"KBN_SMOKE": "0"}
    assert report.jupyter_book()[0].endswith("jupyter-book")
    assert report.build(root=tmp_path) == 1  # no book/ there: refused, nothing run
    makefile = (PROJECT / "Makefile").read_text()
    assert "$(PY) -m kbn.report $(ARGS)" in makefile


@pytest.mark.parametrize("cmd", [["-m", "kbn.report", "--help"], ["-m", "kbn", "report", "--help"]])
def test_front_end_help(cmd):
    out = subprocess.run([sys.executable, *cmd], capture_output=True, text=True)
    assert out.returncode == 0 and "--smoke" in out.stdout and "jupyter-book build book/" in out.stdout


def test_front_end_passes_the_exit_code_of_the_build(tmp_path, monkeypatch):
    """`python -m kbn.report` in a copy without data: the build's one message, exit 1."""
    root = copy_repo(tmp_path / "kbn")
    env = {**os.environ, "KBN_CACHE_DIR": str(tmp_path / "empty"),
           "KBN_DATA_URL": f"http://127.0.0.1:{closed_port()}/cifar.tar.gz"}
    env.pop("KBN_DATA_DIR", None)
    proc = subprocess.run([sys.executable, "-c", "import sys; from kbn.report import build; "
                           f"sys.exit(build(smoke=True, root={str(root)!r}))"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 1
    assert "Set KBN_DATA_DIR to the extracted cifar-10-batches-py folder" in proc.stderr



# ---------------------------------------------------------------- jupyter-book build book/
def test_smoke_build_executes_every_chapter_in_a_fresh_copy(built_book):
    assert built_book.returncode == 0
    assert built_book.executed_now() == list(CHAPTERS)
    for name in CHAPTERS:
        nb = nbformat.read(built_book.executed / f"{name}.ipynb", as_version=4)
        meta = nb.metadata["kbn"]
        assert meta["smoke"] is True and len(meta["fingerprint"]) == 64
        injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert injected and "smoke = True" in injected[0].source
        assert "remove-cell" in injected[0].metadata.tags  # not rendered
        assert 'results_dir = "book/executed/results"' in injected[0].source  # relative
        assert not any(o.get("output_type") == "error" or o.get("name") == "stderr"
                       for c in nb.cells if c.cell_type == "code" for o in c.outputs)
        res = json.loads((built_book.executed / "results" / f"{name.split('_', 1)[1]}.json").read_text())
        assert res["smoke"] is True and res["data"]["n_train"] > 0
    assert "kbn: [4/6] 04_sigma_sensitivity: executing (never executed)" in built_book.stderr
    assert "kbn: [5/6] 05_how_bn_helps: executing (never executed)" in built_book.stderr
    assert "kbn: [6/6] 06_pushing_the_mlp: executing (never executed)" in built_book.stderr
    # 04 took its lambda from 03's results
    r3 = json.loads((built_book.executed / "results" / "lambda_search.json").read_text())
    r4 = json.loads((built_book.executed / "results" / "sigma_sensitivity.json").read_text())
    assert r4["train_config"]["lam"] == r3["best"]["lambda"]
    assert r4["lam_source"].startswith("chosen on validation by the λ search "
                                       "(book/executed/results/lambda_search.json")


def test_smoke_build_leaves_the_sources_untouched(built_book):
    for name in CHAPTERS:
        nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        assert all(c.outputs == [] for c in nb.cells if c.cell_type == "code")
    assert not (PROJECT / "book" / "executed" / "build.json").exists() or \
        (PROJECT / "book" / "executed" / "build.json").stat().st_mtime < \
        (built_book.executed / "build.json").stat().st_mtime


def test_trainings_are_tables_for_download(built_book):
    import pandas as pd

    results = built_book.executed / "results"
    runs, histories = pd.read_csv(results / "runs.csv"), pd.read_csv(results / "histories.csv")
    per_chapter = {c["module"]: c["trainings"]["n_runs"] for c in built_book.record()["chapters"]}
    assert runs.groupby("chapter").size().to_dict() == {k: v for k, v in per_chapter.items() if v}
    assert runs["cache_key"].str.len().eq(64).all() and runs["test_accuracy"].between(0, 1).all()
    assert set(histories["run"]) == set(runs["run"])
    assert set(histories["metric"]) == {"cost", "loss", "accuracy"}


def test_rebuilds_execute_only_what_changed(built_book, tmp_path):
    """Nothing changed: nothing executed. A parameter of 01 edited: 01 only. A parameter
    of 03 edited: 03 and 04, which reads 03's lambda. Back to full mode: everything."""
    root = copy_built_book(built_book, tmp_path / "kbn")
    warm = jupyter_book_build(root)
    assert warm.returncode == 0, warm.stderr[-3000:]
    assert warm.executed_now() == [] and f"0 of {len(CHAPTERS)} chapters to execute" in warm.stderr

    _edit_parameter(root, "01_gradient_check", "n_samples = 20", "n_samples = 21")
    one = jupyter_book_build(root)
    assert one.returncode == 0, one.stderr[-3000:]
    assert one.executed_now() == ["01_gradient_check"]
    assert "01_gradient_check: executing (the notebook changed)" in one.stderr
    nb = nbformat.read(one.executed / "01_gradient_check.ipynb", as_version=4)
    assert json.loads((one.executed / "results" / "gradient_check.json").read_text()
                      )["parameters"]["n_samples"] == 21
    assert nb.metadata["kbn"]["fingerprint"] != _fingerprint(built_book, "01_gradient_check")

    _edit_parameter(root, "03_lambda_search", "n_fine = 8 ", "n_fine = 7 ")
    three = jupyter_book_build(root)
    assert three.returncode == 0, three.stderr[-3000:]
    assert three.executed_now() == ["03_lambda_search", "04_sigma_sensitivity"]
    assert "03_lambda_search was re-executed, and it reads" in three.stderr
    chapters = {c["name"]: c for c in three.record()["chapters"]}
    assert chapters["04_sigma_sensitivity"]["trainings"]["n_cached"] == \
        chapters["04_sigma_sensitivity"]["trainings"]["n_runs"]  # nothing retrained


def _edit_parameter(root: Path, name: str, old: str, new: str) -> None:
    path = root / "notebooks" / f"{name}.ipynb"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def _fingerprint(book, name):
    return nbformat.read(book.executed / f"{name}.ipynb", as_version=4).metadata["kbn"]["fingerprint"]


def test_a_raising_chapter_stops_the_build_and_names_itself(built_book, tmp_path):
    root = copy_built_book(built_book, tmp_path / "kbn")
    path = root / "notebooks" / "02_bn_ablation.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.cells.insert(3, nbformat.v4.new_code_cell("1 / 0  # a chapter that raises"))
    nbformat.write(nb, path)
    before = (root / "book" / "executed" / "02_bn_ablation.ipynb").read_bytes()
    failed = jupyter_book_build(root)
    assert failed.returncode != 0
    assert "chapter 02_bn_ablation failed: notebooks/02_bn_ablation.ipynb raised " \
           "ZeroDivisionError: division by zero" in failed.stderr
    assert "04_sigma_sensitivity: executing" not in failed.stderr  # stopped there
    assert "Traceback" not in failed.stderr  # one message, not a Python traceback
    assert not (failed.html / "index.html").exists()  # no front page claiming success
    assert (root / "book" / "executed" / "02_bn_ablation.failed.ipynb").is_file()
    assert (root / "book" / "executed" / "02_bn_ablation.ipynb").read_bytes() == before


def test_a_missing_glue_key_or_reference_fails_the_build(built_book, tmp_path):
    root = copy_built_book(built_book, tmp_path / "kbn")
    summary = root / "book" / "summary.md"
    summary.write_text(summary.read_text() + "\nBroken: {glue:text}`executed/02_bn_ablation."
                       "ipynb::no_such_key:.2f` and {numref}`fig-nowhere`.\n")
    broken = jupyter_book_build(root)
    assert broken.returncode != 0
    assert "Glue reference 'no_such_key' not found" in broken.stderr
    assert "undefined label: 'fig-nowhere'" in broken.stderr
    assert "kbn: the book was not built: 2 warning(s)" in broken.stderr
    assert not (broken.html / "index.html").exists()
    again = jupyter_book_build(root)  # an incremental build does not forget the problem
    assert again.returncode != 0 and "no_such_key" in again.stderr


def test_no_data_fails_at_once_with_one_message(tmp_path):
    """No KBN_DATA_DIR, an empty cache, the download server unreachable: exit 1, one
    message saying what to set, nothing executed or rendered."""
    root = copy_repo(tmp_path / "kbn")
    build = jupyter_book_build(root, KBN_DATA_DIR=None, KBN_CACHE_DIR=str(tmp_path / "empty"),
                               KBN_DATA_URL=f"http://127.0.0.1:{closed_port()}/cifar.tar.gz")
    assert build.returncode == 1
    assert build.stderr.count("kbn: the book was not built.") == 1
    assert "Set KBN_DATA_DIR to the extracted cifar-10-batches-py folder" in build.stderr
    assert "Traceback" not in build.stderr and "Extension error" not in build.stderr
    assert not list((root / "_build").rglob("*.html")) and not (root / "book" / "executed").exists()


# ---------------------------------------------------------------- papermill by hand
def papermill(root: Path, name: str, out: Path, *args: str):
    """``papermill notebooks/<name>.ipynb <out> ARGS`` run in ``root``."""
    cmd = [sys.executable, "-m", "papermill", f"notebooks/{name}.ipynb", str(out), *args]
    return subprocess.run(cmd, cwd=root, capture_output=True, text=True)


@requires_data
def test_papermill_by_hand_in_a_fresh_copy(tmp_path):
    """The σ chapter alone, as the README says (smoke, serial): it finds no λ-search
    results, says so and uses the default; it writes nothing but its output notebook."""
    root = copy_repo(tmp_path / "kbn")
    files = lambda: sorted(p for p in root.rglob("*") if "__pycache__" not in p.parts)  # noqa: E731
    before = files()
    proc = papermill(root, "04_sigma_sensitivity", root / "out.ipynb", "-p", "smoke", "True",
                     "-p", "executor", "serial", "-p", "progress", "False")
    assert proc.returncode == 0, proc.stderr[-3000:]
    nb = nbformat.read(root / "out.ipynb", as_version=4)
    glued = {o["metadata"]["scrapbook"]["name"]: o["data"]
             for c in nb.cells for o in c.get("outputs", []) if "scrapbook" in o.get("metadata", {})}
    source = glued["lam_source"]["application/papermill.record/text/plain"]
    assert "the default λ (no λ-search results in book/executed/results" in source
    assert float(glued["lam_used"]["application/papermill.record/text/plain"]) == 0.005
    assert [p for p in files() if p.name != "out.ipynb"] == before


@pytest.mark.parametrize("args, message", [
    (["-p", "n_seeds", "5"], "ParameterError: unknown parameter 'n_seeds' for bn_ablation"),
    (["-p", "seeds", "3"], 'ParameterError: parameter seeds=3: expected a list of ints'),
    (["-p", "n_s", "-1"], "ParameterError: parameter n_s: TrainConfig.n_s=-1"),
])
def test_papermill_parameters_are_checked_in_the_first_cell(tmp_path, args, message):
    out = tmp_path / "out.ipynb"
    proc = papermill(PROJECT, "02_bn_ablation", out, *args)
    assert proc.returncode != 0 and message in proc.stderr
    nb = nbformat.read(out, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "injected-parameters" in code[1].metadata.tags
    errors = [i for i, c in enumerate(code) if any(o.get("output_type") == "error" for o in c.outputs)]
    assert errors == [2] and "from_notebook(globals())" in code[2].source  # the first cell
    assert all(c.execution_count is None for c in code[3:])  # nothing after it ran
