"""Exceptions shared by the data modules.

Kept in its own tiny module so that :mod:`kbn.data` and :mod:`kbn.download`
can both import it without importing each other.
"""


class DataError(RuntimeError):
    """The dataset could not be found, fetched, verified or read.

    The message always names the file, folder or URL involved and says how to
    fix the problem.
    """
