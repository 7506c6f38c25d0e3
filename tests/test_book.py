"""kbn.book without executing anything: the chapters from the ToC, fingerprints and the
staleness plan, the data check, cleaning an executed notebook, a failing chapter."""

from __future__ import annotations

import http.server
import json
import shutil
import socket
import threading
import time
from pathlib import Path

import nbformat
import pytest
from book_fixtures import CHAPTERS, PROJECT, closed_port

from kbn import book
from kbn.book import BookError, Chapter, Layout, Step


@pytest.fixture
def layout(tmp_path) -> Layout:
    """A project folder with the real ToC and notebooks, nothing executed."""
    root = tmp_path / "kbn"
    (root / "book").mkdir(parents=True)
    shutil.copy2(PROJECT / "_toc.yml", root / "book" / "_toc.yml")
    shutil.copytree(PROJECT / "notebooks", root / "notebooks")
    return Layout(root, root / "_build" / "cache")


def pretend_executed(layout: Layout, steps) -> None:
    """Executed copies carrying the fingerprints of ``steps`` (as execute() leaves them)."""
    layout.results.mkdir(parents=True, exist_ok=True)
    for s in steps:
        nb = nbformat.read(s.chapter.source(layout), as_version=4)
        nb.metadata["kbn"] = {"fingerprint": s.fingerprint, "parts": s.parts}
        nbformat.write(nb, s.chapter.executed(layout))
        (layout.results / f"{s.chapter.module}.json").write_text("{}")


def stale(steps) -> dict[str, str]:
    return {s.chapter.name: s.reason for s in steps if s.reason}


# ---------------------------------------------------------------- chapters
def test_chapters_come_from_the_toc_with_their_dependencies(layout):
    chapters = book.chapters(layout)
    assert [c.name for c in chapters] == list(CHAPTERS)
    assert [c.module for c in chapters] == ["gradient_check", "bn_ablation", "lambda_search",
                                            "sigma_sensitivity", "how_bn_helps", "pushing_the_mlp"]
    assert chapters[3].depends_on == ("02_bn_ablation", "03_lambda_search")
    assert all(c.depends_on == () for c in chapters[:3] + chapters[4:])


def test_a_dependency_must_come_first_in_the_toc(layout):
    toc = layout.book / "_toc.yml"
    text = toc.read_text()
    toc.write_text(text.replace("  - file: executed/03_lambda_search\n", "").replace(
        "  - file: summary\n", "  - file: executed/03_lambda_search\n  - file: summary\n"))
    with pytest.raises(BookError, match="reads the results of 'lambda_search', which is not a "
                                        "chapter before it"):
        book.chapters(layout)


def test_a_toc_entry_needs_its_notebook(layout):
    (layout.notebooks / "02_bn_ablation.ipynb").unlink()
    with pytest.raises(BookError, match=r"notebooks/02_bn_ablation.ipynb does not exist"):
        book.chapters(layout)


# ---------------------------------------------------------------- code and fingerprints
def test_code_files_are_what_the_chapter_imports():
    files = {p.relative_to(PROJECT).as_posix() for p in
             book.code_files(["kbn.experiments.sigma_sensitivity"])}
    assert {"kbn/__init__.py", "kbn/experiments/__init__.py", "kbn/experiments/sigma_sensitivity.py",
            "kbn/experiments/lambda_search.py", "kbn/experiments/bn_ablation.py", "kbn/plots.py",
            "kbn/runs.py", "kbn/trainer.py", "kbn/search.py"} <= files
    # front ends and the build itself decide no chapter's numbers
    assert not {"kbn/book.py", "kbn/report.py", "kbn/cli.py"} & files
    assert "kbn/experiments/gradient_check.py" not in files


def test_the_plan_executes_only_what_is_out_of_date(layout):
    """The staleness check, mutation by mutation: each change makes exactly the chapters
    that depend on it out of date."""
    first = book.plan(layout, smoke=True, data_checksum="data-1")
    assert stale(first) == {c: "never executed" for c in CHAPTERS}
    pretend_executed(layout, first)
    assert stale(book.plan(layout, smoke=True, data_checksum="data-1")) == {}

    # a parameter of 01: 01 only
    path = layout.notebooks / "01_gradient_check.ipynb"
    path.write_text(path.read_text().replace("n_samples = 20", "n_samples = 21"))
    assert stale(book.plan(layout, True, "data-1")) == {"01_gradient_check": "the notebook changed"}
    # a parameter of 03: 03 and 04, which reads 03's lambda
    path = layout.notebooks / "03_lambda_search.ipynb"
    path.write_text(path.read_text().replace("n_fine = 8 ", "n_fine = 7 "))
    plan = stale(book.plan(layout, True, "data-1"))
    assert set(plan) == {"01_gradient_check", "03_lambda_search", "04_sigma_sensitivity"}
    assert "03_lambda_search was re-executed, and it reads its results" in plan["04_sigma_sensitivity"]
    # smoke and full are never mixed up; new data re-executes everything
    full = stale(book.plan(layout, False, "data-1"))
    assert set(full) == set(CHAPTERS)
    assert "its parameters changed (smoke: True -> False)" in full["02_bn_ablation"]
    assert "the data changed" in stale(book.plan(layout, True, "data-2"))["02_bn_ablation"]


def test_a_missing_results_file_or_a_foreign_copy_is_out_of_date(layout):
    steps = book.plan(layout, True, "d")
    pretend_executed(layout, steps)
    (layout.results / "bn_ablation.json").unlink()
    nb = nbformat.read(layout.executed / "01_gradient_check.ipynb", as_version=4)
    del nb.metadata["kbn"]  # e.g. papermill run by hand into book/executed/
    nbformat.write(nb, layout.executed / "01_gradient_check.ipynb")
    assert stale(book.plan(layout, True, "d")) == {
        "01_gradient_check": "its executed copy was not made by this build",
        "02_bn_ablation": "its results file is missing"}


def test_the_parameters_passed_are_relative_and_known_to_the_chapter(layout):
    chapters = {c.name: c for c in book.chapters(layout)}
    p1 = book.parameters(chapters["01_gradient_check"], layout, smoke=True)
    assert p1 == {"smoke": True, "results_dir": "book/executed/results"}  # it trains nothing
    p2 = book.parameters(chapters["02_bn_ablation"], layout, smoke=False)
    assert p2 == {"smoke": False, "results_dir": "book/executed/results", "cache": "_build/cache"}


def test_smoke_mode_from_the_environment():
    assert book.smoke_mode({}) is False and book.smoke_mode({"KBN_SMOKE": "0"}) is False
    assert book.smoke_mode({"KBN_SMOKE": "1"}) is True and book.smoke_mode({"KBN_SMOKE": "yes"})
    with pytest.raises(BookError, match="KBN_SMOKE='maybe': use 1"):
        book.smoke_mode({"KBN_SMOKE": "maybe"})


# ---------------------------------------------------------------- the data check
class _Silent(threading.Thread):
    """A server that accepts connections and never answers (a stalled network)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(5)
        self.port = self.sock.getsockname()[1]

    def run(self):
        conns = []
        try:
            while True:
                conns.append(self.sock.accept()[0])
        except OSError:
            pass



def test_probe_reports_an_unreachable_or_silent_server_within_its_timeout():
    refused = book.probe(f"http://127.0.0.1:{closed_port()}/x", timeout=5)
    assert refused and "refused" in refused.lower()
    silent = _Silent()
    silent.start()
    t0 = time.perf_counter()
    answer = book.probe(f"http://127.0.0.1:{silent.port}/x", timeout=0.5)
    waited = time.perf_counter() - t0
    silent.sock.close()
    assert answer and ("timed out" in answer or "no answer within" in answer)
    assert waited < 5  # bounded by the timeout, not by the server (a behaviour, not a benchmark)


def test_probe_accepts_a_server_that_answers(tmp_path):
    (tmp_path / "cifar.tar.gz").write_bytes(b"x")
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.RequestHandlerClass.log_message = lambda *a, **k: None
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert book.probe(f"{url}/cifar.tar.gz", timeout=5) is None
        assert book.probe(f"{url}/missing.tar.gz", timeout=5) == "HTTP 404"
    finally:
        server.shutdown()


def test_no_data_is_one_message_saying_what_to_set(tmp_path, monkeypatch):
    monkeypatch.delenv("KBN_DATA_DIR", raising=False)
    monkeypatch.setenv("KBN_CACHE_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("KBN_DATA_URL", f"http://127.0.0.1:{closed_port()}/cifar.tar.gz")
    with pytest.raises(BookError) as err:
        book.locate_data()
    assert "Set KBN_DATA_DIR to the extracted cifar-10-batches-py folder" in str(err.value)
    assert not (tmp_path / "empty").exists()  # no download was started
    monkeypatch.setenv("KBN_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(BookError, match="KBN_DATA_DIR"):  # set but wrong: its own message
        book.locate_data()


# ---------------------------------------------------------------- execution
def test_clean_hides_the_injected_cell_and_drops_machine_paths(layout):
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("smoke = True", metadata={"tags": ["injected-parameters"]}),
        nbformat.v4.new_code_cell("x", outputs=[
            nbformat.v4.new_output("stream", name="stderr", text="/abs/path/warn.py: warning"),
            nbformat.v4.new_output("stream", name="stdout", text="kept")])])
    nb.metadata["papermill"] = {
        "input_path": str(layout.notebooks / "02_bn_ablation.ipynb"),
        "output_path": str(layout.executed / ".02_bn_ablation.running.ipynb")}
    book._clean(nb, layout)
    assert nb.cells[0].metadata.tags == ["injected-parameters", "remove-cell"]
    assert [o["name"] for o in nb.cells[1].outputs] == ["stdout"]
    assert nb.metadata["papermill"] == {"input_path": "notebooks/02_bn_ablation.ipynb",
                                        "output_path": "book/executed/02_bn_ablation.ipynb"}


def test_a_failing_chapter_names_itself_and_keeps_the_last_good_copy(layout):
    ch = Chapter("99_broken", "broken", ())
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"),
                                         nbformat.v4.new_code_cell("raise ValueError('boom')")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, ch.source(layout))
    layout.executed.mkdir(parents=True)
    ch.executed(layout).write_text("the last good copy")
    with pytest.raises(BookError) as err:
        book.execute(Step(ch, "fp", {}, {}, "never executed"), layout, True, print)
    msg = str(err.value)
    assert "chapter 99_broken failed: notebooks/99_broken.ipynb raised ValueError: boom" in msg
    assert "book/executed/99_broken.failed.ipynb" in msg and ch.failed(layout).is_file()
    assert ch.executed(layout).read_text() == "the last good copy"
    assert not list(layout.executed.glob(".*running*"))


def test_check_kernel_runs_this_interpreter():
    book.check_kernel()  # raises if the python3 kernel would not see kbn


def test_environment_names_what_built_the_book():
    env = book.environment(PROJECT)
    assert env["kbn"] and env["numpy"] and env["cores"] >= 1 and env["git"]
    assert json.dumps(env)  # goes into build.json
