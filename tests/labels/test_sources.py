"""Label sources: attribute tables, labelled folders, observation classifiers, the trained CNN,
optimisation-based inversion and precomputed latents."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from generator_fixtures import label_folder, write_image_folder
from PIL import Image
from tiny_models import ImageStats, make_generator, stats_array

from cage.labels.attributes_file import read_attribute_table
from cage.labels.cnn import CNNConfig, train_cnn
from cage.labels.folder import open_image_folder
from cage.labels.inversion import InversionConfig, Inverter
from cage.labels.observation import ObservationClassifier
from cage.labels.pool import DecodedImages
from cage.labels.precomputed import read_precomputed
from cage_eval.errors import ConfigError, InputFileError

pytestmark = pytest.mark.usefixtures("one_thread")

# --------------------------------------------------------------------------- attribute tables


def test_csv_and_celeba_tables_read_the_same(tmp_path):
    (tmp_path / "a.csv").write_text("image_id,Male,Smiling\nx.png,1,-1\ny.png,-1,1\n")
    (tmp_path / "a.txt").write_text("2\nMale Smiling\nx.png  1 -1\ny.png -1  1\n")
    (tmp_path / "b.csv").write_text("filename,Male,Smiling\nx.png,1,false\ny.png,0,true\n")
    tables = [read_attribute_table(tmp_path / n, names=True) for n in ("a.csv", "a.txt", "b.csv")]
    for t in tables:
        assert t.names == ["x.png", "y.png"]
        assert t.attributes["Male"].tolist() == [1, 0] and t.attributes["Smiling"].tolist() == [0, 1]
    assert tables[1].format == "celeba"
    (tmp_path / "labels.csv").write_text("id,Male\n7,1\n9,0\n")
    t = read_attribute_table(tmp_path / "labels.csv", names=False)
    assert t.ids.tolist() == [7, 9] and list(t.attributes) == ["Male"]


@pytest.mark.parametrize("text, message", [
    ("filename,Male\nx.png,2\n", "line 2: Male = '2'; attribute values must be 0/1, -1/1"),
    ("filename,Male\nx.png,0\ny.png,-1\n", "attribute 'Male' mixes 0 and -1"),
    ("filename,Male\nx.png,1\nx.png,0\n", "line 3: image 'x.png' is listed twice (also line 2)"),
    ("filename,Male\nx.png,1,0\n", "line 2: 3 fields, the header has 2"),
    ("3\nMale\nx.png 1\n", "line 1 says 3 rows but the file has 1"),
    ("filename\nx.png\n", "no attribute columns"),
    ("filename,Male\n", "no data rows"),
])
def test_bad_tables_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "attrs.csv"
    path.write_text(text)
    with pytest.raises(InputFileError) as info:
        read_attribute_table(path, names=True)
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value)


# --------------------------------------------------------------------------- folders


def _png(path, size=(8, 8), mode="RGB", value=100):
    Image.new(mode, size, value if mode == "L" else (value, 50, 20)).save(path)


def test_folder_reads_lazily_converts_and_resizes(tmp_path):
    for name in ("a.png", "b.png"):
        _png(tmp_path / name, size=(12, 6))
    folder = open_image_folder(tmp_path, ["b.png", "a.png"], table=tmp_path / "t.csv",
                               channels=1, size=(3, 6), resize=True)
    assert folder.shape == (2, 3, 6) and folder.native == (6, 12)
    assert folder[0].dtype == np.uint8 and folder[0].shape == (3, 6)
    assert folder.floats([0, 1]).shape == (2, 1, 3, 6)
    rgb = open_image_folder(tmp_path, ["a.png"], table=tmp_path / "t.csv", channels=3,
                            size=(6, 12), resize=False)
    assert rgb.shape == (1, 6, 12, 3) and rgb[0][0, 0].tolist() == [100, 50, 20]
    assert rgb.take([0, 0]).names == ["a.png", "a.png"]


def test_folder_errors(tmp_path):
    _png(tmp_path / "a.png")
    _png(tmp_path / "b.png", size=(16, 8))
    _png(tmp_path / "c.png")
    table = tmp_path / "attributes.csv"
    with pytest.raises(InputFileError) as info:
        open_image_folder(tmp_path, ["a.png", "000001.jpg", "000002.jpg"], table=table,
                          channels=3, size=(8, 8), resize=False)
    assert str(info.value).startswith(
        f"{table}: 2 of 3 image names are not files in {tmp_path} (first: '000001.jpg', "
        "'000002.jpg'); the folder holds e.g. 'a.png', 'b.png', 'c.png'; the first column must "
        "name the images of that folder")
    with pytest.raises(InputFileError) as info:
        open_image_folder(tmp_path, ["a.png", "b.png", "c.png"], table=table, channels=3,
                          size=(8, 8), resize=True)
    assert str(info.value) == (f"{tmp_path}: images of different sizes: 'a.png' is 8x8, 'b.png' "
                               "is 16x8 (2 sizes in all: 8x8: 2, 16x8: 1); CAGE needs one size, "
                               "resize the images beforehand")
    with pytest.raises(InputFileError, match="images are 8x8 but the generator makes 16x16; set "
                                             r"\[labels\] resize = true"):
        open_image_folder(tmp_path, ["a.png"], table=table, channels=3, size=(16, 16),
                          resize=False)
    with pytest.raises(InputFileError, match="leaves the image folder"):
        open_image_folder(tmp_path, ["../a.png"], table=table, channels=3, size=(8, 8),
                          resize=False)
    (tmp_path / "d.png").write_bytes(b"not a png")
    with pytest.raises(InputFileError, match="d.png: not a readable image"):
        open_image_folder(tmp_path, ["d.png"], table=table, channels=3, size=(8, 8), resize=False)


# --------------------------------------------------------------------------- observation classifiers


def test_observation_classifier_outputs():
    images = torch.rand(10, 3, 8, 8)
    as_dict = ObservationClassifier(ImageStats(), batch_size=3)(images)
    as_array = ObservationClassifier(stats_array, columns=["bright", "red"], batch_size=4)(images)
    assert set(as_dict) == {"bright", "red"} and as_dict["bright"].shape == (10,)
    for k in as_dict:
        assert np.allclose(as_dict[k], as_array[k], atol=1e-6)

    def logits(x):
        return torch.logit(torch.as_tensor(stats_array(x)).clamp(1e-6, 1 - 1e-6))

    as_logit = ObservationClassifier(logits, columns=["bright", "red"], outputs="logit")(images)
    assert np.allclose(as_logit["red"], as_dict["red"], atol=1e-5)
    # Resizing, channels and normalisation happen before the call.
    seen = {}

    def spy(x):
        seen["shape"], seen["mean"] = tuple(x.shape), float(x.mean())
        return {"a": torch.full((x.shape[0],), 0.5)}

    ObservationClassifier(spy, input_size=(4, 4), channels=3, mean=[0.5] * 3, std=[0.5] * 3)(
        torch.full((2, 1, 8, 8), 0.75))
    assert seen["shape"] == (2, 3, 4, 4) and seen["mean"] == pytest.approx(0.5)


def test_observation_classifier_errors():
    images = torch.rand(4, 3, 8, 8)
    with pytest.raises(ConfigError, match="returns an array of 2 columns; name them with columns"):
        ObservationClassifier(stats_array)(images)
    with pytest.raises(ConfigError, match="returns 2 columns but columns names 3"):
        ObservationClassifier(stats_array, columns=["a", "b", "c"])(images)
    with pytest.raises(ConfigError, match="values in .* not probabilities; if the classifier "
                                          "returns logits set outputs = \"logit\""):
        ObservationClassifier(lambda x: {"a": torch.randn(x.shape[0]) * 5})(images)
    with pytest.raises(ConfigError, match="gives no 'Mustache' \\(it gives bright, red\\)"):
        ObservationClassifier(ImageStats()).check(images, ["bright", "Mustache"])
    with pytest.raises(ConfigError, match="has shape \\(3,\\) for 4 images"):
        ObservationClassifier(lambda x: {"a": torch.rand(3)})(images)


# --------------------------------------------------------------------------- the trained CNN


def test_cnn_learns_a_visible_attribute():
    rng = np.random.default_rng(0)
    images = torch.as_tensor(rng.random((240, 3, 16, 16)), dtype=torch.float32) * 0.5
    bright = rng.random(240) < 0.5
    images[bright] += 0.4
    labels = {"bright": bright.astype(np.int64), "noise": rng.integers(0, 2, 240)}
    config = CNNConfig(input_size=(16, 16), epochs=15, batch_size=16, lr=5e-3)
    model, report = train_cnn(images, labels, config, device=torch.device("cpu"))
    assert report.accuracy["bright"] >= 0.95 and report.n_test == 48
    assert 0.25 < report.accuracy["noise"] < 0.75
    again, _ = train_cnn(images, labels, config, device=torch.device("cpu"))
    for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # deterministic on the CPU


# --------------------------------------------------------------------------- inversion


def test_inversion_recovers_images_of_the_generator():
    gen = make_generator(latent_dim=4, size=8)
    z = gen.sample(3, 11) * 0.5
    with torch.no_grad():
        x = gen.decode(z)
    config = InversionConfig(steps=60, lr=0.08, prior_weight=0.0, batch_size=2)
    latents, mse = Inverter(gen, config).invert(x)
    with torch.no_grad():
        start = (gen.decode(torch.zeros(3, 4)) - x).pow(2).flatten(1).mean(1)
    assert latents.shape == (3, 4) and float(mse.max()) < 0.02 * float(start.min())
    # An image's latent does not depend on its batch companions.
    one_by_one = Inverter(gen, dataclasses.replace(config, batch_size=1)).invert(x)[0]
    assert torch.allclose(one_by_one, latents, atol=1e-4)


def test_inversion_needs_a_differentiable_decode():
    gen = make_generator(latent_dim=4, size=8)

    class NoGrad:
        latent_dim = 4
        sample = staticmethod(gen.sample)

        @staticmethod
        def decode(z):
            with torch.no_grad():
                return gen.decode(z)

    with pytest.raises(ConfigError, match="lets no gradient reach z"):
        Inverter(NoGrad(), InversionConfig(steps=2)).invert(torch.rand(2, 3, 8, 8))


# --------------------------------------------------------------------------- precomputed, pool


def test_precomputed_files(tmp_path):
    np.save(tmp_path / "latents.npy", np.zeros((3, 4), dtype=np.float64))
    (tmp_path / "labels.csv").write_text("a,b\n1,0\n0,1\n1,1\n")
    latents, table = read_precomputed(tmp_path / "latents.npy", tmp_path / "labels.csv",
                                      latent_dim=4)
    assert latents.dtype == np.float32 and table.attributes["b"].tolist() == [0, 1, 1]
    with pytest.raises(InputFileError, match="latents have 4 dimensions but the generator's "
                                             "latent_dim is 5"):
        read_precomputed(tmp_path / "latents.npy", tmp_path / "labels.csv", latent_dim=5)
    (tmp_path / "short.csv").write_text("a\n1\n")
    with pytest.raises(InputFileError, match="1 label rows for 3 latents"):
        read_precomputed(tmp_path / "latents.npy", tmp_path / "short.csv", latent_dim=4)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(InputFileError, match="not a readable .npy array"):
        read_precomputed(tmp_path / "obj.npy", tmp_path / "labels.csv", latent_dim=4)


def test_decoded_pool_matches_direct_decoding():
    gen = make_generator(latent_dim=4, size=8)
    z = gen.sample(20, 3).numpy()
    pool = DecodedImages(gen, z, (3, 8, 8), chunk=6, keep=2)
    assert pool.shape == (20, 8, 8, 3)
    direct = np.rint(np.clip(gen.decode(torch.as_tensor(z)).numpy(), 0, 1) * 255).astype(np.uint8)
    for i in (0, 19, 7, 0, 13):
        assert np.array_equal(pool[i], direct[i].transpose(1, 2, 0))
    assert pool.take(np.array([19, 0]))[0].tolist() == pool[19].tolist()
    grey = make_generator(latent_dim=4, size=8, channels=1)
    grey_pool = DecodedImages(grey, z, (1, 8, 8))
    assert grey_pool.shape == (20, 8, 8) and grey_pool[3].shape == (8, 8)


def test_fixture_folder_labels_are_balanced(tmp_path):
    folder, _ = write_image_folder(tmp_path / "faces", make_generator(), n=20)
    path = label_folder(folder, ImageStats(), celeba=True)
    table = read_attribute_table(path, names=True)
    assert table.format == "celeba" and table.attributes["bright"].sum() == 10
