"""Data augmentation on the fly: random horizontal flips and translations, vectorised.

The training images are stored normalised and flattened, (n, 3072) rows of 3 x 32 x 32
channel-first pixels (kbn.data). One gather per batch does both transforms: each output
pixel (c, r, q) of image i reads pixel (c, r + dy_i, q' + dx_i) of the image zero-padded
by ``shift`` pixels, q' being q or 31 - q when image i is flipped. The padding is 0 in the
normalised space, i.e. each border pixel's training mean (the per-pixel mean and std of
CIFAR-10 are nearly flip- and shift-invariant, so transforming the normalised images is
close to transforming the raw ones and normalising after).

The random draws (a flip bit and two shifts per image) come from the generator passed in,
so a training's augmentations are fixed by its seed. Labels do not change.
"""

from __future__ import annotations

import numpy as np

CHANNELS, SIDE = 3, 32  # CIFAR-10's images, channel-first


class Augmenter:
    """Transforms batches of (n, 3072) images in place: ``augmenter(batch, rng)``.

    flip: flip each image left-right with probability 1/2; shift: translate each image by
    dx, dy drawn uniformly from {-shift, ..., shift} (pad with zeros, crop). Buffers are
    made for the largest batch seen and reused.
    """

    def __init__(self, flip: bool = False, shift: int = 0):
        if not isinstance(shift, (int, np.integer)) or isinstance(shift, bool) or shift < 0:
            raise ValueError(f"shift={shift!r}: must be an int >= 0 (pixels)")
        if shift >= SIDE:
            raise ValueError(f"shift={shift!r}: must be below the image side {SIDE}")
        self.flip, self.shift = bool(flip), int(shift)
        P = SIDE + 2 * self.shift  # side of the padded image
        c, r, q = np.meshgrid(np.arange(CHANNELS), np.arange(SIDE), np.arange(SIDE), indexing="ij")
        s = self.shift
        # where each output pixel is read in the padded image, unflipped and flipped
        self.base = ((c * P + r + s) * P + q + s).reshape(-1).astype(np.intp)
        self.base_flipped = ((c * P + r + s) * P + (SIDE - 1 - q) + s).reshape(-1).astype(np.intp)
        self.P = P
        self._padded = None

    @property
    def active(self) -> bool:
        return self.flip or self.shift > 0

    def __call__(self, X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """X: (n, 3072), transformed in place (and returned)."""
        n, d = X.shape
        if d != CHANNELS * SIDE * SIDE:
            raise ValueError(f"augmentation needs 3 x 32 x 32 images flattened to "
                             f"{CHANNELS * SIDE * SIDE} values per row, got {d}")
        if not self.active or n == 0:
            return X
        flips = rng.random(n) < 0.5 if self.flip else np.zeros(n, bool)
        if self.shift == 0:  # flips alone: reverse the columns of the flipped images
            rows = np.flatnonzero(flips)
            imgs = X[rows].reshape(-1, CHANNELS, SIDE, SIDE)
            X[rows] = imgs[..., ::-1].reshape(len(rows), -1)
            return X
        dy, dx = rng.integers(-self.shift, self.shift + 1, size=(2, n))
        P, s = self.P, self.shift
        if self._padded is None or self._padded.shape[0] < n or self._padded.dtype != X.dtype:
            self._padded = np.zeros((n, CHANNELS, P, P), X.dtype)
        padded = self._padded[:n]  # its border stays 0
        padded[:, :, s:s + SIDE, s:s + SIDE] = X.reshape(n, CHANNELS, SIDE, SIDE)
        # one window copy per image (a strided view of the padded batch): ~3 us each,
        # several times faster than one fancy-indexed gather over the whole batch
        out = X.reshape(n, CHANNELS, SIDE, SIDE)
        rows, cols = (dy + s).tolist(), (dx + s).tolist()
        for i, (r, q, f) in enumerate(zip(rows, cols, flips.tolist())):
            window = padded[i, :, r:r + SIDE, q:q + SIDE]
            out[i] = window[..., ::-1] if f else window
        return X

    def gather(self, X: np.ndarray, flips: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
        """The same transform as one fancy-indexed gather (the readable definition: output
        pixel (c, r, q) reads padded pixel (c, r + dy, q' + dx), q' = q or 31 - q); the
        tests hold the two equal."""
        n, P, s = X.shape[0], self.P, self.shift
        padded = np.zeros((n, CHANNELS, P, P), X.dtype)
        padded[:, :, s:s + SIDE, s:s + SIDE] = X.reshape(n, CHANNELS, SIDE, SIDE)
        index = np.where(np.asarray(flips)[:, None], self.base_flipped, self.base)
        index = index + (np.asarray(dy) * P + np.asarray(dx))[:, None]
        return np.take_along_axis(padded.reshape(n, -1), index, axis=1)
