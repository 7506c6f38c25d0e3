"""Sphinx extension of this book (loaded from _config.yml): ``jupyter-book build book/`` is
the whole report, and it never leaves half a book that looks finished.

1. Chapters. Before Sphinx reads a page (``builder-inited``), :func:`kbn.book.build_chapters`
   executes with papermill every chapter whose executed copy ``book/executed/NN_*.ipynb``
   is missing or out of date (see :mod:`kbn.book`). Missing data, a chapter that raises,
   a broken ToC: one message on stderr and exit code 1, before anything is rendered.
   ``KBN_SMOKE=1`` builds the quick smoke book (CI).
2. Warnings fail the build. A glued key that is missing, an unknown reference, a missing
   download or figure: each is a Sphinx warning, and any warning makes the build exit
   non-zero (as ``-W --keep-going``: all of them are listed first). A failed build
   removes ``_build/html/index.html`` and Sphinx's saved environment, so neither the
   front page nor the next incremental build passes the problem off as a finished book.
3. ``{kbn-provenance}``: the table of what ran (book/provenance.md), from
   ``book/executed/build.json``.
4. A page that pastes glued values from a notebook depends on that notebook. myst-nb
   resolves cross-page glue (``{glue:text}`other.ipynb::key```) when pages are written
   but does not tell Sphinx about the dependency; recording it makes Sphinx re-read the
   summary page when a chapter is re-executed.
5. No script twice. With Sphinx 7.4, an inline script added after the builder started
   (sphinx-thebe's ``const THEBE_JS_URL = ...``, sphinx-togglebutton's selector) reaches
   the page twice, and the second ``const`` is a JavaScript SyntaxError in the browser
   console. Duplicates are dropped per page.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from docutils import nodes
from myst_nb.ext.glue.utils import PendingGlueReference
from sphinx import addnodes
from sphinx.util.docutils import SphinxDirective


# ------------------------------------------------------------------ 1. chapters
def execute_chapters(app):
    try:
        from kbn.book import BookError, Layout, build_chapters
    except ImportError as exc:
        _stop(f"cannot import kbn ({exc}): build the book in the environment where kbn is "
              f"installed with its report extra:  pip install -e \".[report]\"")
    try:
        build_chapters(Layout.for_sphinx(app.srcdir, app.outdir))
    except BookError as exc:
        _stop(str(exc), app)


def _stop(message: str, app=None):
    """One message and exit 1 (raising through Sphinx and jupyter-book would bury it under
    two more messages and a traceback); the front page of an earlier build is removed, so
    _build/html does not pass for a finished book."""
    if app is not None:
        (Path(app.outdir) / "index.html").unlink(missing_ok=True)
    print(f"\nkbn: the book was not built.\n{message}", file=sys.stderr, flush=True)
    raise SystemExit(1)


# ------------------------------------------------------------------ 2. warnings fail
def fail_on_warnings(app):
    if not app.warningiserror:  # -W alone stops at the first warning; leave that as asked
        app.keep_going = True  # Sphinx then ends with status 1 if there was any warning


def discard_failed_build(app, exception):
    warnings = getattr(app, "_warncount", 0)
    if exception is None and not warnings:
        return
    envfile = Path(app.doctreedir) / "environment.pickle"
    envfile.unlink(missing_ok=True)
    (Path(app.outdir) / "index.html").unlink(missing_ok=True)
    if exception is None:
        print(f"\nkbn: the book was not built: {warnings} warning(s) above (a glued value, a "
              f"reference or a file the book needs is missing). Fix them and build again.",
              file=sys.stderr, flush=True)


# ------------------------------------------------------------------ 3. provenance
class Provenance(SphinxDirective):
    """Tables of what the last build ran, from book/executed/build.json."""

    def run(self):
        path = Path(self.env.srcdir) / "executed" / "build.json"
        self.env.note_dependency(str(path))
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise self.error(f"no build record {path} ({exc}): the kbn extension writes it")
        env = record["environment"]
        mode = ("smoke build (KBN_SMOKE=1): a data subset and a short schedule; the numbers "
                "only show that the pipeline works" if record["smoke"] else
                "full study (the complete recipe on all the data)")
        rows = [("built", record["built_at"]), ("mode", mode),
                ("kbn", f"{env['kbn']}, git commit {env['git']}"),
                ("Python", env["python"]), ("numpy", env["numpy"]), ("BLAS", env["blas"]),
                ("data (CIFAR-10) checksum", record["data_checksum"]),
                ("machine", f"{env['platform']}, {env['cores']} cores"),
                ("chapters step of this build", f"{record['seconds']:.0f} s")]
        chapters = []
        for ch in record["chapters"]:
            tr = ch.get("trainings") or {}
            n, cached = tr.get("n_runs", 0), tr.get("n_cached", 0)
            chapters.append((
                self._doc_link(ch["name"]), ch["status"],
                ch["reason"] or "–", ch.get("executed_at") or "–",
                f"{ch['seconds']:.0f} s" if ch.get("seconds") is not None else "–",
                f"{n} ({cached} from the cache)" if n else "none",
                ", ".join(ch.get("depends_on") or []) or "–"))
        return [_table(("chapter", "status", "why executed", "executed at (UTC)",
                        "execution time", "trainings", "reads results of"), chapters),
                _table(("what", "this build"), rows)]

    def _doc_link(self, name):
        ref = addnodes.pending_xref("", refdomain="std", reftype="doc",
                                    reftarget=f"/executed/{name}", refexplicit=True,
                                    refdoc=self.env.docname)
        ref += nodes.inline(text=name)
        return ref


def _table(header, rows):
    table = nodes.table(classes=["kbn-provenance"])
    group = nodes.tgroup(cols=len(header))
    table += group
    group += [nodes.colspec(colwidth=1) for _ in header]
    group += nodes.thead("", _row(header))
    group += nodes.tbody("", *[_row(r) for r in rows])
    return table


def _row(cells):
    row = nodes.row()
    for cell in cells:
        entry = nodes.entry()
        para = nodes.paragraph()
        para += cell if isinstance(cell, nodes.Node) else nodes.Text(str(cell))
        entry += para
        row += entry
    return row


# ------------------------------------------------------------------ 4. and 5.
def _note_glue_sources(app, doctree):
    env = app.env
    for node in doctree.findall(PendingGlueReference):
        env.note_dependency(str(env.doc2path(node["refdoc"])))


def _drop_duplicate_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not isinstance(scripts, list):
        return
    seen, unique = set(), []
    for js in scripts:
        attrs = getattr(js, "attributes", {}) or {}
        key = (getattr(js, "filename", js) or "", tuple(sorted(attrs.items())))
        if key not in seen:
            seen.add(key)
            unique.append(js)
    scripts[:] = unique  # in place: Sphinx restores its own list after each page


def setup(app):
    app.connect("builder-inited", fail_on_warnings)
    app.connect("builder-inited", execute_chapters)
    app.connect("build-finished", discard_failed_build)
    app.add_directive("kbn-provenance", Provenance)
    app.connect("doctree-read", _note_glue_sources)
    app.connect("html-page-context", _drop_duplicate_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
