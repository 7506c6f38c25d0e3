"""Build the study: run the four notebooks with papermill, then render the book.

    python -m kbn.report [--smoke] [--data-dir D] [--only 03] [--no-build] [--strict]

Each notebook of ``notebooks/`` is executed into ``book/executed/`` (papermill, with the
``python3`` kernel of this interpreter), its figures go to ``book/figures/`` and its
results (JSON) to ``book/executed/results/``; then ``jupyter-book build --all book/``
renders ``_build/html/``. The same by hand::

    papermill notebooks/03_lambda_search.ipynb book/executed/03_lambda_search.ipynb -p smoke True
    jupyter-book build book/
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from .folders import UnwritableFolderError, writable_folder

NOTEBOOKS = ("01_gradient_check", "02_bn_ablation", "03_lambda_search", "04_sigma_sensitivity")
KERNEL = "python3"


class ReportError(RuntimeError):
    """A step of the report failed; the message says which and what to do."""


@dataclass(frozen=True)
class Paths:
    """Where the report reads and writes.

    ``root`` holds ``_config.yml``, ``_toc.yml`` and ``book/``; ``notebooks`` the
    unexecuted sources (never written to).
    """

    root: Path
    notebooks: Path

    @classmethod
    def default(cls, root: str | os.PathLike | None = None,
                notebooks: str | os.PathLike | None = None) -> "Paths":
        project = project_root()
        root = Path(root).resolve() if root else project
        return cls(root, Path(notebooks).resolve() if notebooks else project / "notebooks")

    @property
    def book(self) -> Path:
        return self.root / "book"

    @property
    def executed(self) -> Path:
        return self.book / "executed"

    @property
    def figures(self) -> Path:
        return self.book / "figures"

    @property
    def results(self) -> Path:
        return self.executed / "results"

    @property
    def cache(self) -> Path:
        """Finished trainings, reused by the next build (beside the HTML it feeds)."""
        return self.root / "_build" / "cache"

    @property
    def html(self) -> Path:
        # jupyter-book writes next to the _config.yml it finds (the root), not into book/
        return self.root / "_build" / "html"


def project_root() -> Path:
    """The source tree this package belongs to (it has notebooks/ and book/), else the cwd."""
    here = Path(__file__).resolve().parents[1]
    if (here / "notebooks").is_dir() and (here / "book").is_dir():
        return here
    return Path.cwd().resolve()


def select(only: Iterable[str] | None) -> list[str]:
    """Notebook names from ``--only`` values such as '03', '3', '03_lambda_search'."""
    if not only:
        return list(NOTEBOOKS)
    chosen = []
    for item in only:
        for token in str(item).split(","):
            token = token.strip().removesuffix(".ipynb")
            if not token:
                continue
            matches = [n for n in NOTEBOOKS
                       if n == token or n.split("_", 1)[0] == token.zfill(2) or token in n]
            if len(matches) != 1:
                raise ReportError(f"--only {token!r} matches {matches or 'no notebook'}; "
                                  f"choose from {', '.join(NOTEBOOKS)} (or 01..04)")
            if matches[0] not in chosen:
                chosen.append(matches[0])
    return [n for n in NOTEBOOKS if n in chosen]


def check_kernel(name: str = KERNEL) -> None:
    """Fail early if the kernel would not run this interpreter (and so not find kbn)."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(name)
    except NoSuchKernel:
        raise ReportError(
            f"no Jupyter kernel named {name!r}: install ipykernel in this environment "
            f"({sys.executable} -m pip install ipykernel)") from None
    exe = spec.argv[0]
    # jupyter_client runs a spec's bare 'python' with the current interpreter
    if exe not in ("python", "python3", f"python{sys.version_info[0]}.{sys.version_info[1]}") \
            and Path(exe).resolve() != Path(sys.executable).resolve():
        raise ReportError(
            f"the {name!r} kernel runs {exe}, not this interpreter ({sys.executable}), so it "
            f"would not see kbn; remove that kernelspec ({spec.resource_dir}) or reinstall "
            f"it with: {sys.executable} -m ipykernel install --user")


def run_notebook(name: str, paths: Paths, parameters: dict, progress: bool = True) -> Path:
    """Execute ``notebooks/<name>.ipynb`` into ``book/executed/<name>.ipynb``.

    Raises :class:`ReportError` naming the notebook, the failing cell and the partially
    executed copy.
    """
    import papermill as pm

    src = paths.notebooks / f"{name}.ipynb"
    out = paths.executed / f"{name}.ipynb"
    if not src.is_file():
        raise ReportError(f"notebook {src} not found")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        pm.execute_notebook(
            str(src), str(out), parameters=parameters, kernel_name=KERNEL,
            progress_bar=progress, stderr_file=sys.stderr if progress else None,
            cwd=str(paths.root),
        )
    except pm.PapermillExecutionError as exc:
        raise ReportError(
            f"notebook {src.name} failed in cell [{exc.exec_count}] with "
            f"{exc.ename}: {exc.evalue}\n"
            f"The partially executed notebook (with the traceback) is {out}") from exc
    except Exception as exc:  # kernel died, could not start, ...
        raise ReportError(f"notebook {src.name} could not be executed: "
                          f"{type(exc).__name__}: {exc}\nPartial output (if any): {out}") from exc
    return out


def notebook_parameters(paths: Paths, smoke: bool, data_dir: str | None,
                        executor: str | None = None, cache: str | None = None) -> dict:
    """The papermill parameters every notebook gets (those it does not use are harmless)."""
    params = {"smoke": bool(smoke), "figures_dir": str(paths.figures),
              "results_dir": str(paths.results)}
    if data_dir is not None:
        params["data_dir"] = str(Path(data_dir).expanduser().resolve())
    if executor is not None:
        params["executor"] = executor
    if cache is not None:
        params["cache"] = str(Path(cache).expanduser().resolve())
    return params


def check_executed(paths: Paths) -> None:
    """Every chapter must exist before building; warn about smoke/full mixtures."""
    missing = [n for n in NOTEBOOKS if not (paths.executed / f"{n}.ipynb").is_file()]
    if missing:
        raise ReportError(
            f"cannot build the book: {', '.join(missing)} not executed yet (no "
            f"{paths.executed}/<name>.ipynb). Run `python -m kbn.report` without --only "
            f"first, or run them with papermill.")
    modes = {}
    for n in NOTEBOOKS:
        f = paths.results / f"{n}.json"
        if f.is_file():
            try:
                modes[n] = bool(json.loads(f.read_text()).get("smoke"))
            except (OSError, ValueError):
                pass
    if len(set(modes.values())) > 1:
        smoke = [n for n, s in modes.items() if s]
        print(f"warning: the book mixes smoke runs ({', '.join(smoke)}) with full runs",
              file=sys.stderr)


def build_book(paths: Paths, strict: bool = False) -> Path:
    """``jupyter-book build --all book/`` (``-W --keep-going`` when strict); returns index.html."""
    cmd = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()",
           "build", str(paths.book), "--all"]
    if strict:
        cmd += ["-W", "--keep-going"]
    proc = subprocess.run(cmd, cwd=paths.root)
    if proc.returncode != 0:
        raise ReportError(
            f"jupyter-book build failed (exit {proc.returncode})"
            + (" in strict mode: a warning (broken glue key, reference or image) counts as "
               "an error; see the messages above" if strict else "; see the messages above"))
    index = paths.html / "index.html"
    if not index.is_file():
        raise ReportError(f"jupyter-book finished but {index} does not exist")
    return index


def run(smoke: bool = False, data_dir: str | None = None, only: Sequence[str] | None = None,
        build: bool = True, strict: bool = False, progress: bool = True,
        paths: Paths | None = None, executor: str | None = None,
        cache: str | bool = True) -> Path | None:
    """Run the selected notebooks, then (if ``build``) the book; returns index.html or None.

    executor, cache: passed to the notebooks (see :func:`kbn.runs.run_trials`): where the
    trainings run (None: env KBN_EXECUTOR, else one process per core) and the folder of
    finished trainings to reuse and add to (True: ``_build/cache``; False: train all).
    """
    paths = paths or Paths.default()
    if cache is True:
        cache = str(paths.cache)
    names = select(only)
    check_kernel()
    # every folder the run writes, checked before the first notebook starts
    for folder in (paths.executed, paths.figures, paths.results, paths.html.parent,
                   *([Path(cache)] if cache else [])):
        try:
            writable_folder(folder, hint="make it writable, or build elsewhere with --root")
        except UnwritableFolderError as exc:
            raise ReportError(str(exc)) from None
    params = notebook_parameters(paths, smoke, data_dir, executor, cache or None)
    t0 = time.perf_counter()
    for i, name in enumerate(names, start=1):
        print(f"[{i}/{len(names)}] {name}{' (smoke)' if smoke else ''} -> "
              f"{paths.executed / (name + '.ipynb')}", file=sys.stderr, flush=True)
        t = time.perf_counter()
        run_notebook(name, paths, params, progress)
        print(f"[{i}/{len(names)}] {name} done in {time.perf_counter() - t:.0f} s",
              file=sys.stderr, flush=True)
    index = None
    if build:
        check_executed(paths)
        t = time.perf_counter()
        index = build_book(paths, strict)
        print(f"book built in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    total = time.perf_counter() - t0
    print(f"total time: {total:.0f} s ({total / 60:.1f} min)")
    if index is not None:
        print(f"HTML: {index}")
    return index


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m kbn.report",
        description="Run the study's notebooks with papermill into book/executed/, "
                    "then build the HTML book with jupyter-book.")
    p.add_argument("--smoke", action="store_true",
                   help="quick run: a 2,000-image subset, short schedule, one seed (CI)")
    p.add_argument("--data-dir", metavar="D",
                   help="the cifar-10-batches-py folder (default: $KBN_DATA_DIR, the cache, "
                        "or a download)")
    p.add_argument("--only", action="append", metavar="NN",
                   help="run only these notebooks (01..04; repeat or comma-separate); the "
                        "others keep their executed copies")
    p.add_argument("--no-build", action="store_true", help="run the notebooks, do not build")
    p.add_argument("--strict", action="store_true",
                   help="build with -W --keep-going: any warning (broken glue key, "
                        "reference, missing figure) fails the build")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--executor", metavar="E",
                   help="where trainings run: 'serial', 'process', 'process:N' or a Dask "
                        "scheduler address (default: $KBN_EXECUTOR, else one process per core)")
    p.add_argument("--cache", metavar="DIR", default=True,
                   help="folder of finished trainings, reused by later builds and added to "
                        "(default: _build/cache)")
    p.add_argument("--no-cache", dest="cache", action="store_false",
                   help="train everything; store nothing")
    p.add_argument("--root", metavar="DIR",
                   help="folder holding _config.yml, _toc.yml and book/ (default: the project)")
    args = p.parse_args(argv)
    try:
        run(smoke=args.smoke, data_dir=args.data_dir, only=args.only, build=not args.no_build,
            strict=args.strict, progress=not args.no_progress, paths=Paths.default(args.root),
            executor=args.executor, cache=args.cache)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
