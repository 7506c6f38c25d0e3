"""How ``jupyter-book build book/`` makes the study: which chapters are out of date, running
them, and the record of what ran.

The Sphinx extension ``book/_ext/kbn_book.py`` calls :func:`build_chapters` before Sphinx
reads a single page. It

1. lists the chapters: the ToC entries ``executed/NN_<module>``, each the notebook
   ``notebooks/NN_<module>.ipynb`` backed by ``kbn.experiments.<module>``, whose
   ``DEPENDS_ON`` names the chapters it reads results from (they must come earlier);
2. finds the data (``KBN_DATA_DIR``, the cache, or a download it first checks it can
   reach), failing at once with one message if there is none;
3. gives each chapter a fingerprint: a hash of its notebook's cells, its parameters
   (smoke or full), the kbn source it imports, the data checksum and the fingerprints of
   the chapters it depends on. A chapter is executed when its executed copy
   ``book/executed/NN_<module>.ipynb`` is missing or carries another fingerprint, so
   editing 03 re-executes 03 and the chapters that read its results, nothing else;
4. executes those chapters with papermill (the kernel works in the project folder, its
   trainings go through the results cache ``_build/cache``, its progress goes to the
   console) into a temporary file, renamed into place only if the notebook ran through;
   a chapter that raises stops the build, naming the notebook and the error;
5. gathers every chapter's trainings into ``book/executed/results/runs.csv`` and
   ``histories.csv`` and writes ``book/executed/build.json``, which the page "How this
   book was built" shows.

Smoke mode (``KBN_SMOKE=1``) runs every chapter on a data subset with a short schedule;
it is part of the fingerprint, so smoke and full executions are never mixed up.
"""

from __future__ import annotations

import ast
import datetime
import hashlib
import json
import os
import platform
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from . import __version__

SMOKE_ENV = "KBN_SMOKE"  # 1: build the smoke book (CI); 0 or unset: the full study
DATA_URL_ENV = "KBN_DATA_URL"  # where the build downloads CIFAR-10 from (default: the official page)
KERNEL = "python3"
PROBE_TIMEOUT = 10.0  # seconds the build waits for the download server before giving up
# parameters that change where or how visibly a chapter runs, never its numbers
RESULT_NEUTRAL = frozenset({"cache", "executor", "progress"})


class BookError(RuntimeError):
    """The book cannot be built; the message says why and what to do."""


# ------------------------------------------------------------------ where things are
@dataclass(frozen=True)
class Layout:
    """The folders of a build. ``root`` holds ``notebooks/`` and ``book/`` and is the
    kernels' working folder, so the parameters passed to the notebooks are relative."""

    root: Path
    cache: Path  # finished trainings, reused by every later build

    @classmethod
    def for_sphinx(cls, srcdir, outdir) -> "Layout":
        """``srcdir`` is ``book/``; the cache sits beside the HTML, in ``_build/cache``."""
        return cls(Path(srcdir).resolve().parent, Path(outdir).resolve().parent / "cache")

    @property
    def book(self) -> Path:
        return self.root / "book"

    @property
    def notebooks(self) -> Path:
        return self.root / "notebooks"

    @property
    def executed(self) -> Path:
        return self.book / "executed"

    @property
    def results(self) -> Path:
        return self.executed / "results"

    @property
    def record(self) -> Path:
        return self.executed / "build.json"

    def rel(self, path: Path) -> str:
        """``path`` relative to the root (what the notebooks and the book may show)."""
        return os.path.relpath(Path(path).resolve(), self.root)


@dataclass(frozen=True)
class Chapter:
    """A ToC entry ``executed/<name>``, its notebook and its experiment module."""

    name: str  # "03_lambda_search"
    module: str  # "lambda_search": kbn.experiments.lambda_search
    depends_on: tuple[str, ...]  # chapter names whose results it reads

    def source(self, layout: Layout) -> Path:
        return layout.notebooks / f"{self.name}.ipynb"

    def executed(self, layout: Layout) -> Path:
        return layout.executed / f"{self.name}.ipynb"

    def failed(self, layout: Layout) -> Path:
        return layout.executed / f"{self.name}.failed.ipynb"


def chapters(layout: Layout) -> list[Chapter]:
    """The chapters in ToC order, with their dependencies checked."""
    import importlib

    import yaml

    toc_file = layout.book / "_toc.yml"
    try:
        toc = yaml.safe_load(toc_file.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise BookError(f"cannot read the table of contents {toc_file}: {exc}") from None
    names = [Path(f).name for f in _toc_files(toc) if Path(f).parent.name == "executed"]
    found: list[Chapter] = []
    by_module: dict[str, str] = {}
    for name in names:
        module = name.split("_", 1)[1] if "_" in name else name
        if not (layout.notebooks / f"{name}.ipynb").is_file():
            raise BookError(f"the ToC lists executed/{name}, but notebooks/{name}.ipynb does "
                            f"not exist: add the notebook or remove the entry from _toc.yml")
        try:
            mod = importlib.import_module(f"kbn.experiments.{module}")
        except ImportError as exc:
            raise BookError(f"chapter {name} needs the module kbn/experiments/{module}.py "
                            f"({exc})") from None
        deps = []
        for dep in getattr(mod, "DEPENDS_ON", ()):
            if dep not in by_module:
                raise BookError(f"chapter {name} reads the results of '{dep}', which is not a "
                                f"chapter before it in _toc.yml: put that chapter first")
            deps.append(by_module[dep])
        by_module[module] = name
        found.append(Chapter(name, module, tuple(deps)))
    return found


def _toc_files(node) -> Iterable[str]:
    if isinstance(node, dict):
        if "file" in node:
            yield str(node["file"])
        for key in ("root",):
            if key in node:
                yield str(node[key])
        for value in node.values():
            if isinstance(value, (list, dict)):
                yield from _toc_files(value)
    elif isinstance(node, list):
        for item in node:
            yield from _toc_files(item)


# ------------------------------------------------------------------ mode and data
def smoke_mode(environ=os.environ) -> bool:
    """``KBN_SMOKE``: 1/true/yes builds the smoke book, 0/false/no or unset the full one."""
    text = environ.get(SMOKE_ENV, "").strip().lower()
    if text in ("", "0", "false", "no", "off"):
        return False
    if text in ("1", "true", "yes", "on"):
        return True
    raise BookError(f"{SMOKE_ENV}={environ[SMOKE_ENV]!r}: use 1 (the smoke book, quick) or 0 "
                    f"(the full study)")


def locate_data(probe_timeout: float = PROBE_TIMEOUT) -> Path:
    """The CIFAR-10 folder, downloaded first if it is nowhere here and the server answers.

    Fails fast with one message saying what to set: a download is attempted only after
    the server answered a HEAD request within ``probe_timeout`` seconds.
    """
    from .data import locate_cifar10
    from .download import CIFAR10_URL
    from .errors import DataError

    try:
        return locate_cifar10(None, download=False, progress=False)
    except DataError as exc:
        if os.environ.get("KBN_DATA_DIR"):
            raise BookError(str(exc)) from None  # set, but wrong: its own message says how
    url = os.environ.get(DATA_URL_ENV) or CIFAR10_URL
    problem = probe(url, probe_timeout)
    if problem:
        raise BookError(
            f"CIFAR-10 is not on this machine and cannot be downloaded: KBN_DATA_DIR is not "
            f"set, the kbn cache (KBN_CACHE_DIR, default ~/.cache/kbn) has no "
            f"cifar-10-batches-py folder, and {url} is unreachable ({problem}).\n"
            f"Set KBN_DATA_DIR to the extracted cifar-10-batches-py folder and build again:\n"
            f"    KBN_DATA_DIR=/path/to/cifar-10-batches-py jupyter-book build book/")
    print(f"kbn: downloading CIFAR-10 from {url} into the kbn cache (163 MB, once)",
          file=sys.stderr, flush=True)
    try:
        return locate_cifar10(None, download=True, url=url, progress=True)
    except DataError as exc:
        raise BookError(str(exc)) from None


def probe(url: str, timeout: float) -> str | None:
    """None if ``url`` answers a HEAD request within ``timeout`` seconds, else why not.

    The request runs in a thread given ``timeout`` in all, so neither a name lookup nor a
    silent server can hold the build longer than that.
    """
    outcome: list[str | None] = []

    def ask():
        try:
            request = urllib.request.Request(url, method="HEAD")
            with urllib.request.urlopen(request, timeout=timeout) as response:
                outcome.append(None if response.status < 400 else f"HTTP {response.status}")
        except urllib.error.HTTPError as exc:
            outcome.append(f"HTTP {exc.code}")
        except Exception as exc:  # DNS failure, refused, reset, timeout, bad URL
            reason = getattr(exc, "reason", exc)
            outcome.append(f"{type(exc).__name__}: {reason}")

    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        return f"no answer within {timeout:g} s"
    return outcome[0]


# ------------------------------------------------------------------ fingerprints
def parameters(chapter: Chapter, layout: Layout, smoke: bool) -> dict[str, Any]:
    """What the build passes to a chapter's notebook: smoke, where results go (and earlier
    chapters' are read), the results cache; all paths relative to the project folder."""
    import dataclasses
    import importlib

    fields = {f.name for f in dataclasses.fields(
        importlib.import_module(f"kbn.experiments.{chapter.module}").Parameters)}
    values = {"smoke": smoke, "results_dir": layout.rel(layout.results),
              "cache": layout.rel(layout.cache)}
    return {k: v for k, v in values.items() if k in fields}


def fingerprint(chapter: Chapter, layout: Layout, params: dict[str, Any], data_checksum: str,
                upstream: dict[str, str]) -> tuple[str, dict[str, Any]]:
    """(sha256, its parts): everything the executed chapter depends on."""
    from .runs import code_fingerprint

    source = chapter.source(layout)
    nb = json.loads(source.read_text(encoding="utf-8"))
    cells = [(c["cell_type"], "".join(c["source"]), sorted(c.get("metadata", {}).get("tags", [])))
             for c in nb["cells"]]
    imports = {f"kbn.experiments.{chapter.module}"} | notebook_imports(nb)
    parts = {
        "notebook": _sha(json.dumps(cells)),
        "parameters": {k: v for k, v in sorted(params.items()) if k not in RESULT_NEUTRAL},
        "code": _sha(json.dumps([[str(p.relative_to(_PACKAGE.parent)), _sha(p.read_bytes())]
                                 for p in code_files(imports)])),
        "numerical_code": code_fingerprint(),
        "data": data_checksum,
        "upstream": {name: upstream[name] for name in chapter.depends_on},
    }
    return _sha(json.dumps(parts, sort_keys=True)), parts


_PACKAGE = Path(__file__).resolve().parent


def _sha(data: str | bytes) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def notebook_imports(nb: dict) -> set[str]:
    """The kbn modules a notebook's code cells import (magics skipped)."""
    names: set[str] = set()
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        code = "\n".join(line for line in "".join(cell["source"]).splitlines()
                         if not line.lstrip().startswith(("%", "!")))
        try:
            names |= _imports(ast.parse(code), package="")
        except SyntaxError:
            pass
    return names


def code_files(modules: Iterable[str]) -> list[Path]:
    """The kbn source files that importing ``modules`` reads: each module, its packages'
    ``__init__.py`` and, recursively, every kbn module its import statements name
    (read from the source, so lazy imports inside functions count too)."""
    seen: dict[str, Path] = {}
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name in seen or not (name == "kbn" or name.startswith("kbn.")):
            continue
        path = _module_file(name)
        if path is None:  # kbn.x.SomeClass: a name, not a module
            continue
        seen[name] = path
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # the packages
        package = name if path.name == "__init__.py" else ".".join(parts[:-1])
        todo += _imports(ast.parse(path.read_text(encoding="utf-8")), package)
    return sorted(seen.values())


def _module_file(name: str) -> Path | None:
    rel = Path(*name.split(".")[1:])
    for path in (_PACKAGE / rel / "__init__.py", (_PACKAGE / rel).with_suffix(".py")):
        if path.is_file() and (name != "kbn" or path.name == "__init__.py"):
            return path
    return None


def _imports(tree: ast.AST, package: str) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            out.add(module)
            out |= {f"{module}.{a.name}" for a in node.names}
    return out


# ------------------------------------------------------------------ the plan
@dataclass
class Step:
    chapter: Chapter
    fingerprint: str
    parts: dict[str, Any]
    params: dict[str, Any]
    reason: str | None  # why it must be executed; None: its executed copy is up to date


def stored_record(path: Path) -> dict[str, Any] | None:
    """The ``kbn`` metadata of an executed notebook (None: missing or not ours)."""
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    record = nb.get("metadata", {}).get("kbn")
    return record if isinstance(record, dict) else None


def plan(layout: Layout, smoke: bool, data_checksum: str,
         force: Iterable[str] = ()) -> list[Step]:
    """Every chapter with its fingerprint and the reason to execute it (None: fresh)."""
    force = set(force)
    steps, fingerprints, rerun = [], {}, set()
    for ch in chapters(layout):
        params = parameters(ch, layout, smoke)
        fp, parts = fingerprint(ch, layout, params, data_checksum, fingerprints)
        fingerprints[ch.name] = fp
        stored = stored_record(ch.executed(layout))
        reason = None
        if ch.name in force:
            reason = "asked for"
        elif stored is None:
            reason = "never executed" if not ch.executed(layout).exists() else \
                "its executed copy was not made by this build"
        elif stored.get("fingerprint") != fp:
            reason = _what_changed(stored.get("parts", {}), parts, rerun)
        elif not (layout.results / f"{ch.module}.json").is_file():
            reason = "its results file is missing"
        if reason:
            rerun.add(ch.name)
        steps.append(Step(ch, fp, parts, params, reason))
    return steps


def _what_changed(old: dict, new: dict, rerun: set[str]) -> str:
    labels = {"notebook": "the notebook changed", "code": "the kbn code it imports changed",
              "numerical_code": "kbn's numerical code changed", "data": "the data changed"}
    changed = [labels[k] for k in labels if old.get(k) != new.get(k)]
    if old.get("parameters") != new.get("parameters"):
        was, now = old.get("parameters", {}), new["parameters"]
        changed.append("its parameters changed (" + ", ".join(
            f"{k}: {was.get(k)!r} -> {now.get(k)!r}" for k in sorted(set(was) | set(now))
            if was.get(k) != now.get(k)) + ")")
    ups = [u for u, fp in new["upstream"].items() if old.get("upstream", {}).get(u) != fp]
    if ups:
        how = "was re-executed" if set(ups) <= rerun else "changed"
        changed.append(f"{', '.join(ups)} {how}, and it reads {'their' if len(ups) > 1 else 'its'} "
                       f"results")
    return "; ".join(changed) or "its fingerprint changed"


# ------------------------------------------------------------------ execution
def execute(step: Step, layout: Layout, smoke: bool, log: Callable[[str], None]) -> dict[str, Any]:
    """Run one chapter's notebook with papermill; returns its record (also stored in the
    executed notebook's metadata). :class:`BookError` if the notebook raises."""
    import nbformat
    import papermill as pm

    ch = step.chapter
    source, final, failed = ch.source(layout), ch.executed(layout), ch.failed(layout)
    running = layout.executed / f".{ch.name}.running.ipynb"
    layout.executed.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.perf_counter()
    try:
        pm.execute_notebook(str(source), str(running), parameters=step.params,
                            kernel_name=KERNEL, progress_bar=False, log_output=False,
                            stderr_file=sys.stderr, cwd=str(layout.root))
    except pm.PapermillExecutionError as exc:
        os.replace(running, failed)
        raise BookError(
            f"chapter {ch.name} failed: notebooks/{ch.name}.ipynb raised {exc.ename}: "
            f"{exc.evalue} (cell [{exc.exec_count}]).\n"
            f"The traceback is in {layout.rel(failed)}. Nothing was rendered; fix the "
            f"notebook or the code it calls and build again.") from None
    except Exception as exc:  # kernel died or could not start
        if running.exists():
            os.replace(running, failed)
        raise BookError(f"chapter {ch.name}: notebooks/{ch.name}.ipynb could not be executed "
                        f"({type(exc).__name__}: {exc})") from None
    seconds = time.perf_counter() - t0
    results = _read_json(layout.results / f"{ch.module}.json")
    if results is None or results.get("chapter") != ch.module:
        raise BookError(f"chapter {ch.name} ran but wrote no results to "
                        f"{layout.rel(layout.results)}/{ch.module}.json: its module's run() "
                        f"must call ChapterOutput.save()")
    record = {"fingerprint": step.fingerprint, "parts": step.parts, "smoke": smoke,
              "executed_at": started.isoformat(timespec="seconds"), "seconds": seconds,
              "reason": step.reason, "trainings": results.get("trainings", {}),
              "kbn_version": __version__}
    nb = nbformat.read(running, as_version=4)
    _clean(nb, layout)
    nb.metadata["kbn"] = record
    nbformat.write(nb, running)
    os.replace(running, final)
    failed.unlink(missing_ok=True)
    return record


def _clean(nb, layout: Layout) -> None:
    """Make an executed notebook fit for the book: papermill's injected parameter cell
    hidden, no stderr output (progress bars went to the console; the book drops stderr
    anyway, and warnings there carry this machine's paths), papermill's paths relative."""
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            cell.metadata["tags"] = [*tags, "remove-cell"]
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs
                            if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]
    pm_meta = nb.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):
        if pm_meta.get(key):
            path = Path(pm_meta[key])
            pm_meta[key] = layout.rel(path) if key == "input_path" else \
                layout.rel(path.with_name(path.name.replace(".running", "").lstrip(".")))


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def check_kernel(name: str = KERNEL) -> None:
    """Fail early if the kernel would not run this interpreter (and so not find kbn)."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(name)
    except NoSuchKernel:
        raise BookError(f"no Jupyter kernel named {name!r}: install ipykernel in this "
                        f"environment ({sys.executable} -m pip install ipykernel)") from None
    exe = spec.argv[0]
    # jupyter_client runs a spec's bare 'python' with the current interpreter
    if exe not in ("python", "python3", f"python{sys.version_info[0]}.{sys.version_info[1]}") \
            and Path(exe).resolve() != Path(sys.executable).resolve():
        raise BookError(
            f"the {name!r} kernel runs {exe}, not this interpreter ({sys.executable}), so it "
            f"would not see kbn; remove that kernelspec ({spec.resource_dir}) or reinstall "
            f"it with: {sys.executable} -m ipykernel install --user")


# ------------------------------------------------------------------ the whole step
def build_chapters(layout: Layout, smoke: bool | None = None, force: Iterable[str] = (),
                   log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Execute every out-of-date chapter in ToC order, gather the trainings' tables and
    write the build record (``book/executed/build.json``); returns the record."""
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    t0 = time.perf_counter()
    smoke = smoke_mode() if smoke is None else smoke
    from .runs import DataSpec

    folder = locate_data()
    checksum = DataSpec(data_dir=str(folder)).checksum()
    steps = plan(layout, smoke, checksum, force)
    stale = [s for s in steps if s.reason]
    mode = "smoke book (KBN_SMOKE=1)" if smoke else "full study"
    log(f"kbn: {mode}; {len(stale)} of {len(steps)} chapters to execute"
        + (f" ({', '.join(s.chapter.name for s in stale)})" if stale else ", the rest up to date"))
    if stale:
        check_kernel()
        layout.cache.mkdir(parents=True, exist_ok=True)
    chapters_done = []
    for i, step in enumerate(steps, start=1):
        ch = step.chapter
        if step.reason:
            log(f"kbn: [{i}/{len(steps)}] {ch.name}: executing ({step.reason})")
            record = execute(step, layout, smoke, log)
            tr = record["trainings"]
            log(f"kbn: [{i}/{len(steps)}] {ch.name}: done in {record['seconds']:.0f} s"
                + (f", {tr.get('n_runs', 0)} trainings ({tr.get('n_cached', 0)} from the cache)"
                   if tr.get("n_runs") else ""))
            status = "executed in this build"
        else:
            record = stored_record(ch.executed(layout))
            status = "up to date (not executed)"
        chapters_done.append({"name": ch.name, "module": ch.module, "status": status,
                              "reason": step.reason, "depends_on": list(ch.depends_on),
                              **{k: record.get(k) for k in
                                 ("executed_at", "seconds", "trainings", "smoke", "fingerprint")}})
    tables = gather_trainings(layout, steps)
    record = {"built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "smoke": smoke, "data_checksum": checksum, "chapters": chapters_done,
              "tables": tables, "environment": environment(layout.root),
              "seconds": time.perf_counter() - t0}
    layout.record.write_text(json.dumps(record, indent=1) + "\n")
    log(f"kbn: chapters ready in {record['seconds']:.0f} s; rendering the book")
    return record


def gather_trainings(layout: Layout, steps: list[Step]) -> dict[str, Any]:
    """``runs.csv`` and ``histories.csv``: every chapter's trainings in one table each."""
    import pandas as pd

    out = {}
    for kind in ("runs", "histories"):
        frames = [pd.read_csv(f) for s in steps
                  if (f := layout.results / f"{s.chapter.module}_{kind}.csv").is_file()]
        frames = [f for f in frames if len(f)]
        table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        path = layout.results / f"{kind}.csv"
        text = table.to_csv(index=False)
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
        out[kind] = {"file": layout.rel(path), "rows": len(table)}
    return out


def environment(root: Path) -> dict[str, Any]:
    """What the book was built with: kbn (version, git commit), Python, numpy and its
    BLAS, the machine (platform, cores)."""
    import numpy as np

    from .executors import available_cores

    try:
        from threadpoolctl import threadpool_info

        blas = [f"{i.get('internal_api')} {i.get('version')} ({i.get('num_threads')} threads)"
                for i in threadpool_info() if i.get("user_api") == "blas"]
    except Exception:  # threadpoolctl missing or confused: not worth failing a build
        blas = []
    return {"kbn": __version__, "git": _git(root), "python": platform.python_version(),
            "numpy": np.__version__, "blas": ", ".join(blas) or "unknown",
            "platform": platform.platform(), "machine": platform.machine(),
            "cores": available_cores()}


def _git(root: Path) -> str:
    def git(*args):
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              timeout=10).stdout.strip()

    try:
        commit = git("rev-parse", "--short=12", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"
    if not commit:
        return "unknown (not a git checkout)"
    return commit + (" with uncommitted changes" if dirty else "")
