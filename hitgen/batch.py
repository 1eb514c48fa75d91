"""Template-plus-CSV exports: the requester-website batch, and the input rows Turkle takes too.

MTurk's requester website (and Turkle) take one HTML template with ``${field}`` placeholders and an
input CSV with one row per HIT; the server replaces each placeholder with the row's value *raw*
(docs/platforms.md §1.4). The rows therefore hold only the opaque ``item_id`` and two
URL-safe image URLs, checked with :func:`hitgen.hosting.check_substitution_value`. Roles stay in
``RUN/hit_items.csv``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cage_eval import files, runs
from cage_eval.errors import ConfigError
from hitgen.hosting import ImageHost, ImageReader, check_substitution_value
from hitgen.items import HitItem
from hitgen.render import MAX_QUESTION_BYTES, PLACEHOLDER_FIELDS, render_batch_template
from hitgen.texts import HitTexts

BATCH_TEMPLATE_FILE = "batch_template.html"
BATCH_INPUT_FILE = "batch_input.csv"
BATCH_IMAGES_DIR = "images"
#: ``cage-eval export-batch`` and the directories it builds (``--force`` replaces only those).
EXPORT = files.Maker("cage-eval export-batch",
                     frozenset({BATCH_TEMPLATE_FILE, BATCH_INPUT_FILE, BATCH_IMAGES_DIR,
                                runs.RUN_MARKER}), key=BATCH_INPUT_FILE)


def input_rows(items: Sequence[HitItem], host: ImageHost) -> list[dict[str, str]]:
    """One ``{item_id, image_top, image_bottom}`` row per item, image fields as URLs from ``host``."""
    rows = []
    for item in items:
        row = {
            "item_id": item.item_id,
            "image_top": host.url(item.image_top),
            "image_bottom": host.url(item.image_bottom),
        }
        for field, value in row.items():
            check_substitution_value(value, field=f"item {item.item_id}: {field}")
        rows.append(row)
    return rows


def filled_size(template: str, row: dict[str, str]) -> int:
    """Bytes of the template once a row's values are substituted (as the server will)."""
    page = template
    for field in PLACEHOLDER_FIELDS:
        page = page.replace("${" + field + "}", row[field])
    return len(page.encode("utf-8"))


@dataclass(frozen=True)
class BatchExport:
    """What :func:`export_batch` wrote."""

    template: Path
    input_csv: Path
    rows: int
    max_page_bytes: int
    images_copied: int


def export_batch(
    out_dir: Path,
    items: Sequence[HitItem],
    host: ImageHost,
    texts: HitTexts,
    *,
    templates_dir: Path | None = None,
    copy_images_from: Path | None = None,
) -> BatchExport:
    """Write ``batch_template.html`` and ``batch_input.csv`` into ``out_dir`` (which must exist).

    ``copy_images_from`` (a run directory) also copies the shown images into ``out_dir/images`` for
    the user to upload where ``host`` says they will be. Raises ConfigError when a filled page would
    exceed 65,535 bytes (inlined images too large: host them instead).
    """
    out_dir = Path(out_dir)
    template = render_batch_template(texts, templates_dir=templates_dir)
    rows = input_rows(items, host)
    sizes = [filled_size(template, row) for row in rows]
    largest = max(sizes, default=len(template.encode("utf-8")))
    if largest > MAX_QUESTION_BYTES:
        worst = rows[sizes.index(largest)]["item_id"]
        raise ConfigError(f"item {worst}: the filled page is {largest:,} bytes, over MTurk's "
                          f"{MAX_QUESTION_BYTES:,}; host the images (--image-base-url or --s3-bucket) "
                          "instead of inlining them")
    copied = 0
    if copy_images_from is not None:
        dest = out_dir / BATCH_IMAGES_DIR
        reader = ImageReader(copy_images_from)
        for name in sorted({n for it in items for n in (it.image_top, it.image_bottom)}):
            files.atomic_write_bytes(dest / name, reader.read(name))  # checked, never a link
            copied += 1
    template_path = out_dir / BATCH_TEMPLATE_FILE
    csv_path = out_dir / BATCH_INPUT_FILE
    files.atomic_write_text(template_path, template)
    files.atomic_write_csv(csv_path, rows, PLACEHOLDER_FIELDS)
    return BatchExport(template_path, csv_path, len(rows), largest, copied)
