"""Local preview of the MTurk pages: every HIT rendered as it will be published, checked, on disk.

Each page is the exact document an HTMLQuestion will carry (images inlined as data URIs, or URLs of
another host), written as ``<item_id>.html``; an ``index.html`` links them. Opened from disk a page
is in preview mode (no ``assignmentId``), exactly what a worker sees before accepting; append
``?assignmentId=test&turkSubmitTo=http://127.0.0.1:8000`` to try the answer flow.
"""

from __future__ import annotations

import html
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cage_eval import runs
from hitgen.hosting import ImageHost
from hitgen.items import HitItem
from hitgen.render import question_bytes, render_mturk_page
from hitgen.texts import HitTexts

#: Default preview directory inside the run directory.
PREVIEW_DIR = runs.HITS_PREVIEW_DIR


@dataclass(frozen=True)
class PreviewSummary:
    """What :func:`write_previews` wrote: the directory, page count and the largest question."""

    directory: Path
    pages: int
    max_question_bytes: int


def question_sizes(
    items: Sequence[HitItem], host: ImageHost, texts: HitTexts, *, templates_dir: Path | None = None
) -> dict[str, int]:
    """Bytes of each item's HTMLQuestion with the host's image URLs (over the limit or not)."""
    sizes = {}
    for item in items:
        page = render_mturk_page(item, host.url(item.image_top), host.url(item.image_bottom), texts,
                                 templates_dir=templates_dir)
        sizes[item.item_id] = question_bytes(page)
    return sizes


def write_previews(
    out_dir: Path,
    items: Sequence[HitItem],
    host: ImageHost,
    texts: HitTexts,
    *,
    templates_dir: Path | None = None,
) -> PreviewSummary:
    """Render every item's MTurk page into ``out_dir`` (replaced as a whole, atomically)."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        largest = 0
        links = []
        for n, item in enumerate(items, start=1):
            page = render_mturk_page(item, host.url(item.image_top), host.url(item.image_bottom),
                                     texts, templates_dir=templates_dir)
            largest = max(largest, question_bytes(page))
            (stage / f"{item.item_id}.html").write_text(page, encoding="utf-8")
            links.append(f'<li><a href="{item.item_id}.html">HIT {n}: {item.item_id}</a></li>')
        index = (
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(texts.title)}: preview</title></head><body>\n"
            f"<h1>{html.escape(texts.title)}</h1>\n<p>{len(items)} HIT pages, in publishing order; "
            "each opens in preview mode.</p>\n<ol>\n" + "\n".join(links) + "\n</ol>\n</body></html>\n"
        )
        (stage / "index.html").write_text(index, encoding="utf-8")
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            os.replace(out_dir, old / "previous")
            os.replace(stage, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(stage, out_dir)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return PreviewSummary(out_dir, len(items), largest)


def default_preview_dir(run_dir: Path) -> Path:
    """``RUN/hits_preview``."""
    return Path(run_dir) / PREVIEW_DIR

