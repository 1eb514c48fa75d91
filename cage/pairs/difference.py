"""How different the two images of a counterfactual pair are, and whether people can tell.

An annotator compares the two images of a pair (the cause-manipulated and the effect-manipulated
image, in both settings). When they are nearly identical the answer is a coin flip whatever the
causal structure, and the study measures nothing. For every pair this module measures

``diff_mean_abs``
    the mean absolute pixel difference of the two 8-bit images, in units of 1/255 (0: identical,
    255: black against white);
``diff_ssim``
    their structural similarity (scikit-image's SSIM, data range 255, colour channels averaged;
    1: identical),

and, per DAG and setting, the median and maximum. A DAG and setting whose median pair differs by
less than :data:`PERCEPTIBLE_MEAN_ABS` (3/255, about 1 % of the range) is flagged: its pairs look
the same to a person. (Same-source pairs are the ones at risk: both images are edits of one
source, while a same-destination pair shows two different faces or digits.) What to change: a larger alpha (``[pairs] alpha_min``, ``target_probability``), or an
attribute pair whose manipulations change more pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: The perceptibility threshold: a DAG's median pair below this mean absolute difference (in
#: 1/255 units) is flagged as near-identical.
PERCEPTIBLE_MEAN_ABS = 3.0
#: pairs.csv columns this module fills.
COLUMNS = ("diff_mean_abs", "diff_ssim")


def difference(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """``(mean absolute difference in 1/255 units, SSIM)`` of two uint8 images of one shape,
    ``(H, W)`` or ``(H, W, 3)``."""
    from skimage.metrics import structural_similarity

    if a.shape != b.shape:
        raise ValueError(f"images of different shapes {a.shape} and {b.shape}")
    mad = float(np.mean(np.abs(a.astype(np.int16) - b.astype(np.int16))))
    side = min(a.shape[0], a.shape[1])
    win = min(7, side if side % 2 else side - 1)
    if win < 3:
        return mad, float("nan")
    ssim = structural_similarity(a, b, data_range=255, win_size=win,
                                 channel_axis=2 if a.ndim == 3 else None)
    return mad, float(ssim)


def _read(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB") if im.mode not in ("L", "RGB") else im, dtype=np.uint8)


def measure_rows(rows: Sequence[dict[str, Any]], images_dir: Path) -> None:
    """Add :data:`COLUMNS` to every pairs.csv row, from the written images of ``images_dir``."""
    for row in rows:
        mad, ssim = difference(_read(images_dir / row["image_cause"]),
                               _read(images_dir / row["image_effect"]))
        row["diff_mean_abs"] = f"{mad:.3f}"
        row["diff_ssim"] = "" if ssim != ssim else f"{ssim:.4f}"


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Median and maximum of the rows' differences, how many are below the threshold, and
    whether the median is (``perceptible``)."""
    mad = np.array([float(r["diff_mean_abs"]) for r in rows]) if rows else np.zeros(0)
    ssim = np.array([float(r["diff_ssim"]) for r in rows if r.get("diff_ssim") not in ("", None)])
    if not mad.size:
        return {"pairs": 0}
    median = float(np.median(mad))
    return {"pairs": int(mad.size), "median_mean_abs": round(median, 3),
            "max_mean_abs": round(float(mad.max()), 3),
            "median_ssim": round(float(np.median(ssim)), 4) if ssim.size else None,
            "below_threshold": int(np.sum(mad < PERCEPTIBLE_MEAN_ABS)),
            "threshold_mean_abs": PERCEPTIBLE_MEAN_ABS,
            "perceptible": bool(median >= PERCEPTIBLE_MEAN_ABS)}


def by_setting(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """:func:`summarise` of each setting's rows (same-source first)."""
    settings = sorted({str(r["setting"]) for r in rows}, key=lambda k: (k != "same_source", k))
    return {k: summarise([r for r in rows if r["setting"] == k]) for k in settings}


def warning(dag: str, setting: str, summary: dict[str, Any]) -> str | None:
    """The sentence that flags a DAG and setting whose pairs look alike, or None."""
    if not summary.get("pairs") or summary.get("perceptible", True):
        return None
    ssim = summary.get("median_ssim")
    ssim_text = f", median SSIM {ssim:.3f}" if ssim is not None else ""
    return (f"{dag} {setting.replace('_', '-')}: the two images of its pairs differ by a median "
            f"{summary['median_mean_abs']:.1f}/255 mean absolute pixel difference (max "
            f"{summary['max_mean_abs']:.1f}/255{ssim_text}; {summary['below_threshold']} of "
            f"{summary['pairs']} pairs below {PERCEPTIBLE_MEAN_ABS:g}/255): annotators would "
            "compare near-identical images; raise [pairs] alpha_min or target_probability, or "
            "choose an attribute pair whose edits change more of the image")


def warnings_of(pairs_entry: dict[str, Any] | None) -> list[str]:
    """The warnings of a manifest's ``pairs`` entry (one per flagged DAG and setting)."""
    if not pairs_entry:
        return []
    out = []
    for rec in pairs_entry.get("dag_sources", []):
        differences = rec.get("difference") or {}
        for setting in sorted(differences, key=lambda k: (k != "same_source", k)):
            summary = differences[setting]
            text = warning(rec["dag"], setting, summary or {})
            if text:
                out.append(text)
    return out
