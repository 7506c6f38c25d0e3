import numpy as np
import pytest

from kbn import cyclical_lr

LO, HI, NS = 1e-5, 1e-1, 800


@pytest.mark.parametrize("t, expected", [
    (0, LO), (NS // 2, (LO + HI) / 2), (NS, HI), (3 * NS // 2, (LO + HI) / 2), (2 * NS, LO),
    # second cycle repeats the first
    (2 * NS + NS // 4, LO + (HI - LO) / 4), (3 * NS, HI), (3 * NS + NS // 4, HI - (HI - LO) / 4),
    (4 * NS, LO),
])
def test_triangular_values(t, expected):
    assert cyclical_lr(t, LO, HI, NS) == pytest.approx(expected, rel=1e-12)


def test_vectorised_and_bounded():
    t = np.arange(0, 6 * NS + 1)
    eta = cyclical_lr(t, LO, HI, NS)
    assert eta.shape == t.shape
    assert eta.min() == pytest.approx(LO) and eta.max() == pytest.approx(HI)
    np.testing.assert_allclose(np.abs(np.diff(eta)), (HI - LO) / NS, rtol=1e-9)  # linear pieces
    assert [cyclical_lr(int(i), LO, HI, NS) for i in t[:5]] == pytest.approx(eta[:5].tolist())


def test_negative_step_is_refused():
    with pytest.raises(ValueError, match="step t must be >= 0"):
        cyclical_lr(-1, LO, HI, NS)
