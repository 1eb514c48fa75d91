"""The engine's files in a run directory: CSV rows, artifacts.npz arrays, versions.

Column layouts and the artifacts keys are documented in docs/engine.md; file names come from
:mod:`cage_eval.runs`.
"""

from __future__ import annotations

import platform
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cage.engine.effects import CALL_WORDS
from cage_eval import files, runs

if TYPE_CHECKING:
    from cage.experiments.base import ExperimentSetup
    from cage.run.result import CageResult

DIRECTIONS_COLUMNS = (
    "m1", "m2", "outcome", "direction", "call", "cause", "effect", "rule", "reason",
    "direction_paper", "direction_controlled", "reason_controlled", "alpha", "k", "gate_12",
    "gate_21", "delta_tau", "null", "p_gate_12", "p_gate_21", "p_delta_tau",
    "delta_tau_significant", "p_delta_tau_centred", "p_delta_tau_rotation", "sign_stable",
    "gate_12_geometric", "gate_21_geometric", "delta_tau_geometric", "delta_tau_balanced",
    "delta_tau_m1_rare", "delta_tau_m2_rare", "balance_sign_stable",
    "p_gate_12_permutation", "p_gate_21_permutation", "p_delta_tau_permutation",
    "p_gate_12_random", "p_gate_21_random", "p_delta_tau_random", "p_gate_12_rotation",
    "p_gate_21_rotation", "n_null", "p_resolution", "n_null_k", "gate_12_null_k", "gate_21_null_k", "cos_normals", "norm_w1",
    "norm_w2", "acc_1", "acc_2", "offset_1", "offset_2", "separable", "mmd", "p_mmd", "mmd_2",
    "p_mmd_2", "lingam", "anm", "notears", "level", "delta_tau_calibration_min",
    "delta_tau_calibration_max", "calibration_min_at", "calibration_max_at", "delta_tau_labels",
    "calibration_sign_stable",
)
CLASSIFIERS_COLUMNS = ("attribute", "space", "kind", "accuracy", "n_train", "n_test",
                       "positive_rate", "weight_norm", "intercept", "separable")
SWEEP_COLUMNS = ("m1", "m2", "outcome", "alpha", "gate_12", "gate_21", "delta_tau",
                 "delta_tau_geometric", "null_lo",
                 "null_hi", "mmd_1", "p_mmd_1", "mmd_2", "p_mmd_2")
NULL_COLUMNS = ("m1", "m2", "outcome", "null", "draw", "alpha", "k", "gate_12", "gate_21",
                "delta_tau")


def fmt(value: Any) -> Any:
    """CSV cell: floats with 10 significant digits (stable bytes across runs), bools yes/no."""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if v != v:
            return "nan"
        return format(v, ".10g") if v != 0 else "0"
    if isinstance(value, np.integer):
        return int(value)
    return value


def _fmt_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: fmt(v) for k, v in r.items()} for r in rows]


def direction_rows(result: CageResult) -> list[dict[str, Any]]:
    """directions.csv rows."""
    rows = []
    for d in result.directions:
        row = {k: v for k, v in asdict(d).items() if k in DIRECTIONS_COLUMNS}
        row["call"] = CALL_WORDS[d.direction]
        for kind in ("permutation", "random"):
            p = d.p_values.get(kind, ("", "", ""))
            row[f"p_gate_12_{kind}"], row[f"p_gate_21_{kind}"], row[f"p_delta_tau_{kind}"] = p
        rot = d.p_values.get("rotation", ("", "", ""))
        row["p_gate_12_rotation"], row["p_gate_21_rotation"] = rot[0], rot[1]
        row["p_resolution"] = 1.0 / (1 + d.n_null) if d.n_null else ""
        verdicts = {b.method.lower(): (b.verdict if b.available else "unavailable")
                    for b in d.baselines}
        for method in ("lingam", "anm", "notears"):
            row[method] = verdicts.get(method, "")
        rows.append(row)
    return _fmt_rows(rows)


def artifact_arrays(result: CageResult, setup: ExperimentSetup) -> dict[str, np.ndarray]:
    """Arrays of artifacts.npz (keys documented in docs/engine.md)."""
    arrays: dict[str, np.ndarray] = {
        "prior_latents": result.prior_latents.astype(np.float32),
        "data_latents": np.asarray(setup.data_latents, dtype=np.float32),
        "alphas": np.asarray(result.config.cage.alphas, dtype=np.float64),
    }
    for a, clf in result.classifiers.items():
        arrays[f"clf__{a}__coef"] = clf.coef_
        arrays[f"clf__{a}__intercept"] = np.asarray(clf.intercept_)
        arrays[f"labels__{a}"] = np.asarray(setup.attributes[a]).astype(np.int8)
        arrays[f"test_mask__{a}"] = result.test_masks[a]
    for (m1, m2), dirs in result.interventions.items():
        for a, u in dirs.items():
            arrays[f"direction__{m1}__{m2}__{a}"] = u
    for (m1, m2, a, kind), dirs in result.null_directions.items():
        arrays[f"null__{kind}__{m1}__{m2}__{a}"] = dirs
    return arrays


def versions() -> dict[str, str]:
    """Versions of the packages that shape the numbers."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("cage-eval", "torch", "numpy", "scipy", "scikit-learn", "zuko", "matplotlib"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def write_engine_files(result: CageResult, setup: ExperimentSetup, stage: Path) -> list[str]:
    """Write every engine file into ``stage``; return the names written."""
    from cage.run.plots import write_plots

    files.atomic_write_csv(stage / runs.CLASSIFIERS, _fmt_rows(result.classifier_rows),
                          CLASSIFIERS_COLUMNS)
    files.atomic_write_csv(stage / runs.DIRECTIONS, direction_rows(result), DIRECTIONS_COLUMNS)
    files.atomic_write_csv(stage / runs.ALPHA_SWEEP, _fmt_rows(result.sweep_rows), SWEEP_COLUMNS)
    files.atomic_write_csv(stage / runs.NULL_DRAWS, _fmt_rows(result.null_rows), NULL_COLUMNS)
    arrays = artifact_arrays(result, setup)
    tmp = stage / f".{runs.ARTIFACTS}.tmp.npz"
    np.savez_compressed(tmp, **arrays)
    tmp.replace(stage / runs.ARTIFACTS)
    plots = write_plots(result, stage / runs.PLOTS_DIR)
    return [runs.CLASSIFIERS, runs.DIRECTIONS, runs.ALPHA_SWEEP, runs.NULL_DRAWS, runs.ARTIFACTS,
            *[f"{runs.PLOTS_DIR}/{p}" for p in plots]]



def jsonable(value: Any) -> Any:
    """``value`` with numpy scalars/arrays, paths and non-finite floats made JSON-safe."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return v if np.isfinite(v) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, Path):
        return str(value)
    return value
