"""Exceptions shared by the data modules, and the words their messages use for a fix.

Kept in its own tiny module so that :mod:`kbn.data` and :mod:`kbn.download`
can both import it without importing each other.

A message that says how to fix something names what the reader can change: a library
user passes ``data_dir=...``, a user of the ``kbn`` command passes ``--data-dir``. The
messages ask :func:`say` for those words; the command wraps its work in
:func:`command_line_words`, so the same error reads right in both places.
"""

from __future__ import annotations

import contextlib
import contextvars

_CLI = contextvars.ContextVar("kbn_command_line_words", default=False)

_WORDS = {  # name: (in the library's words, in the command line's words)
    "data_dir": ("the data_dir argument", "--data-dir"),
    "pass data_dir": ("pass data_dir=... to load_cifar10", "pass --data-dir"),
    "no data_dir": ("no data_dir given", "no --data-dir given"),
    "download": ("pass download=True", "run `kbn data --download`"),
    "unset data_dir": ("unset it", "leave it out"),
}


def say(name: str) -> str:
    """``name``'s words for whoever is reading: the library's, or the command line's."""
    return _WORDS[name][_CLI.get()]


@contextlib.contextmanager
def command_line_words():
    """Within this block, messages name the ``kbn`` command's options."""
    token = _CLI.set(True)
    try:
        yield
    finally:
        _CLI.reset(token)


class DataError(RuntimeError):
    """The dataset could not be found, fetched, verified or read.

    The message always names the file, folder or URL involved and says how to
    fix the problem.
    """
