"""Source images for counterfactual pairs when there are no real ones: decoded latents, lazily.

With labels from decoded prior samples or from precomputed latents, the "real" source image of a
pair is the generator's own image of the source latent. :class:`DecodedImages` decodes on demand,
in chunks of consecutive indices, and keeps the last few chunks, so a pool of any size costs the
memory of a few chunks. Pair making walks the pool in order (in a few interleaved queues), which
is what the chunk cache is for.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from cage.pairs.images import invalid_images, to_uint8


class DecodedImages:
    """Uint8 images ``G(latents[i])``: ``(H, W)`` for greyscale, ``(H, W, 3)`` for colour.

    Parameters
    ----------
    generator : object
        ``decode(z) -> (m, C, H, W)`` in ``[0, 1]``.
    latents : np.ndarray, shape (n, d)
    obs_shape : (int, int, int)
        ``(C, H, W)`` of one decoded image.
    chunk : int
        Latents decoded together.
    keep : int
        Chunks kept in memory.
    """

    def __init__(self, generator: Any, latents: np.ndarray, obs_shape: tuple[int, ...], *,
                 chunk: int = 64, keep: int = 8) -> None:
        self.generator = generator
        self.latents = np.asarray(latents, dtype=np.float32)
        c, h, w = obs_shape
        n = self.latents.shape[0]
        self.shape: tuple[int, ...] = (n, h, w) if c == 1 else (n, h, w, 3)
        self.chunk = chunk
        self.keep = keep
        self.decoded = 0
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._invalid: OrderedDict[int, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return self.shape[0]

    def take(self, order: np.ndarray) -> DecodedImages:
        """The images of ``latents[order]``, decoded on demand in that order."""
        c = 1 if len(self.shape) == 3 else 3
        return DecodedImages(self.generator, self.latents[np.asarray(order)],
                             (c, *self.shape[1:3]), chunk=self.chunk, keep=self.keep)

    def __getitem__(self, index: int) -> np.ndarray:
        block, offset = divmod(int(index), self.chunk)
        return self._chunk(block)[0][offset]

    def valid(self, index: int) -> bool:
        """False when the decode of image ``index`` held NaN, infinite or out-of-range values
        (:func:`cage.pairs.images.invalid_images`; its uint8 image is not what the generator made)."""
        block, offset = divmod(int(index), self.chunk)
        return not bool(self._chunk(block)[1][offset])

    def _chunk(self, block: int) -> tuple[np.ndarray, np.ndarray]:
        images = self._cache.get(block)
        if images is None:
            z = torch.from_numpy(self.latents[block * self.chunk:(block + 1) * self.chunk])
            with torch.no_grad():
                x = self.generator.decode(z).detach().to("cpu", torch.float32).numpy()
            self.decoded += x.shape[0]
            self._invalid[block] = invalid_images(x)
            x = np.nan_to_num(x)
            images = to_uint8(x[:, 0] if x.shape[1] == 1 else x.transpose(0, 2, 3, 1))
            self._cache[block] = images
            while len(self._cache) > self.keep:
                self._invalid.pop(next(iter(self._cache)), None)
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(block)
            self._invalid.move_to_end(block)
        return images, self._invalid[block]


class StoredImages:
    """Uint8 images already decoded (kept while the samples were labelled): the same interface
    as :class:`DecodedImages`, no decoding.

    Parameters
    ----------
    images : np.ndarray, uint8
        ``(n, H, W)`` or ``(n, H, W, 3)``.
    invalid : np.ndarray of bool, shape (n,), optional
        Images whose decode held NaN, infinite or out-of-range values.
    """

    decoded = 0

    def __init__(self, images: np.ndarray, invalid: np.ndarray | None = None) -> None:
        self.images = images
        self.invalid = np.zeros(len(images), dtype=bool) if invalid is None else \
            np.asarray(invalid, dtype=bool)
        self.shape: tuple[int, ...] = tuple(images.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def take(self, order: np.ndarray) -> StoredImages:
        """The images ``order`` names, in that order."""
        order = np.asarray(order)
        return StoredImages(self.images[order], self.invalid[order])

    def __getitem__(self, index: int) -> np.ndarray:
        return self.images[int(index)]

    def valid(self, index: int) -> bool:
        """False when the decode of image ``index`` was not a valid image."""
        return not bool(self.invalid[int(index)])
