"""PNG writing with opaque, content-derived names, and contact sheets of counterfactual pairs.

Image files shown to annotators are named ``<first 20 hex digits of sha256(pixels)>.png``: the name
is a function of the pixels only, so it reveals neither the attribute manipulated, nor the setting,
nor the pair; the PNG carries no text chunks or timestamps. The encoder is written here
(8-bit greyscale, filter type 0, zlib level 6) so that the bytes do not depend on the Pillow
version: same pixels, same file, same name.

Contact sheets (``sheets/``) are for the researcher, not for annotators: they label every column, as
the paper's Figures 9-20 do.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NAME_HEX_DIGITS = 20


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Float images in [0, 1] (any leading shape, last two axes H, W) to uint8 by rounding."""
    return np.round(np.clip(np.asarray(images, dtype=np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(image: np.ndarray, *, scale: int = 1) -> bytes:
    """Encode a 2-D uint8 greyscale image as PNG bytes, optionally enlarged ``scale`` times
    (nearest neighbour)."""
    image = np.asarray(image)
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"expected a 2-D uint8 image, got shape {image.shape} dtype {image.dtype}")
    if scale > 1:
        image = np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)
    h, w = image.shape
    raw = np.empty((h, w + 1), dtype=np.uint8)
    raw[:, 0] = 0
    raw[:, 1:] = image
    header = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return (PNG_SIGNATURE + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)) + _chunk(b"IEND", b""))


def image_name(image: np.ndarray, *, scale: int = 1) -> str:
    """The opaque, content-derived file name of an image: a hash of its pixels (and shape and
    enlargement), so equal images share one file and the name says nothing else."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    h = hashlib.sha256(b"cage-eval-png-v1")
    h.update(struct.pack(">III", *image.shape, scale))
    h.update(image.tobytes())
    return h.hexdigest()[:NAME_HEX_DIGITS] + ".png"


class ImageStore:
    """Writes PNGs into one directory under content-derived names, each distinct image once.

    Encoding and writing happen on ``workers`` threads (zlib and file I/O release the GIL), so they
    overlap with the decoding of the next batch; creating many small files is dominated by
    file-system latency, which several threads hide. :meth:`close` (or leaving the ``with`` block)
    waits for every write and re-raises the first failure.

    Parameters
    ----------
    directory : path
        Created if missing.
    scale : int
        Nearest-neighbour enlargement applied when encoding.
    workers : int
        Writer threads.
    batch : int
        Images handed to a writer thread at a time.
    """

    def __init__(self, directory: str | os.PathLike[str], *, scale: int = 1,
                 workers: int = 2, batch: int = 64) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.scale = scale
        self.written: set[str] = set()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="png")
        self._futures: list[Any] = []
        self._pending: list[tuple[str, np.ndarray]] = []
        self.batch = batch

    def _write(self, batch: list[tuple[str, np.ndarray]]) -> None:
        for name, image in batch:
            data = encode_png(image, scale=self.scale)
            fd = os.open(self.directory / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)

    def _submit(self) -> None:
        if self._pending:
            self._futures.append(self._pool.submit(self._write, self._pending))
            self._pending = []

    def add(self, image: np.ndarray) -> str:
        """Queue one uint8 image (H, W) for writing if not yet present; return its file name."""
        image = np.array(image, dtype=np.uint8, copy=True)
        name = image_name(image, scale=self.scale)
        if name not in self.written:
            self.written.add(name)
            self._pending.append((name, image))
            if len(self._pending) >= self.batch:
                self._submit()
        return name

    def close(self) -> None:
        """Write what is queued, wait for all writes; raise the first error."""
        self._submit()
        futures, self._futures = self._futures, []
        try:
            for f in futures:
                f.result()
        finally:
            self._pool.shutdown(wait=True)

    def __enter__(self) -> ImageStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def contact_sheet(
    rows: Sequence[Sequence[np.ndarray]],
    *,
    column_titles: Sequence[str],
    row_labels: Sequence[str],
    title: str,
    scale: int = 3,
    blocks: int = 2,
) -> bytes:
    """A labelled grid of image rows as PNG bytes (Pillow's built-in font).

    Parameters
    ----------
    rows : sequence of sequences of uint8 (H, W) images
        One row per pair, the same number of images in each.
    column_titles : sequence of str
        One title per image column.
    row_labels : sequence of str
        One short label per row (e.g. the attribute values).
    title : str
        The sheet's heading.
    scale : int
        Enlargement of each image.
    blocks : int
        Rows are laid out in this many side-by-side blocks.
    """
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    n_cols = len(column_titles)
    h, w = rows[0][0].shape if rows else (28, 28)
    cell_w, cell_h = w * scale + 6, h * scale + 6
    label_w = 150
    block_w = label_w + n_cols * cell_w + 20
    per_block = -(-len(rows) // blocks) if rows else 0
    top = 44
    sheet = Image.new("L", (blocks * block_w + 10, top + max(per_block, 1) * cell_h + 10), 255)
    draw = ImageDraw.Draw(sheet)
    draw.text((10, 6), title, fill=0, font=font)
    for b in range(blocks):
        x0 = 10 + b * block_w
        for j, name in enumerate(column_titles):
            draw.text((x0 + label_w + j * cell_w, 26), name, fill=0, font=font)
    for r, (images, label) in enumerate(zip(rows, row_labels, strict=True)):
        b, k = divmod(r, per_block)
        x0 = 10 + b * block_w
        y0 = top + k * cell_h
        draw.text((x0, y0 + cell_h // 2 - 6), label, fill=0, font=font)
        for j, image in enumerate(images):
            big = np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)
            sheet.paste(Image.fromarray(big), (x0 + label_w + j * cell_w, y0))
    raw = np.asarray(sheet, dtype=np.uint8)
    return encode_png(raw)
