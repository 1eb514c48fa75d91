"""Where a HIT page gets its images from: an ``ImageHost`` turns an opaque file name into a URL.

``DataUriHost`` inlines the PNG bytes (``data:image/png;base64,...``), so a page needs nothing
outside itself, as long as it stays under MTurk's 65,535-byte question limit. ``UrlPrefixHost``
points at a directory served elsewhere (a web server, a Turkle static route). The S3 host, which
needs boto3, lives in ``mturk.images_s3``.

Every URL a host returns is safe to substitute raw into ``src="..."`` (no quote, angle bracket,
apostrophe or whitespace), which Turkle and the requester website's ``${...}`` substitution need.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

from cage_eval import runs
from cage_eval.errors import ConfigError, RunDirError

#: Characters that must never appear in a value substituted raw into a ``${...}`` template.
UNSAFE_SUBSTITUTION_CHARS = frozenset('"\'<>` \t\r\n\\')


class ImageHost(Protocol):
    """Anything that maps an image file name (inside ``RUN/images``) to a URL a browser can load."""

    def url(self, image_name: str) -> str:
        """The URL of ``images/<image_name>``."""
        ...


def image_path(run_dir: Path, image_name: str) -> Path:
    """``RUN/images/<image_name>``, refusing names with a directory part or that do not exist."""
    images = Path(run_dir) / runs.IMAGES_DIR
    if not image_name or Path(image_name).name != image_name or image_name.startswith("."):
        raise RunDirError(f"{images}: image name {image_name!r} is not a plain file name")
    path = images / image_name
    if not path.is_file():
        raise RunDirError(f"{path}: missing; the run's images are incomplete (regenerate the run, "
                          "or rebuild the items with `cage-eval hits`)")
    return path


def mime_type(image_name: str) -> str:
    """The MIME type of an image file name (PNG unless the suffix says JPEG or WebP)."""
    suffix = Path(image_name).suffix.lower()
    return {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}.get(suffix, "image/png")


def check_substitution_value(value: str, *, field: str) -> str:
    """Return ``value`` if it is safe to substitute raw into HTML (Turkle, requester website).

    Turkle replaces ``${field}`` with the CSV value verbatim, with no HTML escaping
    (crowdsourcing.md section 1.5), so a quote would end the ``src`` attribute early.
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
        self.pending = dict(pending or {})
        self._cache: dict[str, str] = {}

    def url(self, image_name: str) -> str:
        """``data:image/png;base64,...`` with the bytes of ``images/<image_name>``."""
        if image_name not in self._cache:
            if image_name in self.pending:
                data = self.pending[image_name]
            else:
                data = image_path(self.run_dir, image_name).read_bytes()
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

    def url(self, image_name: str) -> str:
        """The image's URL under the base URL."""
        image_path(self.run_dir, image_name)
        return f"{self.base_url}/{quote(image_name)}"
