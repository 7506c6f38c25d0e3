"""Sphinx extension with two fixes for this book (loaded from _config.yml).

1. A page that pastes glued values from a notebook depends on that notebook. myst-nb
   resolves cross-page glue (``{glue:text}`other.ipynb::key```) when pages are written
   but does not tell Sphinx about the dependency, so an incremental ``jupyter-book
   build`` after re-running one notebook would keep stale numbers in the summary page.
   Recording the notebook as a dependency makes Sphinx re-read the page.
2. No script twice. With Sphinx 7.4, an inline script added after the builder started
   (sphinx-thebe's ``const THEBE_JS_URL = ...``, sphinx-togglebutton's selector) reaches
   the page twice, once with filename None and once with '', and the second ``const``
   is a JavaScript SyntaxError in the browser console. Duplicates are dropped per page.
"""

from myst_nb.ext.glue.utils import PendingGlueReference


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
    app.connect("doctree-read", _note_glue_sources)
    app.connect("html-page-context", _drop_duplicate_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
