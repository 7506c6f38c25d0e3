"""On-the-fly augmentation (kbn.augment): flips and translations of (n, 3072) channel-first
images, deterministic by seed, labels untouched (also inside the trainer)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import kbn.train_step
from kbn import NetworkConfig, TrainConfig, fit
from kbn.augment import Augmenter
from kbn.ensemble import mirror


def images(n=16, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 3072)).astype(np.float32)


def shifted(img, dx, dy):
    """Reference: the (3, 32, 32) image translated by (dx, dy) with zero fill, by loops."""
    a = img.reshape(3, 32, 32)
    out = np.zeros_like(a)
    for r in range(32):
        for q in range(32):
            if 0 <= r + dy < 32 and 0 <= q + dx < 32:
                out[:, r, q] = a[:, r + dy, q + dx]
    return out.reshape(-1)


def test_flip_mirrors_about_half_the_images_and_nothing_else():
    X = images(400)
    out = Augmenter(flip=True)(X.copy(), np.random.default_rng(1))
    same = np.all(out == X, axis=1)
    flipped = np.all(out == mirror(X), axis=1)
    assert np.all(same ^ flipped)  # each image is itself or its mirror image, not both
    assert 150 < flipped.sum() < 250
    # the mirror image reverses columns, within each channel
    a = X[0].reshape(3, 32, 32)
    assert np.array_equal(mirror(X[:1])[0].reshape(3, 32, 32)[1, 5], a[1, 5, ::-1])


@pytest.mark.parametrize("flip", [False, True])
def test_shift_is_a_translation_by_at_most_shift_pixels(flip):
    X = images(24)
    out = Augmenter(flip=flip, shift=2)(X.copy(), np.random.default_rng(3))
    found = set()
    for x, o in zip(X, out):
        sources = [x, mirror(x[None])[0]] if flip else [x]
        hits = [(dx, dy, f) for f, src in enumerate(sources) for dx in range(-2, 3)
                for dy in range(-2, 3) if np.array_equal(shifted(src, dx, dy), o)]
        assert len(hits) == 1, hits
        found.add(hits[0])
    assert len(found) > 5  # the shifts (and flips) vary from image to image


def test_same_seed_same_batch_other_seed_other_batch():
    X = images()
    aug = Augmenter(flip=True, shift=4)
    a = aug(X.copy(), np.random.default_rng(7))
    b = Augmenter(flip=True, shift=4)(X.copy(), np.random.default_rng(7))
    c = aug(X.copy(), np.random.default_rng(8))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert not np.array_equal(a, X)


def test_off_leaves_the_batch_and_draws_nothing():
    X, rng = images(), np.random.default_rng(0)
    state = rng.bit_generator.state
    assert np.array_equal(Augmenter()(X.copy(), rng), X)
    assert rng.bit_generator.state == state


@pytest.mark.parametrize("shift", [-1, 32, 1.5, True])
def test_bad_shift_is_refused(shift):
    with pytest.raises(ValueError, match="shift="):
        Augmenter(shift=shift)


def test_rows_of_another_size_are_refused():
    with pytest.raises(ValueError, match="3072 values per row"):
        Augmenter(flip=True)(np.zeros((2, 10), np.float32), np.random.default_rng(0))


def test_the_trainer_keeps_each_image_with_its_label(monkeypatch):
    """Images whose centre holds their label: after flips and shifts of up to 4 pixels the
    centre is still inside, so every row the step sees must show its own label."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 300)
    X = np.zeros((300, 3, 32, 32), np.float32)
    X[:, :, 8:24, 8:24] = y[:, None, None, None]
    X = X.reshape(300, -1)
    split = SimpleNamespace(X=X, y=y)
    data = SimpleNamespace(train=split, val=split, test=split)
    seen = []
    original = kbn.train_step.TrainStep.__call__

    def spy(self, Xb, yb, *args, **kwargs):
        seen.append((Xb.copy(), yb.copy()))
        return original(self, Xb, yb, *args, **kwargs)

    monkeypatch.setattr(kbn.train_step.TrainStep, "__call__", spy)
    fit(NetworkConfig(hidden=[8]), TrainConfig(n_batch=50, n_s=6, n_cycles=1, evals_per_cycle=1,
                                               flip=True, shift=4), data)
    assert len(seen) == 12
    moved = 0
    for Xb, yb in seen:
        assert np.array_equal(Xb.max(axis=1), yb.astype(np.float32))
        # a corner of a (nonzero) square moved away: the image was translated
        moved += int(np.sum((Xb[:, 8 * 32 + 8] == 0) & (yb != 0)))
    assert moved > 0  # the batches were really augmented


def test_the_window_copies_equal_the_gather():
    """The per-image window copies the trainer runs give the one-gather definition."""
    X = images(50)
    aug = Augmenter(flip=True, shift=3)
    rng = np.random.default_rng(5)
    flips = rng.random(50) < 0.5
    dy, dx = rng.integers(-3, 4, size=(2, 50))
    got = aug(X.copy(), np.random.default_rng(5))
    assert np.array_equal(got, aug.gather(X, flips, dy, dx))
    assert not np.array_equal(got, aug.gather(X, ~flips, dy, dx))  # a wrong flip shows
