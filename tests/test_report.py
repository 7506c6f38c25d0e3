"""kbn.report and the notebooks: fast checks of the sources, then the smoke report itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml
from book_fixtures import CHAPTERS, PROJECT

from kbn import TrainConfig
from kbn import report
from kbn.experiments.bn_ablation import ARCHITECTURES

NOTEBOOKS = PROJECT / "notebooks"
RECIPE_KEYS = ("n_batch", "eta_min", "eta_max", "n_s", "n_cycles", "lam", "dtype")


def parameters_of(name: str) -> dict:
    """The values assigned in a notebook's `parameters` cell."""
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code")
    assert "parameters" in cell.metadata.get("tags", []), f"{name}: first code cell not tagged"
    scope: dict = {}
    exec(cell.source, {}, scope)  # the cell only assigns literals
    return scope


# ---------------------------------------------------------------- sources (fast)
def test_report_lists_the_four_notebooks():
    assert report.NOTEBOOKS == CHAPTERS
    for name in CHAPTERS:
        assert (NOTEBOOKS / f"{name}.ipynb").is_file()


@pytest.mark.parametrize("name", CHAPTERS)
def test_notebooks_are_committed_without_outputs(name):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name} has outputs"


@pytest.mark.parametrize("name", CHAPTERS)
def test_parameters_cell_has_the_common_parameters(name):
    p = parameters_of(name)
    assert p["smoke"] is False and p["data_dir"] is None
    assert p["figures_dir"] is None and p["results_dir"] is None
    if name != "01_gradient_check":
        assert p["executor"] is None and p["cache"] is None


@pytest.mark.parametrize("name", ["02_bn_ablation", "03_lambda_search", "04_sigma_sensitivity"])
def test_notebook_recipe_is_the_config_default(name):
    p, default = parameters_of(name), TrainConfig()
    for key in RECIPE_KEYS:
        if key in p and not (key == "lam" and p[key] is None):  # 04: None = lambda from 03
            assert p[key] == getattr(default, key), f"{name}: {key}={p[key]!r}"
    if "architectures" in p:
        assert {k: tuple(v) for k, v in p["architectures"].items()} == ARCHITECTURES


def test_ablation_and_sigma_defaults():
    assert parameters_of("02_bn_ablation")["seeds"] == [0, 1, 2]
    p3 = parameters_of("03_lambda_search")
    assert (p3["coarse_range"], p3["n_coarse"], p3["n_fine"]) == ([-5.0, -1.0], 8, 8)
    p4 = parameters_of("04_sigma_sensitivity")
    assert p4["sigmas"] == [1e-1, 1e-3, 1e-4] and p4["extra_inits"] == ["he", "xavier"]
    assert p4["lam"] is None and p4["lam_fallback"] == 0.005


def test_toc_and_config():
    toc = yaml.safe_load((PROJECT / "_toc.yml").read_text())
    files = [c["file"] for c in toc["chapters"]]
    assert toc["root"] == "intro" and files == [*(f"executed/{c}" for c in CHAPTERS), "summary"]
    link = PROJECT / "book" / "_toc.yml"
    assert link.is_symlink() and link.resolve() == (PROJECT / "_toc.yml").resolve()
    cfg = yaml.safe_load((PROJECT / "_config.yml").read_text())
    assert cfg["execute"]["execute_notebooks"] == "off"
    assert cfg["only_build_toc_files"] is True
    assert {"dollarmath", "amsmath"} <= set(cfg["parse"]["myst_enable_extensions"])
    for page in ("intro.md", "summary.md"):
        assert (PROJECT / "book" / page).is_file()


def test_select_notebooks():
    assert report.select(None) == list(CHAPTERS)
    assert report.select(["03"]) == ["03_lambda_search"]
    assert report.select(["4,1"]) == ["01_gradient_check", "04_sigma_sensitivity"]
    assert report.select(["lambda", "02_bn_ablation.ipynb"]) == ["02_bn_ablation", "03_lambda_search"]
    with pytest.raises(report.ReportError, match="choose from"):
        report.select(["07"])


def test_cli_reports_bad_arguments(capsys):
    assert report.main(["--only", "nope", "--no-build"]) == 1
    assert "error: --only 'nope'" in capsys.readouterr().err


def test_parameters_passed_to_the_notebooks(tmp_path):
    paths = report.Paths(tmp_path, NOTEBOOKS)
    p = report.notebook_parameters(paths, True, "~/data")
    assert p["smoke"] is True and p["figures_dir"] == str(tmp_path / "book" / "figures")
    assert p["results_dir"] == str(tmp_path / "book" / "executed" / "results")
    assert Path(p["data_dir"]).is_absolute()
    assert "data_dir" not in report.notebook_parameters(paths, False, None)
    q = report.notebook_parameters(paths, False, None, executor="serial", cache="c")
    assert q["executor"] == "serial" and Path(q["cache"]).is_absolute()
    assert "executor" not in p and "cache" not in p
    assert paths.html == tmp_path / "_build" / "html"


def test_build_refuses_missing_chapters(tmp_path):
    with pytest.raises(report.ReportError, match="not executed yet"):
        report.check_executed(report.Paths(tmp_path, NOTEBOOKS))


def test_kernel_runs_this_interpreter():
    report.check_kernel()  # raises if the python3 kernel would not see kbn


def test_failing_notebook_names_itself_and_its_partial_copy(tmp_path):
    src = tmp_path / "nbs"
    src.mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"),
                                         nbformat.v4.new_code_cell("raise ValueError('boom')")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, src / "99_broken.ipynb")
    paths = report.Paths(tmp_path / "root", src)
    with pytest.raises(report.ReportError) as err:
        report.run_notebook("99_broken", paths, {}, progress=False)
    msg = str(err.value)
    partial = paths.executed / "99_broken.ipynb"
    assert "99_broken.ipynb failed" in msg and "ValueError: boom" in msg and str(partial) in msg
    assert partial.is_file()


# ---------------------------------------------------------------- the smoke report (real data)
def test_smoke_report_is_fast(built_book):
    assert built_book.seconds < 240, f"smoke report took {built_book.seconds:.0f} s"


def test_smoke_report_writes_executed_notebooks_and_results(built_book):
    for name in CHAPTERS:
        nb = nbformat.read(built_book.executed / f"{name}.ipynb", as_version=4)
        injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert injected and "smoke = True" in injected[0].source
        assert not any(o.get("output_type") == "error"
                       for c in nb.cells if c.cell_type == "code" for o in c.outputs)
        res = json.loads((built_book.executed / "results" / f"{name}.json").read_text())
        assert res["smoke"] is True and res["data"]["n_train"] > 0
    # 04 took its lambda from 03's results
    r3 = json.loads((built_book.executed / "results" / "03_lambda_search.json").read_text())
    r4 = json.loads((built_book.executed / "results" / "04_sigma_sensitivity.json").read_text())
    assert r4["train_config"]["lam"] == r3["best"]["lambda"]
    assert r4["values"]["lam_source"].startswith("chosen on validation")


def test_smoke_report_leaves_the_sources_untouched(built_book):
    for name in CHAPTERS:
        nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        assert all(c.outputs == [] for c in nb.cells if c.cell_type == "code")
    assert not list(NOTEBOOKS.glob("*executed*")) and not (NOTEBOOKS / "results").exists()


@pytest.mark.skipif(not os.environ.get("KBN_DATA_DIR"), reason="set KBN_DATA_DIR")
def test_papermill_cli_runs_one_notebook(tmp_path):
    """The README's single-notebook command (with the output folders redirected)."""
    out = tmp_path / "03.ipynb"
    cmd = [sys.executable, "-m", "papermill", str(NOTEBOOKS / "03_lambda_search.ipynb"), str(out),
           "-p", "smoke", "True", "-p", "figures_dir", str(tmp_path / "fig"),
           "-p", "results_dir", str(tmp_path / "res"), "-p", "progress", "False"]
    proc = subprocess.run(cmd, cwd=PROJECT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "fig" / "03_accuracy_vs_lambda.png").is_file()
    assert json.loads((tmp_path / "res" / "03_lambda_search.json").read_text())["best"]["lambda"] > 0


def test_unwritable_build_folder_is_refused_before_any_notebook_runs(tmp_path):
    from kbn.report import Paths, ReportError, run

    root = tmp_path / "root"
    root.mkdir()
    (root / "book").write_text("a file where the book folder should be")
    with pytest.raises(ReportError, match="cannot write to output folder"):
        run(smoke=True, paths=Paths(root, tmp_path / "notebooks"))
