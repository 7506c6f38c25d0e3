"""Build the book: a front end for ``jupyter-book build book/``, run in the project folder.

    python -m kbn.report [--smoke] [--data-dir D] [--executor E]

``make report``, ``kbn report`` and ``python -m kbn.report`` all come here, and this only
sets the environment the build reads and runs the one command users type::

    KBN_SMOKE=1 KBN_DATA_DIR=D KBN_EXECUTOR=E jupyter-book build book/

The build itself (which chapters are out of date, executing them with papermill, the
provenance record) is :mod:`kbn.book`, called by the Sphinx extension book/_ext/kbn_book.py.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence


def project_root() -> Path:
    """The source tree this package belongs to (it has _config.yml and book/), else the cwd."""
    here = Path(__file__).resolve().parents[1]
    if (here / "_config.yml").is_file() and (here / "book").is_dir():
        return here
    return Path.cwd().resolve()


def jupyter_book() -> list[str]:
    """The ``jupyter-book`` command of this environment."""
    script = Path(sys.executable).with_name("jupyter-book")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from jupyter_book.cli.main import main; main()"]


def build_environment(smoke: bool = False, data_dir: str | None = None,
                      executor: str | None = None, environ=os.environ) -> dict[str, str]:
    """The environment of the build: ``environ`` with KBN_SMOKE, KBN_DATA_DIR, KBN_EXECUTOR
    set from the options given (the others left as they are)."""
    from .book import SMOKE_ENV

    env = dict(environ)
    if smoke:
        env[SMOKE_ENV] = "1"
    if data_dir is not None:
        env["KBN_DATA_DIR"] = str(Path(data_dir).expanduser().resolve())
    if executor is not None:
        env["KBN_EXECUTOR"] = executor
    return env


def build(smoke: bool = False, data_dir: str | None = None, executor: str | None = None,
          root: str | os.PathLike | None = None) -> int:
    """Run ``jupyter-book build book/`` in ``root`` (default: the project); its exit code."""
    root = Path(root) if root else project_root()
    if not (root / "book").is_dir():
        print(f"error: {root} has no book/ folder; run this from the project folder (the "
              f"one with _config.yml)", file=sys.stderr)
        return 1
    cmd = [*jupyter_book(), "build", "book/"]
    return subprocess.run(cmd, cwd=root, env=build_environment(smoke, data_dir, executor)).returncode


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``python -m kbn.report`` and ``kbn report``."""
    p.add_argument("--smoke", action="store_true",
                   help="the quick smoke book: a 2,000-image subset, short schedule, one seed "
                        "(what CI builds; = KBN_SMOKE=1)")
    p.add_argument("--data-dir", metavar="D",
                   help="the cifar-10-batches-py folder (= KBN_DATA_DIR; default: "
                        "$KBN_DATA_DIR, the cache, or a download)")
    p.add_argument("--executor", metavar="E",
                   help="where trainings run: 'serial', 'process', 'process:N' or a Dask "
                        "scheduler address (= KBN_EXECUTOR; default: one process per core)")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m kbn.report",
        description="Build the book: `jupyter-book build book/` in the project folder, which "
                    "executes every out-of-date chapter with papermill, then renders "
                    "_build/html.")
    add_arguments(p)
    args = p.parse_args(argv)
    return build(smoke=args.smoke, data_dir=args.data_dir, executor=args.executor)


if __name__ == "__main__":
    sys.exit(main())
