"""Shared fixtures: a small learnable problem in the shape of ``kbn.data.CIFAR10``."""

import os
import signal
from types import SimpleNamespace

import numpy as np
import pytest

# A background job of a non-interactive shell (`bash .ci/run &`) starts with SIGINT ignored,
# and every process it starts inherits that: the Ctrl-C tests' kbn processes could then not
# be interrupted. Give this process Python's own handler, so its children start with the
# default disposition, as under a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# the session-scoped smoke build of the book (fixture ``built_book``), for every test module
pytest_plugins = ["book_fixtures"]


def make_blobs(n: int, d: int, k: int, rng: np.random.Generator, spread: float = 1.5):
    """k Gaussian clusters in d dimensions; returns X (n, d) float64, y (n,) int64."""
    centres = spread * rng.standard_normal((k, d))
    y = rng.integers(0, k, size=n)
    X = centres[y] + rng.standard_normal((n, d))
    return X, y


@pytest.fixture
def toy_data():
    """train/val/test splits of a 10-class blob problem (a linear model gets ~90 %)."""
    rng = np.random.default_rng(1234)
    X, y = make_blobs(1400, 20, 10, rng)
    split = lambda a, b: SimpleNamespace(X=X[a:b], y=y[a:b])  # noqa: E731
    return SimpleNamespace(train=split(0, 1000), val=split(1000, 1200), test=split(1200, 1400))


requires_real_data = pytest.mark.skipif(
    not os.environ.get("KBN_DATA_DIR"),
    reason="set KBN_DATA_DIR to the cifar-10-batches-py folder to run the real-data tests",
)


# CI runs the property tests on a fixed set of examples (no flaky runs); locally each run
# explores new ones.
try:
    from hypothesis import settings

    settings.register_profile("ci", derandomize=True, database=None)
    if os.environ.get("CI"):
        settings.load_profile("ci")
except ImportError:  # hypothesis is a test extra; the property tests import it themselves
    pass
