"""The words a worker reads: HIT title, description, keywords, the realism question and instructions.

The paper's question (docs/method.md §7, faces) is kept verbatim for ``faces``; ``digits``
asks the same thing about handwritten digits. Other domains come from a small JSON or TOML file
(``HitTexts.from_file``) with the same seven keys. Texts are data: templates insert them with
autoescaping, never render them as templates.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

from cage_eval.errors import ConfigError, InputFileError


@dataclass(frozen=True)
class HitTexts:
    """Texts of one HIT type. ``title``/``description``/``keywords`` go to MTurk's HIT type;
    ``question``, ``instructions`` and the two answer labels are shown on the page."""

    title: str
    description: str
    keywords: str
    question: str
    instructions: str
    top_label: str
    bottom_label: str

    @classmethod
    def for_domain(cls, domain: str) -> HitTexts:
        """The built-in texts for ``domain`` (``digits`` or ``faces``); ConfigError otherwise."""
        try:
            return cls(**DOMAIN_TEXTS[domain])
        except KeyError:
            raise ConfigError(
                f"domain {domain!r} has no built-in HIT texts (known: {', '.join(sorted(DOMAIN_TEXTS))}); "
                "choose one of those or pass a texts file with --texts"
            ) from None

    @classmethod
    def from_file(cls, path: Path) -> HitTexts:
        """Read texts from a JSON (``.json``) or TOML (``.toml``) file with exactly the seven keys."""
        path = Path(path)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise InputFileError(f"{path}: cannot read the texts file ({exc.strerror})") from None
        try:
            if path.suffix == ".toml":
                try:
                    import tomllib
                except ModuleNotFoundError:  # Python 3.10
                    raise InputFileError(f"{path}: TOML needs Python 3.11+; write the texts as JSON") from None
                data = tomllib.loads(raw.decode("utf-8"))
            else:
                data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise InputFileError(f"{path}: not valid {path.suffix.lstrip('.') or 'JSON'} ({exc})") from None
        if not isinstance(data, dict):
            raise InputFileError(f"{path}: expected a table of texts, got {type(data).__name__}")
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in data]
        extra = [k for k in data if k not in names]
        if missing or extra:
            raise InputFileError(f"{path}: keys missing: {', '.join(missing) or 'none'}; unknown keys: "
                                 f"{', '.join(map(str, extra)) or 'none'} (expected {', '.join(names)})")
        for name in names:
            if not isinstance(data[name], str) or not data[name].strip():
                raise InputFileError(f"{path}: key {name!r} must be a non-empty string")
        return cls(**{n: data[n] for n in names})


_COMMON = {
    "keywords": "image, realism, comparison, quick, judgement",
    "top_label": "Top image",
    "bottom_label": "Bottom image",
}

DOMAIN_TEXTS: dict[str, dict[str, str]] = {
    "faces": {
        **_COMMON,
        "keywords": "image, face, realism, comparison, quick",
        "title": "Which face photo looks more real?",
        "description": "Look at two face images and pick the one that looks more like a real photo.",
        "question": (
            "Which image is more realistic when compared to actual human faces? Using your initial "
            "impression and ignoring the background, which image is more likely to fool you as being "
            "a real person's picture if shown briefly?"
        ),
        "instructions": (
            "Two images are shown, one above the other. Go with your first impression; do not study "
            "details for long. Choose the top or the bottom image, then press Submit."
        ),
    },
    "digits": {
        **_COMMON,
        "keywords": "image, handwriting, digit, realism, comparison, quick",
        "title": "Which handwritten digit looks more real?",
        "description": "Look at two images of handwritten digits and pick the one that looks more "
                       "like real handwriting.",
        "question": (
            "Which image is more realistic when compared to actual handwritten digits? Using your "
            "initial impression, which image is more likely to fool you as being a real person's "
            "handwriting if shown briefly?"
        ),
        "instructions": (
            "Two images are shown, one above the other. Go with your first impression; do not study "
            "details for long. Choose the top or the bottom image, then press Submit."
        ),
    },
}
