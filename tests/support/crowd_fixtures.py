"""A small synthetic run directory for the crowd-side tests (hitgen, mturk, Turkle, analysis).

``make_run_dir(tmp_path / "run")`` writes what ``cage-eval generate`` would leave for the crowd
commands: ``manifest.json`` (run_id, schema_version, complete), ``pairs.csv`` (``PAIRS_COLUMNS``,
2 DAGs x 2 settings by default) and 28x28 grayscale PNGs under ``images/`` named by content hash.
No torch, no model: the images are drawn with numpy and written exactly as ``cage-eval generate``
writes them (``cage.pairs.images``: the same encoder and pixel-hash names), deterministically in
``seed``.

Import it from any test module in ``tests/``::

    from crowd_fixtures import make_run_dir

    def test_something(tmp_path):
        run = make_run_dir(tmp_path / "run", pairs_per_cell=2)
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from cage.pairs.images import encode_png, image_name
from cage_eval import files, runs

DEFAULT_RUN_ID = "5e1f0c2a9b7d4e33"
DEFAULT_DAGS = (("thick", "bright"), ("slant", "thick"))


def png_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 (H, W) array as a grayscale PNG with Pillow (another encoder than the
    run's, for tests that need one)."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(array, dtype=np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def write_png(images_dir: Path, array: np.ndarray, scale: int = 1) -> str:
    """Write ``array`` as ``images/<pixel hash>.png`` with the run's encoder (enlarged ``scale``
    times, as ``[pairs] png_scale`` does); return the name."""
    array = np.asarray(array, dtype=np.uint8)
    name = image_name(array, scale=scale)
    (images_dir / name).write_bytes(encode_png(array, scale=scale))
    return name


def _stroke_image(rng: np.random.Generator, size: int, thickness: float, brightness: float) -> np.ndarray:
    """A digit-like image: a bright ring or bar on black, shaped by two attributes."""
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    cy, cx = size / 2 + rng.normal(0, 1.0), size / 2 + rng.normal(0, 1.0)
    radius = size * rng.uniform(0.22, 0.32)
    dist = np.abs(np.hypot(yy - cy, xx - cx) - radius)
    ink = np.clip(1.0 - dist / max(thickness, 0.5), 0.0, 1.0)
    return np.clip(ink * brightness * 255.0, 0, 255).astype(np.uint8)


def make_run_dir(
    run_dir: Path,
    *,
    run_id: str = DEFAULT_RUN_ID,
    dags: Sequence[tuple[str, str]] = DEFAULT_DAGS,
    settings: Sequence[str] = runs.SETTINGS,
    pairs_per_cell: int = 4,
    size: int = 28,
    seed: int = 0,
    png_scale: int = 1,
) -> Path:
    """Build a synthetic, complete run directory at ``run_dir`` and return it.

    Parameters
    ----------
    run_dir : directory to create (must not exist or be empty).
    run_id : the manifest's opaque hex run id.
    dags : (cause, effect) attribute pairs; each gives a DAG label ``cause->effect``.
    settings : pair settings, default both ``same_source`` and ``same_destination``.
    pairs_per_cell : pairs per (DAG, setting).
    size : image side in pixels.
    seed : numpy seed; the same arguments give byte-identical files.
    png_scale : nearest-neighbour enlargement of the written images.
    """
    run_dir = Path(run_dir)
    images = run_dir / runs.IMAGES_DIR
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    source_id = 1000
    for cause, effect in dags:
        dag = runs.dag_name(cause, effect)
        for setting in settings:
            for i in range(pairs_per_cell):
                thick, bright = rng.uniform(1.5, 3.0), rng.uniform(0.6, 0.9)
                src_c = _stroke_image(rng, size, thick, bright)
                if setting == "same_source":
                    src_e, sid_c, sid_e = src_c, source_id, source_id
                    source_id += 1
                else:
                    src_e = _stroke_image(rng, size, rng.uniform(1.5, 3.0), rng.uniform(0.6, 0.9))
                    sid_c, sid_e = source_id, source_id + 1
                    source_id += 2
                img_c = _stroke_image(rng, size, thick + 1.0, bright)
                img_e = _stroke_image(rng, size, thick, min(bright + 0.1, 1.0))
                rows.append({
                    "pair_id": f"{cause}-{effect}-{setting}-{i:03d}",
                    "dag": dag,
                    "cause": cause,
                    "effect": effect,
                    "setting": setting,
                    "source_cause_id": sid_c,
                    "source_effect_id": sid_e,
                    "image_source_cause": write_png(images, src_c, png_scale),
                    "image_source_effect": write_png(images, src_e, png_scale),
                    "image_cause": write_png(images, img_c, png_scale),
                    "image_effect": write_png(images, img_e, png_scale),
                    "target_cause": 1,
                    "target_effect": 1,
                    "alpha_cause": 1.5,
                    "alpha_effect": 1.5,
                    "check_cause": 0.91,
                    "check_effect": 0.88,
                    "ok_cause": 1,
                    "ok_effect": 1,
                    "attempts": 1,
                })
    files.atomic_write_csv(run_dir / runs.PAIRS, rows, runs.PAIRS_COLUMNS)
    files.atomic_write_json(run_dir / runs.MANIFEST, {
        "run_id": run_id,
        "schema_version": runs.SCHEMA_VERSION,
        "complete": True,
    })
    return run_dir
