"""Fault injection: state read back from disk is never trusted unchecked (docs/distributed.md,
docs/generators.md, README "Safety").

Each test plants what an attacker or an accident leaves on disk and checks what a careful
researcher expects: checkpoints of a run that were edited, forged, of the wrong shape, dtype or
value, or planted next to a fresh ``--out`` are discarded or ignored with a warning, and the
resumed run writes the bytes an untampered run writes; cached datasets and classifiers that were
edited, replaced by a pickle, truncated or emptied give one warning and a rebuild (never a
traceback, never a silent use, never a block of later runs), and caches another user could write
are refused; a generator whose decode turns bad after the start-up check never has a pair
written from a bad image, and too many bad images end the run with one ``Error:`` line.

The runs are tiny (a 16x16 generator, 600 prior latents, one prior block); the module takes about
a minute on two busy cores.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from checkpoint_tamper import rewrite
from click.testing import CliRunner
from generator_fixtures import label_folder, write_image_folder
from tiny_models import ImageStats, make_generator

from cage.compute import checkpoints
from cage.compute.checkpoints import CheckpointStore
from cage.compute.distributed import Workers
from cage.config.experiment import load_experiment
from cage.config.sections import Section
from cage.experiments.digits import data as digits_data
from cage.labels import cnn
from cage.pairs.make import LinearAttribute, ManipulationJob, Manipulator, PairConfig
from cage.run.pipeline import run_experiment
from cage_eval import runs
from cage_eval.cli import cli
from cage_eval.errors import (
    CacheError,
    CacheWarning,
    CheckpointWarning,
    ConfigError,
    UserCodeError,
)

SUPPORT = Path(__file__).resolve().parent / "support"
#: The files that must be byte-identical between a tampered-then-resumed and a clean run.
SAME_BYTES = (runs.DIRECTIONS, runs.PAIRS, runs.ALPHA_SWEEP, runs.NULL_DRAWS)


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    return repr(v)


def write_study(root: Path, name: str, factory: str, **pairs) -> Path:
    """A tiny generator study: eq. 8 and eq. 9 on 600 prior latents, labels from the classifier,
    four pairs of each setting."""
    gen = make_generator()
    with torch.no_grad():
        probs = ImageStats(0.0, 0.0, 1.0)(gen.decode(gen.sample(500, 9)))
    medians = {k: float(torch.logit(v.median())) for k, v in probs.items()}
    sections = {
        "experiment": {"name": name, "kind": "generator", "seed": 0},
        "cage": {"pairs": [["bright", "red"]], "alphas": [1.0, 2.0], "alpha": 1.0, "k": 600,
                 "n_null": 5, "k_null_observation": 60, "mmd_n": 40, "mmd_permutations": 10,
                 "min_accuracy": 0.5, "baselines": False},
        "generator": {"factory": factory, "python_path": ["src"], "batch_size": 100},
        "observation_classifier": {"kind": "callable", "callable": "my_models:ImageStats",
                                   "callable_options": {"bright_at": medians["bright"],
                                                        "red_at": medians["red"],
                                                        "sharpness": 40.0}},
        "labels": {"source": "classifier", "n_samples": 600},
        "pairs": {"n_same_source": 4, "n_same_destination": 4, "dags": ["bright->red"],
                  "alpha_steps": 4, "alpha_growth": 2.0, "sheet_pairs": 4, "batch": 4, **pairs},
    }
    lines = []
    for section, body in sections.items():
        lines += [f"[{section}]", *(f"{k} = {toml_value(v)}" for k, v in body.items()), ""]
    path = root / f"{name}.toml"
    path.write_text("\n".join(lines))
    return path


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """A researcher's folder with their models in src/."""
    root = tmp_path_factory.mktemp("user")
    (root / "src").mkdir()
    shutil.copy(SUPPORT / "tiny_models.py", root / "src" / "my_models.py")
    return root


def run(study: Path, out: Path, **env: str):
    """``run_experiment`` on one torch thread with ``env`` set; the warnings it gave."""
    old_threads, old_env = torch.get_num_threads(), {k: os.environ.get(k) for k in env}
    torch.set_num_threads(1)
    os.environ.update(env)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run_experiment(load_experiment(study), out, cache_dir=out.parent / "cache")
    finally:
        torch.set_num_threads(old_threads)
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return [w.message for w in caught if isinstance(w.message, Warning)]


@pytest.fixture(scope="module")
def study(user):
    return write_study(user, "state", "my_models:make_fragile_generator")


@pytest.fixture(scope="module")
def clean(study, tmp_path_factory):
    """The reference: the study run once, untouched."""
    out = tmp_path_factory.mktemp("clean") / "run"
    run(study, out)
    return out


@pytest.fixture(scope="module")
def saved(study, tmp_path_factory):
    """The checkpoints a run leaves when it fails while making pairs (every eq. 9 unit and the
    labelled samples done): ``(out, checkpoint folder)``, kept pristine; copy before use."""
    out = tmp_path_factory.mktemp("failed") / "run"
    with pytest.raises(UserCodeError, match="decode raised RuntimeError: planted failure"):
        run(study, out, CAGE_TEST_FAULT="raise")
    folder = checkpoints.checkpoint_dir(out)
    assert not out.exists() and len(list(folder.glob("part-*.npz"))) >= 1
    return out, folder


@pytest.fixture
def resumable(saved, tmp_path):
    """The failed run's output path with its checkpoints as they were left (restored from a
    pristine copy after the test). The checkpoints are bound to that output path."""
    out, folder = saved
    keep = tmp_path / "pristine"
    shutil.copytree(folder, keep)
    yield out, folder
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(keep, folder)
    shutil.rmtree(out, ignore_errors=True)


def assert_same_bytes(out: Path, reference: Path) -> None:
    for name in SAME_BYTES:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name


def texts(caught, kind=Warning) -> list[str]:
    return [str(w) for w in caught if isinstance(w, kind)]


# --------------------------------------------------------------------------- checkpoints


def test_an_untampered_resume_is_spot_checked_and_writes_the_same_bytes(resumable, clean, study):
    out, _ = resumable
    caught = run(study, out)
    assert texts(caught, CheckpointWarning) == []
    record = runs.read_manifest(out)["checkpoints"]
    work = runs.read_manifest(out)["distributed"]["work"]
    assert record["discarded"] is None and record["ignored_files"] == 0
    assert record["resumed"] == work["score"]["resumed"] + work["label"]["resumed"] > 50
    assert work["score"]["computed"] == 0
    # At least 2 % of the resumed units, at least one per map, were recomputed and compared.
    assert record["verified"] >= max(1, 0.02 * record["resumed"])
    assert_same_bytes(out, clean)


@pytest.mark.parametrize("forge", [False, True], ids=["edited", "forged-digest"])
def test_edited_checkpoint_values_are_discarded_and_recomputed(resumable, clean, study, forge):
    """The attack of issue 17: every array set to ones (GATE 1->2 silently changed). With the
    digests forged too, only the spot check (a recomputed sample) can see it."""
    out, folder = resumable
    for path in folder.glob("part-*.npz"):
        rewrite(path, lambda name, a: np.ones_like(a), forge=forge)
    caught = run(study, out)
    warned = texts(caught, CheckpointWarning)
    assert len(warned) == 1 and "discarded, everything is computed again" in warned[0]
    assert ("differs from its recomputation" if forge else "does not match its digest") \
        in warned[0]
    record = runs.read_manifest(out)["checkpoints"]
    assert record["discarded"] and record["resumed"] == 0
    assert_same_bytes(out, clean)
    assert not folder.exists()  # the published run's checkpoints are gone, as always


@pytest.mark.parametrize("change,why", [
    (lambda name, a: a[: max(len(a) // 2, 1)], "shape"),
    (lambda name, a: a.astype(np.float32) if a.dtype == np.float64 else a.astype(np.float64),
     "dtype"),
    (lambda name, a: np.where(np.arange(a.size).reshape(a.shape) == 0, np.nan, a)
     if a.dtype.kind == "f" else a, "NaN"),
], ids=["wrong-shape", "wrong-dtype", "nan"])
def test_checkpoints_of_the_wrong_shape_dtype_or_value_are_refused(tmp_path, change, why):
    """Validated before use even when their digests are forged: the resumed run recomputes."""
    units = [Unit(f"k{i}", float(i)) for i in range(60)]
    first = Workers(store=CheckpointStore(tmp_path / "c", binding="b"))
    first.register("sq", Squares())
    first.map("sq", units)
    first.store.close()
    for path in (tmp_path / "c").glob("part-*.npz"):
        rewrite(path, change, forge=True)
    again = Workers(store=CheckpointStore(tmp_path / "c", binding="b"))
    again.register("sq", Squares())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(checkpoints.Mismatch):
            again.map("sq", units)
    assert len(texts([w.message for w in caught], CheckpointWarning)) == 1
    assert not list((tmp_path / "c").glob("part-*.npz"))  # every checkpoint discarded
    res = again.map("sq", units)  # nothing is read back any more: all computed
    assert [float(r["y"][0]) for r in res] == [i * i for i in range(60)]
    assert again.stats["sq"].computed == 60


def test_a_spot_check_recomputes_at_least_two_percent_and_at_least_one():
    assert [checkpoints.spot_check_count(n) for n in (0, 1, 49, 50, 51, 1000)] == \
        [0, 1, 1, 1, 2, 20]


def test_a_checkpoint_folder_planted_before_a_fresh_out_is_not_used(saved, clean, study,
                                                                  tmp_path):
    """Another run's checkpoints copied as ``.NEW.checkpoints`` (here those of the same study
    with the values edited and the digests forged): bound to another output directory, never
    read; the run computes everything and says so."""
    _, folder = saved
    new = tmp_path / "NEW"
    planted = checkpoints.checkpoint_dir(new)
    shutil.copytree(folder, planted)
    for path in planted.glob("part-*.npz"):
        rewrite(path, lambda name, a: np.ones_like(a), forge=True)
    caught = run(study, new)
    warned = texts(caught, CheckpointWarning)
    assert len(warned) == 1 and "belong to another run" in warned[0]
    record = runs.read_manifest(new)["checkpoints"]
    assert record["resumed"] == 0 and record["ignored_files"] == len(list(folder.iterdir()))
    assert_same_bytes(new, clean)


def test_checkpoints_from_an_older_format_or_another_binding_are_ignored(tmp_path):
    d = tmp_path / "c"
    with CheckpointStore(d, binding="this run") as store:
        store.put("aa", {"x": np.arange(3.0)})
    np.savez(d / "part-r0-old.npz", aa__x=np.ones(3))  # written before files were bound
    with CheckpointStore(d, binding="another run") as other:
        assert other.get("aa") is None and other.ignored == 2
    with CheckpointStore(d, binding="this run") as mine:
        assert np.array_equal(mine.get("aa")["x"], np.arange(3.0)) and mine.ignored == 1


class Squares:
    def __call__(self, unit):
        return {"y": np.array([unit.value ** 2] * unit.rows, dtype=np.float64)}


class Unit:
    def __init__(self, key, value):
        self.key, self.value, self.rows = key, value, 2


# --------------------------------------------------------------------------- decoded images


class Spoiled:
    """Decodes to mid-grey; rows whose first latent is negative get a NaN (or 1.5) corner."""

    latent_dim = 2

    def __init__(self, value):
        self.value = value

    def decode(self, z):
        x = torch.full((z.shape[0], 1, 4, 4), 0.5)
        x[z[:, 0] < 0, :, 0, 0] = self.value
        return x


@pytest.mark.parametrize("value", [float("nan"), 1.5, float("inf")])
def test_a_bad_decoded_image_never_passes_the_check(value):
    attr = LinearAttribute(name="bright", coef=np.array([1.0, 0.0]), intercept=0.0)
    z = np.array([[1.0, 0.0], [-1.0, 0.0], [2.0, 0.0], [-2.0, 0.0]])
    job = ManipulationJob(attr=attr, targets=np.ones(4, dtype=np.int64), z=z,
                          base=np.full(4, 0.1), config=PairConfig(alpha_steps=3, alpha_growth=1.0),
                          image_shape=(4, 4))

    def psi(x):
        return {"bright": torch.ones(x.shape[0])}  # would pass every image

    out = Manipulator(Spoiled(value), psi)(job)
    assert out["ok"].tolist() == [True, False, True, False]
    assert out["invalid"].tolist() == [0, 3, 0, 3]  # every alpha tried, every decode refused


def test_a_generator_that_turns_bad_after_the_start_up_check_ends_the_run(user, tmp_path):
    """The attack of issue 17: decode passes the 2-latent check, then puts NaN into some pixels
    (about 30 % of the images): one Error line naming the generator and the share, nothing
    published."""
    study = write_study(user, "spoiled", "my_models:make_spoiling_generator")
    out = tmp_path / "run"
    res = CliRunner().invoke(cli, ["--quiet", "generate", "-e", str(study), "--out", str(out),
                                   "--cache-dir", str(tmp_path / "cache"), "--threads", "1"])
    assert res.exit_code == 1, res.output
    error = [line for line in res.stderr.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and "Traceback" not in res.output
    assert "[generator] factory = 'my_models:make_spoiling_generator'" in error[0]
    assert "max_invalid_share = 0.01" in error[0] and "%)" in error[0]
    assert not out.exists()


@pytest.mark.parametrize("spoil", ["nan", "high"])
def test_bad_images_within_the_allowed_share_are_refused_and_counted(user, tmp_path, spoil):
    study = write_study(user, f"spoiled-{spoil}", "my_models:make_spoiling_generator",
                        max_invalid_share=0.9)
    text = study.read_text().replace('factory = "my_models:make_spoiling_generator"',
                                     'factory = "my_models:make_spoiling_generator"\n'
                                     f'spoil = "{spoil}"\nshare = 0.2')
    study.write_text(text)
    out = tmp_path / "run"
    run(study, out)
    manifest = runs.read_manifest(out)
    stats = manifest["pairs"]["stats"]
    assert manifest["pairs"]["invalid_images"] == sum(s["invalid_images"] for s in stats.values())
    assert manifest["pairs"]["invalid_images"] > 0
    rows = list(csv.DictReader(open(out / runs.PAIRS)))
    assert len(rows) == 8 and all(r["ok_cause"] == r["ok_effect"] == "1" for r in rows)


# --------------------------------------------------------------------------- caches


SMALL = digits_data.DigitsConfig(draws=2, n_digits=40, seed=3)


def load_digits(cache: Path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = digits_data.load(SMALL, cache)
    return data, texts([w.message for w in caught], CacheWarning)


@pytest.fixture(scope="module")
def digits_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("digits-cache")
    data, warned = load_digits(cache)
    assert warned == []
    return cache, data


def digits_copy(digits_cache, tmp_path) -> Path:
    cache = tmp_path / "cache"
    shutil.copytree(digits_cache[0], cache)
    return cache


def npz_path(cache: Path) -> Path:
    return cache / f"digits-{SMALL.key()}.npz"


def test_a_flipped_label_array_in_the_digits_cache_is_rebuilt(digits_cache, tmp_path):
    cache = digits_copy(digits_cache, tmp_path)
    with np.load(npz_path(cache)) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["a_thick"] = 1 - arrays["a_thick"]  # valid 0/1 values, every label wrong
    np.savez_compressed(npz_path(cache), **arrays)
    data, warned = load_digits(cache)
    assert len(warned) == 1 and "attribute thick differs" in warned[0]
    assert np.array_equal(data.attributes["thick"], digits_cache[1].attributes["thick"])
    again, warned = load_digits(cache)  # rebuilt: the next run is not blocked, nor warned
    assert warned == [] and np.array_equal(again.attributes["thick"], data.attributes["thick"])


def test_a_truncated_or_pickled_digits_cache_is_rebuilt(digits_cache, tmp_path):
    cache = digits_copy(digits_cache, tmp_path)
    blob = npz_path(cache).read_bytes()
    for bad in (blob[: len(blob) // 2], b"\x80\x04\x95" + blob[:100]):
        npz_path(cache).write_bytes(bad)
        data, warned = load_digits(cache)
        assert len(warned) == 1 and "rebuilding it" in warned[0]
        assert np.array_equal(data.images, digits_cache[1].images)


@pytest.mark.parametrize("target", ["dir", "file"])
def test_a_digits_cache_another_user_can_write_is_refused(digits_cache, tmp_path, target):
    cache = digits_copy(digits_cache, tmp_path)
    victim = cache if target == "dir" else npz_path(cache)
    victim.chmod(victim.stat().st_mode | 0o002)
    with pytest.raises(CacheError, match=r"writable by other users .*chmod go-w"):
        digits_data.load(SMALL, cache)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_a_cache_owned_by_another_user_is_refused(digits_cache, tmp_path):
    cache = digits_copy(digits_cache, tmp_path)
    os.chown(npz_path(cache), 54321, 54321)
    with pytest.raises(CacheError, match="belongs to another user"):
        digits_data.load(SMALL, cache)
    os.chown(npz_path(cache), 0, 0)
    os.chown(cache, 0, 54321)  # a group that is not the user's own, with write access
    cache.chmod(0o775)
    with pytest.raises(CacheError, match="writable by other users"):
        digits_data.load(SMALL, cache)


def test_a_run_with_a_world_writable_cache_directory_ends_with_one_error_line(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o777)
    res = CliRunner().invoke(cli, ["--quiet", "generate", "-e", "mog", "--out",
                                   str(tmp_path / "run"), "--cache-dir", str(cache)])
    assert res.exit_code == 1
    assert res.stderr.startswith("Error: ") and len(res.stderr.strip().splitlines()) == 1
    assert "writable by other users (mode 777)" in res.stderr
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- the CNN cache


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """A labelled folder of 80 decoded 16x16 images (attributes.csv, balanced)."""
    root = tmp_path_factory.mktemp("faces")
    folder, _ = write_image_folder(root / "faces", make_generator(), n=80, seed=1)
    table = label_folder(folder, ImageStats())
    return folder, table


def train_cnn_section(faces, cache: Path):
    folder, table = faces
    section = Section({"kind": "train", "images": str(folder), "attributes": str(table),
                       "epochs": 30, "batch_size": 8, "lr": 0.005, "width": 8},
                      source="study.toml", name="observation_classifier")
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _, info = cnn.from_section(section, generator_device="cpu", channels=3,
                                       size=(16, 16), cache_dir=cache)
    finally:
        torch.set_num_threads(old)
    return info, texts([w.message for w in caught], CacheWarning)


@pytest.fixture(scope="module")
def cnn_cache(faces, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cnn-cache")
    info, warned = train_cnn_section(faces, cache)
    assert info["origin"] == "trained" and warned == []
    assert min(info["accuracy"].values()) > 0.6
    return cache, info


def cnn_copy(cnn_cache, tmp_path) -> Path:
    cache = tmp_path / "cache"
    shutil.copytree(cnn_cache[0], cache)
    return next(cache.glob("obs-cnn-*"))


def test_a_valid_cnn_cache_is_used_with_its_accuracy_computed_again(faces, cnn_cache, tmp_path):
    entry = cnn_copy(cnn_cache, tmp_path)
    info, warned = train_cnn_section(faces, entry.parent)
    assert info["origin"] == "cache" and warned == []
    assert info["accuracy"] == cnn_cache[1]["accuracy"]


def negate_last_layer(entry: Path, *, forge: bool, accuracy: float | None = None) -> None:
    state = torch.load(entry / "model.pt", weights_only=True)
    last = sorted(k for k in state if k.endswith(".weight"))[-1]
    state[last] = -state[last]
    state[last.replace("weight", "bias")] = -state[last.replace("weight", "bias")]
    buf = io.BytesIO()
    torch.save(state, buf)
    (entry / "model.pt").write_bytes(buf.getvalue())
    if forge:
        import hashlib

        meta = json.loads((entry / "meta.json").read_text())
        meta["sha256"] = hashlib.sha256(buf.getvalue()).hexdigest()
        if accuracy is not None:
            meta["report"]["accuracy"] = {a: accuracy for a in meta["report"]["accuracy"]}
        (entry / "meta.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("forge", [False, True], ids=["plain", "checksum-forged"])
def test_a_cnn_with_its_last_layer_negated_is_detected_and_retrained(faces, cnn_cache, tmp_path,
                                                                     forge):
    """The attack of issue 17: origin 'cache' and the accuracy copied from meta.json while the
    pairs' targets came out inverted. The held-out accuracy is computed again on load."""
    entry = cnn_copy(cnn_cache, tmp_path)
    negate_last_layer(entry, forge=forge)
    info, warned = train_cnn_section(faces, entry.parent)
    assert len(warned) == 1 and "training it again" in warned[0]
    assert ("held-out accuracy computed again" if forge else "checksum") in warned[0]
    assert info["origin"] == "trained" and info["accuracy"] == cnn_cache[1]["accuracy"]


def test_the_accuracy_in_the_result_is_computed_again_never_copied(faces, cnn_cache, tmp_path):
    """meta.json's figure, edited within one held-out image: the cache is used, and the
    accuracy that lands in the result is the one computed on the held-out images."""
    entry = cnn_copy(cnn_cache, tmp_path)
    meta = json.loads((entry / "meta.json").read_text())
    true = dict(meta["report"]["accuracy"])
    meta["report"]["accuracy"] = {a: v - 0.5 / meta["report"]["n_test"] for a, v in true.items()}
    (entry / "meta.json").write_text(json.dumps(meta))
    info, warned = train_cnn_section(faces, entry.parent)
    assert info["origin"] == "cache" and warned == [] and info["accuracy"] == true


@pytest.mark.parametrize("damage", ["pickle", "truncated", "meta-list", "meta-garbage",
                                    "model-missing"])
def test_a_damaged_cnn_cache_is_one_warning_and_a_rebuild_never_a_block(faces, cnn_cache,
                                                                       tmp_path, damage):
    entry = cnn_copy(cnn_cache, tmp_path)
    if damage == "pickle":
        import pickle

        (entry / "model.pt").write_bytes(pickle.dumps({"net.0.weight": [1, 2, 3]}))
    elif damage == "truncated":
        blob = (entry / "model.pt").read_bytes()
        (entry / "model.pt").write_bytes(blob[: len(blob) // 2])
    elif damage == "meta-list":
        (entry / "meta.json").write_text("[]")
    elif damage == "meta-garbage":
        (entry / "meta.json").write_bytes(b"\xff\xfe{not json")
    else:
        (entry / "model.pt").unlink()
    info, warned = train_cnn_section(faces, entry.parent)
    assert len(warned) == 1 and warned[0].startswith(f"{entry}: unusable cached classifier (")
    assert info["origin"] == "trained" and info["accuracy"] == cnn_cache[1]["accuracy"]
    info, warned = train_cnn_section(faces, entry.parent)  # the rebuilt cache serves the next
    assert info["origin"] == "cache" and warned == []


def test_a_cnn_cache_another_user_can_write_is_refused(faces, cnn_cache, tmp_path):
    entry = cnn_copy(cnn_cache, tmp_path)
    (entry / "model.pt").chmod(0o666)
    with pytest.raises(CacheError, match="model.pt: the cache file is writable by other users"):
        train_cnn_section(faces, entry.parent)


def test_a_digits_classifier_whose_accuracy_is_not_the_recorded_one_is_trained_again(
        digits_cache):
    """The digits bundle's observation classifier with its last layer negated (checksums left to
    agree, as after a forger's edit): its held-out accuracy, computed again on load, no longer
    agrees with the bundle's file, so a cached bundle is trained again (the computed figures are
    the ones that reach a result)."""
    from cage.experiments.digits import models as digits_models
    from cage.experiments.digits.kind import parse_options

    shipped = parse_options(load_experiment("digits")).models
    found = digits_models._read_bundle(digits_models.shipped_dir(), shipped)
    assert found is not None
    configs = dataclasses.replace(shipped, data=SMALL)  # the small data set's held-out split
    found.origin = "cache"
    data = digits_cache[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # recorded on the full data set: replaced by this one's
        digits_models._recompute_accuracy(found, configs, data, Path("bundle"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert digits_models._recompute_accuracy(found, configs, data, Path("bundle"))
    assert texts([w.message for w in caught], CacheWarning) == []
    last = [m for m in found.psi.model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.neg_()
        last.bias.neg_()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert not digits_models._recompute_accuracy(found, configs, data, Path("bundle"))
    warned = texts([w.message for w in caught], CacheWarning)
    assert len(warned) == 1 and "trained again" in warned[0]


class TurnsBad:
    """A generator whose decode passes the start-up check (its first call) and then returns NaN
    for the latents whose first coordinate is negative."""

    latent_dim = 2

    def __init__(self):
        self.calls = 0

    def sample(self, n, seed):
        return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))

    def decode(self, z):
        self.calls += 1
        x = torch.full((z.shape[0], 1, 4, 4), 0.5)
        if self.calls > 1:
            x[z[:, 0] < 0] = float("nan")
        return x


def test_eq9_and_labelling_refuse_a_decode_that_turns_non_finite():
    """No decoded image can be set aside in eq. 9 or in the labelled samples: one error names
    the count, never a silent NaN GATE."""
    from cage.engine.variants import ObservationScorer, Probe
    from cage.labels.sampled import label_prior_samples

    gen = TurnsBad()
    gen.decode(gen.sample(2, 0))  # the start-up check passes

    def psi(x):
        return {"bright": x.mean(dim=(1, 2, 3))}

    z = gen.sample(40, 1)
    scorer = ObservationScorer(gen, psi, 16, lambda block: z, 4096)
    with pytest.raises(ConfigError, match=r"eq. 9: the generator's decode returned NaN or "
                                          r"infinite values for \d+ of 16 latents of prior block 0"):
        scorer.score([Probe(40, np.ones(2), 1.0)])
    with pytest.raises(ConfigError, match="labelling prior samples: the generator's decode "
                                          "returned NaN or infinite values"):
        label_prior_samples(gen, psi, 40, 0, batch=16)


def test_fixing_pairs_after_a_failure_still_resumes(resumable, user):
    """The binding leaves out the sections that change no checkpointed result ([experiment],
    [cage], [pairs], [hits]): fixing [pairs] after a failure resumes, as docs/distributed.md
    promises."""
    out, _ = resumable
    fixed = write_study(user, "state-fixed", "my_models:make_fragile_generator", n_same_source=3)
    caught = run(fixed, out)
    assert texts(caught, CheckpointWarning) == []
    record = runs.read_manifest(out)["checkpoints"]
    assert record["resumed"] > 50 and record["discarded"] is None
