"""The smoke build of the book, shared by the report and HTML tests (and a browser test).

conftest.py registers this module as a plugin, so a test just asks for the fixture::

    def test_something(built_book):
        index = built_book.html / "index.html"

``built_book`` runs the whole report once per test session: the four notebooks with
papermill (``smoke=True``, real CIFAR-10 from ``KBN_DATA_DIR``), then
``jupyter-book build --all -W --keep-going``. It builds in a temporary copy of the book
(``_config.yml``, ``_toc.yml``, ``book/``), so the source ``notebooks/`` and ``book/``
are never written to. Tests using it are skipped when ``KBN_DATA_DIR`` is unset.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
CHAPTERS = ("01_gradient_check", "02_bn_ablation", "03_lambda_search", "04_sigma_sensitivity")
# every page of the book, relative to the HTML root
PAGES = ("intro.html", *(f"executed/{c}.html" for c in CHAPTERS), "summary.html")


@dataclass(frozen=True)
class BuiltBook:
    root: Path  # the temporary copy: _config.yml, _toc.yml, book/
    html: Path  # root/_build/html, the built site
    executed: Path  # root/book/executed, the executed notebooks (+ results/*.json)
    seconds: float  # wall time of the smoke report (notebooks + build)

    def page(self, name: str) -> Path:
        return self.html / name


def copy_book(dest: Path) -> Path:
    """Copy the book's sources (not its outputs) to ``dest``; return ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(PROJECT / name, dest / name)
    shutil.copytree(PROJECT / "book", dest / "book", symlinks=True,
                    ignore=shutil.ignore_patterns("_build", "executed", "figures", "__pycache__"))
    return dest


def build_smoke_book(dest: Path) -> BuiltBook:
    """Run ``kbn.report`` in smoke + strict mode in a copy of the book at ``dest``."""
    from kbn.report import Paths, run

    copy_book(dest)
    paths = Paths(dest, PROJECT / "notebooks")
    t0 = time.perf_counter()
    run(smoke=True, strict=True, progress=False, paths=paths)
    return BuiltBook(dest, paths.html, paths.executed, time.perf_counter() - t0)


_BUILT: dict[str, object] = {}  # one build per process, whichever module asks first


@pytest.fixture(scope="session")
def built_book(tmp_path_factory) -> BuiltBook:
    """The smoke-built book (see the module docstring); skipped without KBN_DATA_DIR."""
    if not os.environ.get("KBN_DATA_DIR"):
        pytest.skip("set KBN_DATA_DIR to the cifar-10-batches-py folder to build the book")
    if "book" not in _BUILT:
        from kbn.report import ReportError

        try:
            _BUILT["book"] = build_smoke_book(tmp_path_factory.mktemp("book"))
        except ReportError as exc:
            _BUILT["book"] = exc
    if isinstance(_BUILT["book"], Exception):
        pytest.fail(f"the smoke report failed: {_BUILT['book']}", pytrace=False)
    return _BUILT["book"]
