"""Hand-made run directories for the report tests: the files ``cage-eval generate`` writes, with
numbers chosen by the test, no model and no torch computation.

``make_report_run(tmp_path / "run")`` writes manifest.json, classifiers.csv, directions.csv (the
real layout, through :func:`cage.run.tables.direction_rows`), plots/*.png and, with ``pairs=True``,
the manifest's ``pairs`` entry and sheets/*.png. :func:`pair_direction` builds one
:class:`cage.run.result.PairDirection` with defaults for every field.
"""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from PIL import Image

from cage_eval import files, runs

RUN_ID = "a1b2c3d4e5f6"


def png(width: int = 40, height: int = 30, shade: int = 128) -> bytes:
    """A small grey PNG."""
    buf = io.BytesIO()
    Image.fromarray(np.full((height, width), shade, dtype=np.uint8), mode="L").save(buf, "PNG")
    return buf.getvalue()


def pair_direction(**fields: Any):
    """A :class:`PairDirection` for (thick, bright), latent variant, called ``⊥``; ``fields``
    replace any default."""
    from cage.run.result import PairDirection

    base = PairDirection(
        m1="thick", m2="bright", outcome="latent", alpha=1.0, k=1000, gate_12=0.31,
        gate_21=0.29, delta_tau=0.02, null="permutation", p_gate_12=0.4, p_gate_21=0.5,
        p_delta_tau=0.8, p_values={"permutation": (0.4, 0.5, 0.8), "random": (0.3, 0.6, 0.7),
                                   "rotation": (0.2, 0.4, 0.9)},
        direction="⊥", cause="", effect="", delta_tau_significant=False, sign_stable=True,
        cos_normals=0.985, norm_w1=5.28, norm_w2=7.06, acc_1=0.911, acc_2=0.938,
        offset_1=-0.24, offset_2=-0.19, separable=True, mmd=0.0061, p_mmd=0.455, mmd_2=0.001,
        p_mmd_2=0.455, n_null_k=1000, rule="controlled", reason="no-effect",
        direction_paper="⊥", direction_controlled="⊥", reason_controlled="no-effect",
        gate_12_geometric=0.3, gate_21_geometric=0.28, delta_tau_geometric=0.02,
        p_delta_tau_centred=0.7, p_delta_tau_rotation=0.9, delta_tau_balanced=0.01,
        delta_tau_m1_rare=0.05, delta_tau_m2_rare=-0.03, balance_sign_stable=False, n_null=49,
        gate_12_null_k=0.31, gate_21_null_k=0.29,
    )
    return replace(base, **fields)


def directions_csv_rows(directions) -> list[dict[str, Any]]:
    """directions.csv rows of ``directions``, exactly as the engine writes them."""
    from cage.run.tables import direction_rows

    return direction_rows(SimpleNamespace(directions=list(directions)))


def default_directions():
    """Two pairs: (thick, bright) in both variants, (thick, wide) latent only, one arrow."""
    return [
        pair_direction(),
        pair_direction(outcome="observation", direction="?", reason="geometry-only",
                       direction_controlled="?", reason_controlled="geometry-only",
                       direction_paper="->", p_gate_12=0.02, p_delta_tau=0.03),
        pair_direction(m2="wide", direction="->", cause="thick", effect="wide",
                       reason="", direction_controlled="->", reason_controlled="",
                       direction_paper="->", delta_tau=0.2, p_delta_tau=0.02, p_gate_12=0.02,
                       p_delta_tau_centred=0.02, p_delta_tau_rotation=0.02),
    ]


def pairs_entry() -> dict[str, Any]:
    """The manifest's ``pairs`` entry of a run with one declared DAG and one skipped pair."""
    return {
        "rows": 8, "images": 26, "outcome": "observation", "dags": ["thick->bright"],
        "dag_sources": [{
            "dag": "thick->bright", "source": "declared", "declared": True,
            "outcome": "observation", "cage_call": "undetermined (?)", "direction": "?",
            "delta_tau": -0.015, "p_delta_tau": 0.03, "pair": ["thick", "bright"],
            "calls_by_outcome": {"latent": {"call": "independent (⊥)", "delta_tau": 0.02,
                                            "p_delta_tau": 0.8},
                                 "observation": {"call": "undetermined (?)",
                                                 "delta_tau": -0.015, "p_delta_tau": 0.03}},
            "rows": 8, "settings": {"same_destination": 4, "same_source": 4},
            "sheets": ["sheets/thick_to_bright__same_source.png",
                       "sheets/thick_to_bright__same_destination.png"],
        }],
        "skipped": [{"m1": "thick", "m2": "wide", "outcome": "observation", "direction": "⊥",
                     "cage_call": "independent (⊥)", "delta_tau": 0.0, "p_delta_tau": 1.0,
                     "reason": "CAGE called no direction and none is declared; no pairs"}],
        "stats": {"thick->bright same_source": {"success_first_alpha": 0.75},
                  "thick->bright same_destination": {"success_first_alpha": 1.0}},
    }


def make_report_run(run: Path, *, directions=None, pairs: bool = True, n_null: int = 49,
                    classifier_accuracy: float = 0.91, run_id: str = RUN_ID) -> Path:
    """Write a complete hand-made run directory at ``run`` and return it."""
    directions = default_directions() if directions is None else directions
    run.mkdir(parents=True, exist_ok=True)
    from cage.run.tables import CLASSIFIERS_COLUMNS, DIRECTIONS_COLUMNS

    attrs = sorted({a for d in directions for a in (d.m1, d.m2)})
    classifiers = [{"attribute": a, "space": space, "kind": "logreg", "accuracy": acc,
                    "n_train": 3000, "n_test": 1000, "positive_rate": 0.5,
                    "weight_norm": 5.0 if space == "latent" else "", "intercept": 0.1,
                    "separable": "yes" if acc >= 0.75 else "no"}
                   for a in attrs for space, acc in (("latent", classifier_accuracy),
                                                     ("observation", 0.95))]
    files.atomic_write_csv(run / runs.CLASSIFIERS, classifiers, CLASSIFIERS_COLUMNS)
    files.atomic_write_csv(run / runs.DIRECTIONS, directions_csv_rows(directions),
                           DIRECTIONS_COLUMNS)
    plots = run / runs.PLOTS_DIR
    plots.mkdir(exist_ok=True)
    for d in directions:
        tag = f"{d.m1}__{d.m2}"
        for name in (f"delta_tau__{tag}.png", f"mmd__{tag}.png", f"null__{tag}__{d.outcome}.png"):
            (plots / name).write_bytes(png(60 if name.startswith("null") else 40, 30))
    manifest: dict[str, Any] = {
        "schema_version": runs.SCHEMA_VERSION, "run_id": run_id, "complete": True,
        "created_by": "cage-eval generate", "experiment": "handmade",
        "config": {"experiment": {"name": "handmade", "kind": "digits", "seed": 3,
                                  "source": "built-in:digits",
                                  "description": "a hand-made run for the report tests"},
                   "cage": {"rule": "controlled", "level": 0.05, "k": 1000, "alpha": 1.0,
                            "n_null": n_null, "null": "permutation", "min_accuracy": 0.75,
                            "outcomes": ["latent", "observation"]}},
        "seeds": {"master": 3, "split:thick": 12345},
        "versions": {"cage-eval": "0.1.0", "python": "3.11.7", "torch": "2.13.0"},
        "setup": {"vae": {"latent_dim": 16}},
        "files": [runs.CLASSIFIERS, runs.DIRECTIONS],
    }
    if pairs:
        manifest["pairs"] = pairs_entry()
        sheets = run / runs.SHEETS_DIR
        sheets.mkdir(exist_ok=True)
        for rel in manifest["pairs"]["dag_sources"][0]["sheets"]:
            (run / rel).write_bytes(png(90, 30, 200))
    files.atomic_write_json(run / runs.MANIFEST, manifest)
    return run
