"""PNG writing with opaque, content-derived names, and contact sheets of counterfactual pairs.

Image files shown to annotators are named ``<first 20 hex digits of sha256(pixels)>.png``: the name
is a function of the pixels only, so it reveals neither the attribute manipulated, nor the setting,
nor the pair; the PNG carries no text chunks or timestamps. The encoder is written here
(8-bit greyscale or RGB, filter type 0, zlib stream with the run-length strategy ``Z_RLE``) so that
the bytes do not depend on the Pillow version: same pixels, same file, same name. Every image an
annotator sees goes through it, attention checks included, so no byte of a file tells one kind of
HIT from another. :func:`check_png` is the other side: before an image is rendered into a page or
uploaded, it must be a well-formed PNG whose name is the hash of its content. On the digits
``Z_RLE`` is both faster than zlib's default strategy at level 6 (about 9 vs 15 us per 28x28 image,
most of it the stream's set-up) and smaller (152 vs 158 bytes of image data on average): the images
are runs of black background. Small files matter: HITs may inline the images as data URIs under
MTurk's 64 KB question limit, so storing them uncompressed (about 1 us, but 5x the bytes) is not
an option.

Contact sheets (``sheets/``) are for the researcher, not for annotators: they label every column, as
the paper's Figures 9-20 do.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import io
import os
import struct
import zlib
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NAME_HEX_DIGITS = 20
_NAME_SALT = hashlib.sha256(b"cage-eval-png-v1")
_IDAT_CRC = zlib.crc32(b"IDAT")
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)


#: How far outside [0, 1] a decoded value may lie before its image is invalid (float rounding).
RANGE_TOLERANCE = 1e-4


def invalid_images(x: np.ndarray) -> np.ndarray:
    """``(m,)`` bool: which decoded images ``x`` ``(m, ...)`` hold a NaN or infinite value, or
    a value outside ``[0, 1]`` by more than :data:`RANGE_TOLERANCE`."""
    flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(flat).all(axis=1)
        bad |= (flat < -RANGE_TOLERANCE).any(axis=1) | (flat > 1 + RANGE_TOLERANCE).any(axis=1)
    return bad


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Float images in [0, 1] (any leading shape, last two axes H, W) to uint8 by rounding (half to
    even, in float64, where ``x * 255`` is exact for float32 ``x``)."""
    x = np.array(images, dtype=np.float64)
    np.clip(x, 0.0, 1.0, out=x)
    x *= 255.0
    np.rint(x, out=x)
    return x.astype(np.uint8)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


_IEND = _chunk(b"IEND", b"")


#: PNG colour types the encoder writes, by channels: 1 = greyscale (0), 3 = RGB (2).
_COLOUR_TYPE = {1: 0, 3: 2}


@functools.lru_cache(maxsize=64)
def _head(width: int, height: int, channels: int = 1) -> bytes:
    """Signature and IHDR of an 8-bit greyscale (1 channel) or RGB (3 channels) image."""
    return PNG_SIGNATURE + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8,
                                                       _COLOUR_TYPE[channels], 0, 0, 0))


def _scanlines(images: np.ndarray, scale: int) -> np.ndarray:
    """uint8 images ``(n, H, W)`` or ``(n, H, W, 3)`` to PNG scanlines
    ``(n, H * scale, W * scale * channels + 1)``: each row prefixed by filter type 0, enlarged
    ``scale`` times (nearest neighbour)."""
    if scale > 1:
        images = np.repeat(np.repeat(images, scale, axis=1), scale, axis=2)
    n, h = images.shape[:2]
    row = int(np.prod(images.shape[2:]))
    raw = np.empty((n, h, row + 1), dtype=np.uint8)
    raw[:, :, 0] = 0
    raw[:, :, 1:] = images.reshape(n, h, row)
    return raw


def _png(scanlines: np.ndarray, channels: int = 1) -> bytes:
    """PNG bytes of one image given its scanlines ``(H, W * channels + 1)``."""
    deflate = zlib.compressobj(6, zlib.DEFLATED, 15, 8, zlib.Z_RLE)
    idat = deflate.compress(scanlines.tobytes()) + deflate.flush()
    h, w1 = scanlines.shape
    return b"".join((_head((w1 - 1) // channels, h, channels), struct.pack(">I", len(idat)),
                     b"IDAT", idat, struct.pack(">I", zlib.crc32(idat, _IDAT_CRC)), _IEND))


def _check_image(image: np.ndarray) -> int:
    """Channels of a uint8 greyscale ``(H, W)`` or RGB ``(H, W, 3)`` image; ValueError otherwise."""
    if image.dtype == np.uint8 and image.ndim == 2:
        return 1
    if image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3:
        return 3
    raise ValueError(f"expected a uint8 image (H, W) or (H, W, 3), got shape {image.shape} "
                     f"dtype {image.dtype}")


def encode_png(image: np.ndarray, *, scale: int = 1) -> bytes:
    """Encode a uint8 greyscale ``(H, W)`` or RGB ``(H, W, 3)`` image as PNG bytes, optionally
    enlarged ``scale`` times (nearest neighbour)."""
    image = np.asarray(image)
    channels = _check_image(image)
    return _png(_scanlines(image[None], scale)[0], channels)


def _image_shape_ok(shape: tuple[int, ...]) -> bool:
    return len(shape) == 2 or (len(shape) == 3 and shape[2] == 3)


def _channels(shape: tuple[int, ...]) -> int:
    return 1 if len(shape) == 2 else shape[2]


def _name(pixels: bytes, shape: tuple[int, ...], scale: int) -> str:
    h = _NAME_SALT.copy()
    h.update(struct.pack(f">{len(shape) + 1}I", *shape, scale))
    h.update(pixels)
    return h.hexdigest()[:NAME_HEX_DIGITS] + ".png"


def image_name(image: np.ndarray, *, scale: int = 1) -> str:
    """The opaque, content-derived file name of an image: a hash of its pixels (and shape and
    enlargement), so equal images share one file and the name says nothing else."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    _check_image(image)
    return _name(image.tobytes(), image.shape, scale)


# --------------------------------------------------------------------------- checking


#: Images larger than this (per side) are refused: nothing cage-eval shows is that large.
MAX_SIDE = 4096
#: Chunks a shown image may hold: the encoder writes only these.
_CHUNKS = (b"IHDR", b"IDAT", b"IEND")
_HEX = frozenset("0123456789abcdef")


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """``(type, data)`` of every chunk, checking lengths and CRCs; ValueError when malformed."""
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG (no PNG signature)")
    chunks, pos = [], len(PNG_SIGNATURE)
    while pos < len(data):
        if pos + 12 > len(data):
            raise ValueError("truncated chunk")
        (length,) = struct.unpack_from(">I", data, pos)
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        if len(body) != length or pos + 12 + length > len(data):
            raise ValueError(f"truncated {kind!r} chunk")
        (crc,) = struct.unpack_from(">I", data, pos + 8 + length)
        if zlib.crc32(kind + body) != crc:
            raise ValueError(f"bad CRC in the {kind!r} chunk")
        chunks.append((kind, body))
        pos += 12 + length
        if kind == b"IEND":
            break
    if pos != len(data):
        raise ValueError("bytes after the IEND chunk")
    return chunks


def _check_layout(chunks: list[tuple[bytes, bytes]]) -> tuple[int, int, int]:
    """Width, height and channels from IHDR, checking the chunk order; ValueError otherwise."""
    kinds = [k for k, _ in chunks]
    if (not kinds or kinds[0] != b"IHDR" or kinds[-1] != b"IEND" or len(chunks[0][1]) != 13
            or b"IDAT" not in kinds):
        raise ValueError("chunks are not IHDR, IDAT..., IEND")
    unknown = sorted({k.decode("latin-1") for k in kinds if k not in _CHUNKS})
    if unknown:
        raise ValueError(f"unexpected chunk(s) {', '.join(unknown)[:40]}")
    first, last = kinds.index(b"IDAT"), len(kinds) - 1 - kinds[::-1].index(b"IDAT")
    if kinds[first:last + 1] != [b"IDAT"] * (last + 1 - first) or kinds.count(b"IHDR") != 1:
        raise ValueError("IDAT chunks are not consecutive")
    width, height, depth, colour, comp, filt, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    channels = {v: k for k, v in _COLOUR_TYPE.items()}.get(colour)
    if depth != 8 or channels is None or (comp, filt, interlace) != (0, 0, 0):
        raise ValueError(f"not an 8-bit greyscale or RGB, non-interlaced PNG (bit depth {depth}, "
                         f"colour type {colour}, interlace {interlace})")
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
        raise ValueError(f"size {width}x{height} is outside 1..{MAX_SIDE} pixels per side")
    return width, height, channels


def _pixels(data: bytes, chunks: list[tuple[bytes, bytes]], width: int, height: int,
            channels: int) -> np.ndarray:
    """The decoded pixels, ``(H, W)`` or ``(H, W, 3)``; ValueError when the data do not fit."""
    raw_size = height * (width * channels + 1)
    inflate = zlib.decompressobj()
    try:
        raw = inflate.decompress(b"".join(b for k, b in chunks if k == b"IDAT"), raw_size + 1)
    except zlib.error as exc:
        raise ValueError(f"image data do not decompress ({exc})") from None
    if len(raw) != raw_size or not inflate.eof or inflate.unused_data:
        raise ValueError(f"image data hold {len(raw)} bytes, not the {raw_size} of a "
                         f"{width}x{height} image")
    from PIL import Image  # undoes every PNG filter type in C

    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return np.asarray(im, dtype=np.uint8)


def _scale_candidates(pixels: np.ndarray) -> list[tuple[np.ndarray, int]]:
    """``(image before enlargement, scale)`` for every nearest-neighbour enlargement that
    reproduces ``pixels`` (scale 1 always)."""
    out = [(pixels, 1)]
    h, w = pixels.shape[:2]
    for s in range(2, 9):
        if h % s or w % s:
            continue
        small = pixels[::s, ::s]
        if np.array_equal(np.repeat(np.repeat(small, s, axis=0), s, axis=1), pixels):
            out.append((small, s))
    return out


def enlargement(pixels: np.ndarray) -> tuple[np.ndarray, int]:
    """``(image, scale)`` such that ``pixels`` is ``image`` enlarged ``scale`` times (nearest
    neighbour), with the largest such scale up to 8 (1 when the image is not an enlargement)."""
    return _scale_candidates(np.asarray(pixels, dtype=np.uint8))[-1]


def _name_matches(name: str, data: bytes, pixels: np.ndarray) -> bool:
    """True when ``name`` is the content hash of the image: of its pixels (this module's names)
    or of its bytes (``sha256(file)[:digits]``, as runs made by other tools name them)."""
    stem, suffix = name[:-4], name[-4:]
    if suffix != ".png" or not 8 <= len(stem) <= 64 or not set(stem) <= _HEX:
        return False
    if len(stem) == NAME_HEX_DIGITS and any(
            image_name(small, scale=s) == name for small, s in _scale_candidates(pixels)):
        return True
    return hashlib.sha256(data).hexdigest()[:len(stem)] == stem


@dataclass(frozen=True)
class PngInfo:
    """What :func:`check_png` found: the image's size in pixels and its channels (1 or 3)."""

    width: int
    height: int
    channels: int


def check_png(data: bytes, name: str) -> PngInfo:
    """Check that ``data`` is a well-formed PNG this project could show, named by its content.

    The bytes must be a PNG with only IHDR, IDAT and IEND chunks (valid CRCs, nothing after
    IEND), 8-bit greyscale or RGB, at most :data:`MAX_SIDE` pixels per side, whose image data
    inflate to exactly the size IHDR announces (no decompression bomb), and ``name`` must be the
    hash of the content: :func:`image_name` of the pixels (at any nearest-neighbour enlargement
    1..8), or the first hex digits of the file's SHA-256.

    Raises
    ------
    ValueError
        Saying what is wrong (short, never echoing the data).
    """
    chunks = _chunks(data)
    width, height, channels = _check_layout(chunks)
    try:
        pixels = _pixels(data, chunks, width, height, channels)
    except (OSError, SyntaxError) as exc:  # PIL's errors for undecodable data
        raise ValueError(f"undecodable image data ({type(exc).__name__})") from None
    if not _name_matches(name, data, pixels):
        raise ValueError("the file name is not the hash of the image's content")
    return PngInfo(width, height, channels)


class ImageStore:
    """Writes PNGs into one directory under content-derived names, each distinct image once.

    :meth:`add` names an image (a hash of its pixels, on the caller's thread) and queues it;
    encoding and writing happen in batches on one background thread (zlib and file I/O release the
    GIL), so they overlap with the caller's next decoding. :meth:`discard` takes back one
    :meth:`add`: a file nobody holds any more is deleted (in order, on the same thread), so an image
    can be written speculatively, before it is known to be needed. At most ``max_pending`` batches
    wait: a caller that outpaces the disk then waits instead of piling up images in memory. A write
    failure is raised by the next :meth:`add` that notices it, or by :meth:`close` (or leaving the
    ``with`` block), which waits for every write.

    :attr:`written` is the set of file names the directory holds (or will, once closed).

    Parameters
    ----------
    directory : path
        Created if missing.
    scale : int
        Nearest-neighbour enlargement applied when encoding.
    batch : int
        Images handed to a writer thread at a time.
    max_pending : int
        Batches queued for the writers before :meth:`add` waits.
    """

    def __init__(self, directory: str | os.PathLike[str], *, scale: int = 1, batch: int = 32,
                 max_pending: int = 64) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.scale = scale
        self.batch = batch
        self.max_pending = max_pending
        self.written: set[str] = set()
        self._holders: dict[str, int] = {}
        self._dir_fd: int | None = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="png")
        self._futures: collections.deque[Future[None]] = collections.deque()
        self._names: list[str] = []
        self._pixels: list[bytes] = []
        self._shape: tuple[int, ...] = ()

    def _write(self, names: list[str], pixels: list[bytes], shape: tuple[int, ...]) -> None:
        images = np.frombuffer(b"".join(pixels), dtype=np.uint8).reshape((len(pixels),) + shape)
        for name, lines in zip(names, _scanlines(images, self.scale), strict=True):
            data = _png(lines, _channels(shape))
            fd = os.open(name, _CREATE, 0o644, dir_fd=self._dir_fd)
            try:
                if os.write(fd, data) != len(data):
                    raise OSError(f"{self.directory / name}: short write (disk full?)")
            finally:
                os.close(fd)

    def _remove(self, name: str) -> None:
        os.unlink(name, dir_fd=self._dir_fd)

    def _submit(self, *task: object) -> None:
        if self._names:
            self._futures.append(self._pool.submit(self._write, self._names, self._pixels,
                                                   self._shape))
            self._names, self._pixels = [], []
        if task:
            self._futures.append(self._pool.submit(*task))
        futures = self._futures
        while futures and (futures[0].done() or len(futures) > self.max_pending):
            futures.popleft().result()

    def add(self, image: np.ndarray) -> str:
        """Queue one uint8 image (H, W) or (H, W, 3) for writing if not yet present; return its
        file name."""
        image = np.asarray(image, dtype=np.uint8)
        if not _image_shape_ok(image.shape):
            raise ValueError(f"expected a 2-D image or (H, W, 3), got shape {image.shape}")
        pixels = image.tobytes()
        name = _name(pixels, image.shape, self.scale)
        held = self._holders.get(name, 0)
        self._holders[name] = held + 1
        if not held:
            self.written.add(name)
            if image.shape != self._shape:
                self._submit()
                self._shape = image.shape
            self._names.append(name)
            self._pixels.append(pixels)
            if len(self._names) >= self.batch:
                self._submit()
        return name

    def discard(self, name: str) -> None:
        """Take back one :meth:`add` of ``name``; delete the file when no other add holds it."""
        held = self._holders[name] - 1
        if held:
            self._holders[name] = held
            return
        del self._holders[name]
        self.written.discard(name)
        try:
            k = self._names.index(name)
        except ValueError:
            self._submit(self._remove, name)  # after its write: one thread, tasks in order
        else:
            del self._names[k], self._pixels[k]

    def close(self) -> None:
        """Write what is queued, wait for all writes; raise the first error."""
        try:
            self._submit()
            while self._futures:
                self._futures.popleft().result()
        finally:
            self._futures.clear()
            self._pool.shutdown(wait=True)
            if self._dir_fd is not None:
                os.close(self._dir_fd)
                self._dir_fd = None

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
    rows : sequence of sequences of uint8 (H, W) or (H, W, 3) images
        One row per pair, the same number of images in each; the sheet is RGB when they are.
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
    h, w = rows[0][0].shape[:2] if rows else (28, 28)
    rgb = bool(rows) and rows[0][0].ndim == 3
    cell_w, cell_h = w * scale + 6, h * scale + 6
    label_w = 150
    block_w = label_w + n_cols * cell_w + 20
    per_block = -(-len(rows) // blocks) if rows else 0
    top = 44
    sheet = Image.new("RGB" if rgb else "L",
                      (blocks * block_w + 10, top + max(per_block, 1) * cell_h + 10),
                      (255, 255, 255) if rgb else 255)
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
