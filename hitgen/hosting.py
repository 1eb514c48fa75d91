"""Where a HIT page gets its images from: an ``ImageHost`` turns an opaque file name into a URL.

``DataUriHost`` inlines the PNG bytes (``data:image/png;base64,...``), so a page needs nothing
outside itself, as long as it stays under MTurk's 65,535-byte question limit. ``UrlPrefixHost``
points at a directory served elsewhere (a web server, a Turkle static route). The S3 host, which
needs boto3, lives in ``mturk.images_s3``.

Every URL a host returns is safe to substitute raw into ``src="..."`` (no quote, angle bracket,
apostrophe or whitespace), which Turkle and the requester website's ``${...}`` substitution need.

Every image is read through :func:`read_image` before it is inlined, copied or uploaded: a regular
file directly in ``RUN/images`` (no symbolic link, neither the file nor the folder), a well-formed
PNG of the run's image size whose name is the hash of its content
(:func:`cage.pairs.images.check_png`). A link or a substituted file would otherwise carry any local
file into a public HIT.
"""

from __future__ import annotations

import base64
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

from cage.pairs.images import PngInfo, check_png
from cage_eval import runs
from cage_eval.errors import ConfigError, RunDirError

#: No image a HIT shows is larger than this; bigger files are refused unread.
MAX_IMAGE_BYTES = 8 * 1024 * 1024
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)

#: Characters that must never appear in a value substituted raw into a ``${...}`` template.
UNSAFE_SUBSTITUTION_CHARS = frozenset('"\'<>` \t\r\n\\')


class ImageHost(Protocol):
    """Anything that maps an image file name (inside ``RUN/images``) to a URL a browser can load."""

    def url(self, image_name: str) -> str:
        """The URL of ``images/<image_name>``."""
        ...


def _plain_name(images: Path, image_name: str) -> str:
    if (not image_name or Path(image_name).name != image_name or image_name.startswith(".")
            or "\x00" in image_name):
        raise RunDirError(f"{images}: image name {image_name[:60]!r} is not a plain file name")
    return image_name


def _read_regular(images: Path, image_name: str) -> bytes:
    """The bytes of ``images/<image_name>``, opened without following any symbolic link."""
    path = images / image_name
    try:
        dir_fd = os.open(images, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW | _CLOEXEC)
    except FileNotFoundError:
        raise RunDirError(f"{images}: missing; the run has no images (regenerate it)") from None
    except OSError as exc:
        raise RunDirError(f"{images}: not a plain folder of the run ({exc.strerror}); a "
                          "symbolic link is refused: copy the images into the run") from None
    try:
        try:
            fd = os.open(image_name, os.O_RDONLY | _NOFOLLOW | _CLOEXEC, dir_fd=dir_fd)
        except FileNotFoundError:
            raise RunDirError(f"{path}: missing; the run's images are incomplete (regenerate "
                              "the run, or rebuild the items with `cage-eval hits`)") from None
        except OSError as exc:
            raise RunDirError(f"{path}: not a regular file of the run ({exc.strerror}); a "
                              "symbolic link is refused: replace it with the image itself") from None
    finally:
        os.close(dir_fd)
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise RunDirError(f"{path}: not a regular file; regenerate the run's images")
        if info.st_size > MAX_IMAGE_BYTES:
            raise RunDirError(f"{path}: {info.st_size:,} bytes, over the {MAX_IMAGE_BYTES:,} an "
                              "image may have; regenerate the run's images")
        return fh.read(MAX_IMAGE_BYTES + 1)


def read_image(run_dir: Path, image_name: str, *, expect: PngInfo | None = None
               ) -> tuple[bytes, PngInfo]:
    """The checked bytes of ``RUN/images/<image_name>`` and their size.

    Refuses (:class:`RunDirError` naming the file) a name with a directory part, a symbolic link
    (the file or ``images/``), anything but a regular file, a file over
    :data:`MAX_IMAGE_BYTES`, a malformed PNG, one whose name is not the hash of its content, and
    one whose size or channels differ from ``expect``.
    """
    images = Path(run_dir) / runs.IMAGES_DIR
    data = _read_regular(images, _plain_name(images, image_name))
    try:
        info = check_png(data, image_name)
    except ValueError as exc:
        raise RunDirError(f"{images / image_name}: {exc}; it is not an image this run made, so "
                          "it is never shown to workers (regenerate the run's images)") from None
    if expect is not None and info != expect:
        raise RunDirError(f"{images / image_name}: a {info.width}x{info.height} image with "
                          f"{info.channels} channel(s), but the run's images are "
                          f"{expect.width}x{expect.height} with {expect.channels}; regenerate "
                          "the run's images")
    return data, info


class ImageReader:
    """Reads a run's images through :func:`read_image`, each once, all of one size.

    The first image read sets the size every other one must have. ``pending`` maps names of
    images not yet written to ``RUN/images`` (attention images of a
    :class:`hitgen.items.HitPlan`) to their bytes; they are checked the same way.
    """

    def __init__(self, run_dir: Path, pending: Mapping[str, bytes] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.pending = dict(pending or {})
        self.expect: PngInfo | None = None
        self._cache: dict[str, bytes] = {}

    def read(self, image_name: str) -> bytes:
        """The checked bytes of one image (cached)."""
        if image_name not in self._cache:
            if image_name in self.pending:
                data = self.pending[image_name]
                try:
                    info = check_png(data, image_name)
                except ValueError as exc:  # pragma: no cover - made by this package
                    raise RunDirError(f"attention image {image_name}: {exc}") from None
                if self.expect is not None and info != self.expect:
                    raise RunDirError(f"attention image {image_name}: its size differs from "
                                      "the run's images")
            else:
                data, info = read_image(self.run_dir, image_name, expect=self.expect)
            self.expect = self.expect or info
            self._cache[image_name] = data
        return self._cache[image_name]


def image_path(run_dir: Path, image_name: str) -> Path:
    """``RUN/images/<image_name>`` after :func:`read_image` checked it."""
    read_image(run_dir, image_name)
    return Path(run_dir) / runs.IMAGES_DIR / image_name


def mime_type(image_name: str) -> str:
    """The MIME type of an image file name (PNG unless the suffix says JPEG or WebP)."""
    suffix = Path(image_name).suffix.lower()
    return {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}.get(suffix, "image/png")


def check_substitution_value(value: str, *, field: str) -> str:
    """Return ``value`` if it is safe to substitute raw into HTML (Turkle, requester website).

    Turkle replaces ``${field}`` with the CSV value verbatim, with no HTML escaping
    (docs/platforms.md §1.4), so a quote would end the ``src`` attribute early.
    """
    bad = sorted({c for c in value if c in UNSAFE_SUBSTITUTION_CHARS})
    if bad:
        raise ConfigError(f"{field} value {value[:60]!r} contains {bad!r}, which a raw ${{...}} "
                          "substitution would break on; use URL-safe names and URLs")
    return value


class DataUriHost:
    """Inline images as ``data:`` URIs (base64); results are cached per image name.

    ``pending`` maps names of images not yet written to ``RUN/images`` to their bytes (attention
    images of a :class:`hitgen.items.HitPlan`), so pages can be checked before anything is written.
    """

    def __init__(self, run_dir: Path, pending: Mapping[str, bytes] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.reader = ImageReader(run_dir, pending)
        self._cache: dict[str, str] = {}

    def url(self, image_name: str) -> str:
        """``data:image/png;base64,...`` with the checked bytes of ``images/<image_name>``."""
        if image_name not in self._cache:
            data = self.reader.read(image_name)
            encoded = base64.b64encode(data).decode("ascii")
            self._cache[image_name] = f"data:{mime_type(image_name)};base64,{encoded}"
        return self._cache[image_name]


class UrlPrefixHost:
    """Images served under a base URL: ``url(name) == base_url + '/' + quote(name)``.

    Used when the user uploads ``RUN/images`` to a web server of their own, and by local servers
    that serve the run's images on a static route. The file must exist locally (a typo in a name
    would otherwise only show up as a broken image in front of a worker).
    """

    def __init__(self, run_dir: Path, base_url: str) -> None:
        if not base_url.startswith(("https://", "http://")):
            raise ConfigError(f"image base URL {base_url!r} must start with https:// (or http:// "
                              "for a local server)")
        check_substitution_value(base_url, field="image base URL")
        self.run_dir = Path(run_dir)
        self.base_url = base_url.rstrip("/")
        self.reader = ImageReader(run_dir)

    def url(self, image_name: str) -> str:
        """The image's URL under the base URL (the file is checked first)."""
        self.reader.read(image_name)
        return f"{self.base_url}/{quote(image_name)}"
