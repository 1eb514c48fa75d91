"""The ``generator`` experiment kind end to end through ``cage-eval generate``: a tiny random
torch generator with a labelled image folder (directions, pairs, HIT pages), the precomputed-latents
path against the generator path, the paper's CelebA-HQ config on stand-ins, and bad input."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from generator_fixtures import (
    label_folder,
    pickle_nvlabs_generator,
    write_image_folder,
    write_nvlabs_clone,
)
from PIL import Image
from tiny_models import ImageStats, make_generator

from cage.config.experiment import load_experiment
from cage.run.pipeline import run_experiment
from cage_eval import runs
from cage_eval.cli import cli

pytestmark = pytest.mark.usefixtures("one_thread")

SUPPORT = Path(__file__).resolve().parents[1] / "support"

SMALL_CAGE = {"alphas": [1.0, 2.0], "alpha": 1.0, "k": 300, "n_null": 5, "baselines": False,
              "k_null_observation": 60, "mmd_n": 40, "mmd_permutations": 10, "min_accuracy": 0.5}


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    return repr(v)


def write_experiment(path: Path, sections: dict) -> Path:
    lines = []
    for name, body in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in body.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def generate(*args):
    """``cage-eval --quiet generate ...``: results and errors only (progress has its own tests)."""
    return CliRunner().invoke(cli, ["--quiet", "generate", *args], catch_exceptions=False)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A researcher's folder: their code in src/, 80 labelled 16x16 colour images (CelebA's
    list_attr format), and balanced thresholds for their classifier."""
    root = tmp_path_factory.mktemp("user")
    (root / "src").mkdir()
    shutil.copy(SUPPORT / "tiny_models.py", root / "src" / "my_models.py")
    gen = make_generator()
    folder, _ = write_image_folder(root / "faces", gen, n=80, seed=1)
    label_folder(folder, ImageStats(), celeba=True)
    with torch.no_grad():
        probs = ImageStats(0.0, 0.0, 1.0)(gen.decode(gen.sample(500, 9)))
    # thresholds at the prior's medians (sigmoid of the statistic with sharpness 1 is monotone)
    medians = {k: float(torch.logit(v.median())) for k, v in probs.items()}
    return root, medians


def base_sections(root: Path, **changes) -> dict:
    sections = {
        "experiment": {"name": "tiny", "kind": "generator", "seed": 0},
        "cage": {"pairs": [["bright", "red"]], **SMALL_CAGE},
        "generator": {"factory": "my_models:make_generator", "python_path": ["src"]},
        "observation_classifier": {"kind": "train", "images": "faces",
                                   "attributes": "list_attr.txt", "epochs": 30,
                                   "batch_size": 8, "lr": 0.005},
        "labels": {"source": "folder", "images": "faces", "attributes": "list_attr.txt",
                   "encoder": "inversion", "inversion": {"steps": 40, "lr": 0.1}},
        "pairs": {"n_same_source": 4, "n_same_destination": 4, "dags": ["bright->red"],
                  "alpha_steps": 4, "alpha_growth": 2.0, "sheet_pairs": 4},
        "hits": {"domain": "faces"},
    }
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if value is None:
            sections[section].pop(field, None) if field else sections.pop(section)
        elif field:
            sections[section][field] = value
        else:
            sections[section] = value
    return sections


@pytest.mark.slow
def test_a_tiny_generator_and_a_labelled_folder_end_to_end(workspace, tmp_path):
    root, _ = workspace
    exp = write_experiment(root / "tiny.toml", base_sections(root))
    out = tmp_path / "run"
    res = generate("-e", str(exp), "--out", str(out), "--cache-dir", str(tmp_path / "cache"))
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0].startswith("tiny: run ") and f"written to {out}" in lines[0]
    assert any(line.startswith("bright / red           latent ") for line in lines)
    assert any(line.startswith("bright / red           observation ") for line in lines)
    assert any(line.startswith("  bright->red      declared") for line in lines)

    manifest = runs.read_manifest(out)
    setup = manifest["setup"]
    assert setup["generator"]["factory"] == "my_models:make_generator"
    assert setup["generator"]["obs_shape"] == [3, 16, 16]
    assert setup["labels"]["source"] == "folder" and setup["labels"]["format"] == "celeba"
    inversion = setup["labels"]["inversion"]
    assert inversion["steps"] == 40 and inversion["final_mse"]["max"] < 0.01
    cnn = setup["observation_classifier"]
    assert cnn["kind"] == "train" and cnn["origin"] == "trained" and cnn["n_test"] == 16
    assert setup["hits"] == {"domain": "faces"} and manifest["pairs"]["hit_domain"] == "faces"
    assert manifest["pairs"]["source_images"] == "real (labelled folder)"

    rows = list(csv.DictReader(open(out / runs.PAIRS)))
    assert [r["setting"] for r in rows].count("same_source") == 4 and len(rows) == 8
    assert all(r["ok_cause"] == r["ok_effect"] == "1" for r in rows)
    for r in rows:
        with Image.open(out / runs.IMAGES_DIR / r["image_cause"]) as im:
            assert (im.mode, im.size) == ("RGB", (16, 16))
    # Same-source pairs start from the real image of the folder, byte for byte.
    first = next(r for r in rows if r["setting"] == "same_source")
    real = np.asarray(Image.open(root / "faces" / f"img_{int(first['source_cause_id']):03d}.png"))
    with Image.open(out / runs.IMAGES_DIR / first["image_source_cause"]) as im:
        assert np.array_equal(np.asarray(im), real)
    for sheet in manifest["pairs"]["sheets"]:
        with Image.open(out / sheet) as im:
            assert im.mode == "RGB"

    # The HIT pages.
    res = CliRunner().invoke(cli, ["hits", str(out), "--domain", "faces"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert res.output.startswith(f"{out / runs.HIT_ITEMS}: 8 HIT items (8 pairs")
    pages = sorted((out / "hits_preview").glob("h*.html"))
    assert len(pages) == 8
    assert "compared to actual human faces" in pages[0].read_text()

    # A second run finds the trained classifier in the cache and repeats the run exactly.
    again = tmp_path / "again"
    res = generate("-e", str(exp), "--out", str(again), "--cache-dir", str(tmp_path / "cache"))
    assert res.exit_code == 0, res.output
    assert runs.read_manifest(again)["setup"]["observation_classifier"]["origin"] == "cache"
    for name in (runs.DIRECTIONS, runs.PAIRS, runs.CLASSIFIERS):
        assert (out / name).read_bytes() == (again / name).read_bytes()


def test_precomputed_latents_give_the_same_gates_as_the_generator_path(workspace, tmp_path):
    root, medians = workspace
    classifier = {"kind": "callable", "callable": "my_models:ImageStats",
                  "callable_options": {"bright_at": medians["bright"], "red_at": medians["red"],
                                       "sharpness": 40.0}}
    sampled = base_sections(root, observation_classifier=classifier,
                            labels={"source": "classifier", "n_samples": 400},
                            pairs__n_same_source=3, pairs__n_same_destination=2)
    first = tmp_path / "sampled"
    run_experiment(load_experiment(write_experiment(root / "sampled.toml", sampled)), first,
                   cache_dir=tmp_path / "cache")
    art = np.load(first / runs.ARTIFACTS)
    np.save(root / "latents.npy", art["data_latents"])
    with open(root / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["bright", "red"])
        writer.writerows(zip(art["labels__bright"], art["labels__red"], strict=True))
    pre = base_sections(root, observation_classifier=classifier,
                        labels={"source": "precomputed", "latents": "latents.npy",
                                "labels": "labels.csv"},
                        pairs__n_same_source=3, pairs__n_same_destination=2)
    second = tmp_path / "precomputed"
    run_experiment(load_experiment(write_experiment(root / "pre.toml", pre)), second,
                   cache_dir=tmp_path / "cache")
    gates = [list(csv.DictReader(open(d / runs.DIRECTIONS))) for d in (first, second)]
    assert [r["outcome"] for r in gates[0]] == ["latent", "observation"]
    for a, b in zip(*gates, strict=True):
        for col in ("gate_12", "gate_21", "delta_tau", "p_delta_tau"):
            assert a[col] == b[col], col
    for name in (runs.DIRECTIONS, runs.ALPHA_SWEEP, runs.NULL_DRAWS, runs.PAIRS):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    manifest = runs.read_manifest(second)
    assert manifest["setup"]["labels"]["source"] == "precomputed"
    assert manifest["pairs"]["source_images"] == "decoded latents"


class AttributeLogits(torch.nn.Module):
    """Stand-in for a CelebA attribute classifier: 40 logits, linear in the colour means."""

    def __init__(self, centre: torch.Tensor, weight: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("centre", centre)
        self.register_buffer("weight", weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.mean(dim=(2, 3)) - self.centre) @ self.weight.T


@pytest.mark.slow
def test_the_celebahq_study_runs_on_stand_ins(tmp_path):
    clone = write_nvlabs_clone(tmp_path / "stylegan2-ada-pytorch")
    pkl = pickle_nvlabs_generator(clone, tmp_path / "celebahq.pkl", seed=3)
    config = load_experiment("celebahq_stylegan2", overrides=[
        f"generator.pickle={json.dumps(str(pkl))}", f"generator.repo_path={json.dumps(str(clone))}"])
    # The stand-in classifier: logits centred on the generator's own images, so labels balance.
    from cage.experiments.generator import _section
    from cage.generators.registry import load_generator
    from cage.labels.observation import ObservationClassifier

    gen = load_generator(_section(config, "generator")).generator
    psi_in = ObservationClassifier(lambda x: {"x": x.mean(dim=(1, 2, 3))},
                                   **{k: config.kind_options["observation_classifier"][k]
                                      for k in ("input_size", "mean", "std")})
    with torch.no_grad():
        feats = psi_in.prepare(gen.decode(gen.sample(256, 1))).mean(dim=(2, 3))
    weight = torch.randn(40, 3, generator=torch.Generator().manual_seed(0)) / feats.std(0)
    torch.jit.save(torch.jit.script(AttributeLogits(feats.mean(0), 4 * weight)),
                   str(tmp_path / "celeba_attributes.pt"))
    out = tmp_path / "run"
    res = generate(
        "-e", "celebahq_stylegan2", "--out", str(out), "--device", "cpu",
        "--set", f"generator.pickle={json.dumps(str(pkl))}",
        "--set", f"generator.repo_path={json.dumps(str(clone))}",
        "--set", f"observation_classifier.path={json.dumps(str(tmp_path / 'celeba_attributes.pt'))}",
        "--set", "observation_classifier.input_size=[32, 32]",  # 224 costs a minute on 2 cores
        "--set", "cage.k=200", "--set", "cage.n_null=3", "--set", "cage.baselines=false", "--set", "cage.k_null_observation=40",
        "--set", "cage.alphas=[1.0, 2.0]", "--set", "cage.alpha=1.0",
        "--set", "cage.mmd_n=30", "--set", "cage.mmd_permutations=5",
        "--set", "cage.min_accuracy=0.5", "--set", "labels.n_samples=400",
        "--set", "pairs.n_same_source=2", "--set", "pairs.n_same_destination=2",
        "--set", "pairs.dags=['Male->Mustache']", "--set", "pairs.alpha_steps=5")
    assert res.exit_code == 0, res.output
    manifest = runs.read_manifest(out)
    assert manifest["config"]["generator"]["adapter"] == "stylegan2_nvidia"
    assert manifest["setup"]["generator"]["truncation_psi"] == 0.7
    directions = list(csv.DictReader(open(out / runs.DIRECTIONS)))
    assert len(directions) == 16  # 8 pairs x 2 outcome variants
    assert {(d["m1"], d["m2"]) for d in directions} == {
        ("Male", "Mustache"), ("Male", "Bald"), ("Male", "Goatee"), ("Male", "Rosy_Cheeks"),
        ("Young", "Bald"), ("Male", "Blond_Hair"), ("Male", "Smiling"),
        ("Pointy_Nose", "Brown_Hair")}
    assert manifest["pairs"]["rows"] == 4 and manifest["pairs"]["hit_domain"] == "faces"


def test_the_celebahq_study_without_files_says_what_to_put_where(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = generate("-e", "celebahq_stylegan2", "--out", str(tmp_path / "run"))
    assert res.exit_code == 1
    assert res.output == (
        "Error: built-in:celebahq_stylegan2: [generator] pickle = "
        "'models/stylegan2-celebahq-256x256.pkl' "
        f"({tmp_path / 'models/stylegan2-celebahq-256x256.pkl'}): no such file; put your "
        "StyleGAN2-ADA / StyleGAN3 network pickle (network-snapshot-*.pkl, with G_ema) there, or "
        "point pickle at it\n")
    assert not (tmp_path / "run").exists()
    res = generate("--list")
    assert any(line.startswith("celebahq_stylegan2 ") for line in res.output.splitlines())


LATENT_ONLY = {"observation_classifier": None, "cage__outcomes": ["latent"],
               "pairs__n_same_source": 0, "pairs__n_same_destination": 0}


def _mixed_sizes(root: Path) -> dict:
    folder = root / "mixed"
    folder.mkdir(exist_ok=True)
    for i, size in enumerate([(16, 16), (16, 16), (32, 24)]):
        Image.new("RGB", size).save(folder / f"m{i}.png")
    (root / "mixed.csv").write_text("file,bright,red\nm0.png,1,0\nm1.png,0,1\nm2.png,1,1\n")
    return {"labels__images": "mixed", "labels__attributes": "mixed.csv", **LATENT_ONLY}


def _wrong_names(root: Path) -> dict:
    (root / "wrong.csv").write_text("file,bright,red\n000001.jpg,1,0\n000002.jpg,0,1\n")
    return {"labels__attributes": "wrong.csv", **LATENT_ONLY}


def _bad_pickle(root: Path) -> dict:
    clone = write_nvlabs_clone(root / "clone")
    pkl = root / "net.pkl"
    if not pkl.exists():
        pickle_nvlabs_generator(clone, pkl)
    return {"generator": {"adapter": "stylegan2_nvidia", "pickle": "net.pkl"}}


@pytest.mark.parametrize("changes, message", [
    (lambda r: {"generator__factory": "my_models:make_incomplete"},
     "[generator] factory = 'my_models:make_incomplete': the generator (Incomplete) has no "
     "decode; it must provide latent_dim, sample(n, seed) and decode(z)"),
    (lambda r: {"generator__factory": "my_models:make_flat"},
     "decode(z) returned shape (2, 16, 16); expected images (n, C, H, W) with C = 1 or 3"),
    (lambda r: {"generator__factory": "my_models:make_unscaled"},
     "images must be in [0, 1] (a generator with outputs in [-1, 1] needs output_range"),
    (_wrong_names, "wrong.csv: 2 of 2 image names are not files in"),
    (_mixed_sizes, "mixed: images of different sizes: 'm0.png' is 16x16, 'm2.png' is 32x24"),
    (_bad_pickle, "unpickling needs module 'torch_utils', NVIDIA's code, which cage-eval does not "
                  "ship; set [generator] repo_path to your clone"),
    (lambda r: {"observation_classifier": None, "labels__encoder": "generator"},
     "[cage] outcomes = ['latent', 'observation']: 'observation' (eq. 9) classifies decoded "
     "images, which needs an [observation_classifier] section"),
    (lambda r: {"observation_classifier": None, "cage__outcomes": ["latent"]},
     "[pairs] n_same_source: every counterfactual pair is checked by the observation classifier"),
    (lambda r: {"labels__encoder": "generator"},
     "[labels] encoder = 'generator': the generator has no encode(x); use encoder = "
     "\"inversion\""),
    (lambda r: {"labels__colour": 1}, "[labels] colour: unknown field"),
    (lambda r: {"cage__pairs": [["bright", "Smiling"]], "pairs__dags": [], **LATENT_ONLY},
     "list_attr.txt: has no column 'Smiling' named in [cage] pairs; its attributes are bright, "
     "red"),
    (lambda r: {"cage__pairs": [["bright", "Smiling"]], "pairs__dags": []},
     "[observation_classifier]: the classifier gives no 'Smiling' (it gives bright, red)"),
])
def test_bad_input_is_one_error_line_and_leaves_nothing(workspace, tmp_path, changes, message):
    root, _ = workspace
    exp = write_experiment(root / "bad.toml", base_sections(root, **changes(root)))
    out = tmp_path / "run"
    res = generate("-e", str(exp), "--out", str(out), "--cache-dir", str(tmp_path / "cache"))
    assert res.exit_code == 1, res.output
    text = res.output.strip()
    assert text.startswith("Error: ") and "\n" not in text, text
    assert message in text, text
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_device_cuda_without_a_gpu_is_an_error(workspace, tmp_path):
    root, _ = workspace
    exp = write_experiment(root / "cpu.toml", base_sections(root))
    res = generate("-e", str(exp), "--out", str(tmp_path / "run"), "--device", "cuda")
    assert res.exit_code == 1
    assert res.output.startswith(f"Error: {exp}: [generator] device = 'cuda': torch ")
    res = generate("-e", "mog", "--out", str(tmp_path / "run"), "--device", "cuda")
    assert res.output.strip() == ("Error: --device: experiment 'mog' (kind 'mog') has no "
                                  "[generator] section; it runs on the CPU, drop --device")
