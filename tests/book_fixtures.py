"""The smoke build of the book, shared by the report, HTML and browser tests.

conftest.py registers this module as a plugin, so a test just asks for the fixture::

    def test_something(built_book):
        index = built_book.html / "index.html"

``built_book`` runs, once per test session, exactly what a user types, in a fresh copy
of the repository (its files as git lists them, no outputs)::

    KBN_SMOKE=1 jupyter-book build book/

with the real CIFAR-10 from ``KBN_DATA_DIR``. The source tree is never written to.
Tests that change the book work on their own copy (:func:`copy_built_book`). Tests using
it are skipped when ``KBN_DATA_DIR`` is unset.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
CHAPTERS = ("01_gradient_check", "02_bn_ablation", "03_lambda_search", "04_sigma_sensitivity",
            "05_how_bn_helps", "06_pushing_the_mlp")
# every page of the book, relative to the HTML root
PAGES = ("intro.html", *(f"executed/{c}.html" for c in CHAPTERS), "summary.html",
         "provenance.html", "references.html")
JUPYTER_BOOK = Path(sys.executable).with_name("jupyter-book")


@dataclass(frozen=True)
class Build:
    """One run of ``jupyter-book build book/`` in ``root``."""

    root: Path
    returncode: int
    stdout: str
    stderr: str

    @property
    def html(self) -> Path:
        return self.root / "_build" / "html"

    @property
    def executed(self) -> Path:
        return self.root / "book" / "executed"

    def record(self) -> dict:
        """book/executed/build.json: what the build executed and why."""
        return json.loads((self.executed / "build.json").read_text())

    def executed_now(self) -> list[str]:
        return [c["name"] for c in self.record()["chapters"]
                if c["status"] == "executed in this build"]


BuiltBook = Build


def copy_repo(dest: Path) -> Path:
    """A fresh copy of the repository at ``dest``: the files git tracks or would track
    (no .venv, no _build, no executed notebooks), as a clone has them."""
    try:
        listed = subprocess.run(["git", "-C", str(PROJECT), "ls-files", "-co", "--exclude-standard"],
                                capture_output=True, text=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        listed = [str(p.relative_to(PROJECT)) for p in PROJECT.rglob("*")
                  if p.is_file() and not {".venv", "_build", "executed", ".git"} & set(p.parts)]
    for name in listed:
        src = PROJECT / name
        if not (src.exists() or src.is_symlink()):  # deleted, not yet committed
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            target.symlink_to(os.readlink(src))
        else:
            shutil.copy2(src, target)
    return dest


def copy_built_book(book: Build, dest: Path) -> Path:
    """A copy of a built book (sources, executed chapters, results cache and HTML)."""
    shutil.copytree(book.root, dest, symlinks=True)
    return dest


def jupyter_book_build(root: Path, smoke: bool = True, **env: str | None) -> Build:
    """``jupyter-book build book/`` in ``root`` (KBN_SMOKE=1 unless ``smoke`` is False);
    ``env`` sets (or, given None, removes) environment variables."""
    environ = {**os.environ, "KBN_SMOKE": "1" if smoke else "0"}
    for key, value in env.items():
        if value is None:
            environ.pop(key, None)
        else:
            environ[key] = value
    proc = subprocess.run([str(JUPYTER_BOOK), "build", "book/"], cwd=root, env=environ,
                          capture_output=True, text=True, timeout=1800)
    return Build(root, proc.returncode, proc.stdout, proc.stderr)


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on: a download server that refuses at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # free again once the socket is closed


_BUILT: dict[str, Build] = {}  # one build per process, whichever module asks first


@pytest.fixture(scope="session")
def built_book(tmp_path_factory) -> Build:
    """The smoke-built book (see the module docstring); skipped without KBN_DATA_DIR."""
    if not os.environ.get("KBN_DATA_DIR"):
        pytest.skip("set KBN_DATA_DIR to the cifar-10-batches-py folder to build the book")
    if "book" not in _BUILT:
        root = copy_repo(tmp_path_factory.mktemp("book") / "kbn")
        _BUILT["book"] = jupyter_book_build(root)
    book = _BUILT["book"]
    if book.returncode != 0:
        pytest.fail(f"`KBN_SMOKE=1 jupyter-book build book/` failed (exit {book.returncode}):\n"
                    f"{book.stderr[-4000:]}", pytrace=False)
    return book
