"""A folder of images named by an attributes table, read lazily and checked before any work.

:func:`open_image_folder` checks that every name in the table is a file in the folder, that every
file is a readable image and that all have one size (reading only the headers), then returns an
:class:`ImageFolder`: ``folder[i]`` reads image ``i`` as uint8 ``(H, W)`` (greyscale) or
``(H, W, 3)`` (RGB) at the generator's size, so a folder of any length is never held in memory.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from cage_eval.errors import InputFileError

_SHOW = 3  # names shown in a message


class ImageFolder:
    """Uint8 images of ``directory / names[i]``, converted to ``channels`` and ``size``.

    Parameters
    ----------
    directory : Path
    names : sequence of str
    channels : {1, 3}
        Greyscale (Pillow mode ``L``) or RGB.
    size : (int, int)
        ``(H, W)`` of the returned images.
    native : (int, int)
        ``(H, W)`` of the files; resized (Lanczos) when different from ``size``.
    """

    def __init__(self, directory: Path, names: Sequence[str], *, channels: int,
                 size: tuple[int, int], native: tuple[int, int]) -> None:
        self.directory = Path(directory)
        self.names = list(names)
        self.channels = channels
        self.size = size
        self.native = native

    @property
    def shape(self) -> tuple[int, ...]:
        h, w = self.size
        return (len(self.names), h, w) if self.channels == 1 else (len(self.names), h, w, 3)

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> np.ndarray:
        from PIL import Image

        path = self.directory / self.names[int(index)]
        try:
            with Image.open(path) as im:
                im = im.convert("L" if self.channels == 1 else "RGB")
                if self.size != self.native:
                    im = im.resize((self.size[1], self.size[0]), Image.Resampling.LANCZOS)
                return np.asarray(im, dtype=np.uint8).copy()
        except OSError as exc:
            raise InputFileError(f"{path}: cannot read the image ({exc})") from None

    def take(self, order: Sequence[int] | np.ndarray) -> ImageFolder:
        """The same folder with its images in ``order`` (indices into this one)."""
        return ImageFolder(self.directory, [self.names[int(i)] for i in order],
                           channels=self.channels, size=self.size, native=self.native)

    def floats(self, indices: Sequence[int] | np.ndarray) -> torch.Tensor:
        """Images ``indices`` as float32 ``(m, C, H, W)`` in ``[0, 1]``."""
        arr = np.stack([self[i] for i in indices])
        arr = arr[:, None] if arr.ndim == 3 else arr.transpose(0, 3, 1, 2)
        return torch.from_numpy(np.ascontiguousarray(arr)).to(torch.float32) / 255.0


def _safe_name(name: str) -> bool:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return bool(parts) and not PurePosixPath(name).is_absolute() and ".." not in parts


def open_image_folder(directory: Path, names: Sequence[str], *, table: Path, channels: int,
                      size: tuple[int, int], resize: bool,
                      resize_key: str = "[labels] resize") -> ImageFolder:
    """Check the folder against the table's names and return a lazy :class:`ImageFolder`.

    Parameters
    ----------
    directory : Path
        The image folder.
    names : sequence of str
        Image file names from the attributes table ``table`` (for messages).
    channels : {1, 3}
        The generator's channels (images are converted).
    size : (int, int)
        The generator's ``(H, W)``.
    resize : bool
        Resize images of another size to ``size``; otherwise that is an error.
    resize_key : str
        The setting that turns ``resize`` on, for the message.

    Raises
    ------
    InputFileError
        Names that are not files of the folder, unreadable images, images of different sizes, or
        a size other than the generator's without ``resize``.
    """
    from PIL import Image, UnidentifiedImageError

    unsafe = [n for n in names if not _safe_name(n)]
    if unsafe:
        raise InputFileError(f"{table}: image name {unsafe[0]!r} leaves the image folder; names "
                             "must be relative paths inside it")
    missing = [n for n in names if not (directory / n).is_file()]
    if missing:
        present = sorted(p.name for p in directory.iterdir() if p.is_file())[:_SHOW]
        held = (f"; the folder holds e.g. {', '.join(repr(p) for p in present)}" if present
                else "; the folder has no files")
        raise InputFileError(
            f"{table}: {len(missing)} of {len(names)} image names are not files in {directory} "
            f"(first: {', '.join(repr(n) for n in missing[:_SHOW])}){held}; the first column "
            "must name the images of that folder (CelebA-HQ images need CelebA-HQ names, e.g. "
            "CelebAMask-HQ-attribute-anno.txt)")
    sizes: dict[tuple[int, int], list[str]] = {}
    for name in names:
        try:
            with Image.open(directory / name) as im:
                sizes.setdefault((im.height, im.width), []).append(name)
        except (OSError, UnidentifiedImageError) as exc:
            raise InputFileError(f"{directory / name}: not a readable image ({exc})") from None
    if len(sizes) > 1:
        common = Counter({k: len(v) for k, v in sizes.items()}).most_common()
        (h0, w0), _ = common[0]
        (h1, w1), _ = common[1]
        raise InputFileError(
            f"{directory}: images of different sizes: {sizes[(h0, w0)][0]!r} is {w0}x{h0}, "
            f"{sizes[(h1, w1)][0]!r} is {w1}x{h1} ({len(sizes)} sizes in all: "
            + ", ".join(f"{w}x{h}: {n}" for (h, w), n in common[:4])
            + "); CAGE needs one size, resize the images beforehand")
    (native,) = sizes
    if native != tuple(size) and not resize:
        raise InputFileError(
            f"{directory}: images are {native[1]}x{native[0]} but the generator makes "
            f"{size[1]}x{size[0]}; set {resize_key} = true to resize them when read, or "
            "resize the files")
    return ImageFolder(directory, names, channels=channels, size=tuple(size), native=native)
