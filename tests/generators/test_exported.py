"""The exported-network adapters (``openvino``, ``onnx``) and the ``onnx`` observation classifier
on tiny networks the tests write, against their NumPy closed forms; and the errors a user meets,
one ``Error:`` line each."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from exported_models import (
    mapping_np,
    mapping_weights,
    synthesis_np,
    synthesis_weights,
    to_ir,
    write_classifier,
    write_mapping,
    write_synthesis,
)

from cage.config.sections import Section
from cage.generators.base import gaussian_sample
from cage.generators.exported import DEFAULT_TRUNCATION_MEAN, TRUNCATION_SEED
from cage.generators.registry import load_generator
from cage.labels.observation import from_section as classifier_from_section
from cage_eval.cli import cli
from cage_eval.errors import ConfigError, InputFileError

pytest.importorskip("onnx", reason="the onnx package writes the test networks (dev extra)")
pytest.importorskip("onnxruntime", reason="onnxruntime runs them (faces extra)")

SHAPE = (3, 8, 8)


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    """Mapping and synthesis as ONNX and (when OpenVINO is installed) as IR."""
    root = tmp_path_factory.mktemp("nets")
    a, b = mapping_weights()
    bmat = synthesis_weights()
    files = {"a": a, "b": b, "B": bmat, "root": root,
             "mapping.onnx": write_mapping(root / "mapping.onnx", a, b),
             "synthesis.onnx": write_synthesis(root / "synthesis.onnx", bmat, SHAPE)}
    try:
        import openvino  # noqa: F401
    except ImportError:
        return files
    files["mapping.xml"] = to_ir(files["mapping.onnx"], root / "mapping.xml")
    files["synthesis.xml"] = to_ir(files["synthesis.onnx"], root / "synthesis.xml")
    return files


def section(body, root: Path, name="generator"):
    return Section(body, source=str(root / "exp.toml"), name=name)


def _needs(adapter):
    if adapter == "openvino":
        pytest.importorskip("openvino", reason="the openvino runtime (faces extra)")


@pytest.mark.parametrize("adapter, ext", [("onnx", "onnx"), ("openvino", "xml")])
def test_synthesis_alone_decodes_z_as_the_closed_form(nets, adapter, ext):
    _needs(adapter)
    loaded = load_generator(section({"adapter": adapter, "synthesis": f"synthesis.{ext}",
                                     "output_range": [-1, 1], "batch_size": 3}, nets["root"]))
    gen = loaded.generator
    assert gen.latent_dim == 5 and loaded.obs_shape == SHAPE and loaded.info["space"] == "z"
    z = gen.sample(7, 4)
    assert torch.equal(z, gaussian_sample(7, 5, 4))
    x = gen.decode(z).numpy()
    want = (synthesis_np(z.numpy(), nets["B"], SHAPE) + 1) / 2
    np.testing.assert_allclose(x, want, atol=2e-6)


@pytest.mark.parametrize("adapter, ext", [("onnx", "onnx"), ("openvino", "xml")])
def test_w_space_with_truncation_uses_the_mappings_mean(nets, adapter, ext):
    _needs(adapter)
    psi = 0.6
    loaded = load_generator(section({
        "adapter": adapter, "mapping": f"mapping.{ext}", "synthesis": f"synthesis.{ext}",
        "space": "w", "truncation_psi": psi, "output_range": [-1, 1], "batch_size": 4},
        nets["root"]))
    gen = loaded.generator
    a, b = nets["a"], nets["b"]
    w = gen.sample(5, 3).numpy()
    np.testing.assert_allclose(w, mapping_np(gaussian_sample(5, 6, 3).numpy(), a, b), atol=1e-5)
    w_avg = mapping_np(gaussian_sample(DEFAULT_TRUNCATION_MEAN, 6, TRUNCATION_SEED).numpy(),
                       a, b).mean(axis=0)
    want = (synthesis_np(w_avg + psi * (w - w_avg), nets["B"], SHAPE) + 1) / 2
    np.testing.assert_allclose(gen.decode(torch.from_numpy(w)).numpy(), want, atol=1e-5)
    assert loaded.info["truncation_psi"] == psi and loaded.info["mapping"] is True


@pytest.mark.parametrize("adapter, ext", [("onnx", "onnx"), ("openvino", "xml")])
def test_z_space_through_the_mapping_and_a_smaller_output(nets, adapter, ext):
    _needs(adapter)
    gen = load_generator(section({
        "adapter": adapter, "mapping": f"mapping.{ext}", "synthesis": f"synthesis.{ext}",
        "space": "z", "output_range": [-1, 1], "output_size": [4, 4]}, nets["root"])).generator
    z = gen.sample(3, 0)
    assert gen.latent_dim == 6
    full = (synthesis_np(mapping_np(z.numpy(), nets["a"], nets["b"]), nets["B"], SHAPE) + 1) / 2
    small = torch.nn.functional.interpolate(torch.from_numpy(full).float(), size=(4, 4),
                                            mode="bilinear", align_corners=False, antialias=True)
    np.testing.assert_allclose(gen.decode(z).numpy(), small.numpy(), atol=1e-5)


def test_a_network_of_fixed_batch_one_runs_row_by_row(nets):
    root = nets["root"]
    write_synthesis(root / "single.onnx", nets["B"], SHAPE, batch=1)
    gen = load_generator(section({"adapter": "onnx", "synthesis": "single.onnx",
                                  "output_range": [-1, 1], "batch_size": 8}, root)).generator
    z = gen.sample(3, 1)
    want = (synthesis_np(z.numpy(), nets["B"], SHAPE) + 1) / 2
    np.testing.assert_allclose(gen.decode(z).numpy(), want, atol=2e-6)
    assert gen.synthesis.batch == 1


def test_openvino_and_onnx_give_the_same_images(nets):
    _needs("openvino")
    body = {"mapping": "mapping.{}", "synthesis": "synthesis.{}", "truncation_psi": 0.5,
            "output_range": [-1, 1]}
    gens = [load_generator(section({"adapter": ad, **{k: v.format(ext) if isinstance(v, str)
                                                      else v for k, v in body.items()}},
                                   nets["root"])).generator
            for ad, ext in (("onnx", "onnx"), ("openvino", "xml"))]
    w = gens[0].sample(4, 9)
    np.testing.assert_allclose(gens[0].decode(w).numpy(), gens[1].decode(w).numpy(), atol=1e-5)


def _bad(nets, kind):
    root = nets["root"]
    if kind == "input3d":
        write_synthesis(root / "in3d.onnx", nets["B"], SHAPE, input_dims=["N", 1, 5])
    if kind == "flat":
        write_synthesis(root / "flat.onnx", nets["B"], (int(np.prod(SHAPE)),))
    if kind == "nan":
        write_synthesis(root / "nan.onnx", nets["B"], SHAPE, op="Log")
    if kind == "fixed3":
        write_synthesis(root / "fixed3.onnx", nets["B"], SHAPE, batch=3)


@pytest.mark.parametrize("body, prepare, error, message", [
    ({"synthesis": "missing.onnx"}, None, InputFileError,
     "[generator] synthesis = 'missing.onnx'"),
    ({"synthesis": "in3d.onnx"}, "input3d", ConfigError,
     "[generator] synthesis = 'in3d.onnx': the network's input is (?, 1, 5); expected (n, d)"),
    ({"synthesis": "flat.onnx", "output_range": [-1, 1]}, "flat", ConfigError,
     "the network's output is (n, 192); expected (n, C, H, W)"),
    ({"synthesis": "synthesis.onnx"}, None, ConfigError,
     "images must be in [0, 1] (a generator with outputs in [-1, 1] needs output_range"),
    ({"synthesis": "nan.onnx", "output_range": [-1, 1]}, "nan", ConfigError,
     "[generator] synthesis = 'nan.onnx': the network returned NaN or infinite values for"),
    ({"synthesis": "fixed3.onnx", "output_range": [-1, 1]}, "fixed3", ConfigError,
     "the network's batch is fixed at 3; export it with a dynamic batch"),
    ({"synthesis": "synthesis.onnx", "space": "w"}, None, ConfigError,
     "[generator] space = 'w': needs a mapping network"),
    ({"synthesis": "synthesis.onnx", "truncation_psi": 0.7}, None, ConfigError,
     "truncation_psi = 0.7: truncation needs the average w of a mapping network"),
    ({"synthesis": "synthesis.onnx", "mapping": "synthesis.onnx"}, None, ConfigError,
     "[generator] mapping: outputs (n, 3, 8, 8) but the synthesis network takes (n, 5)"),
    ({"synthesis": "x.onnx", "package": "no_such_package_here"}, None, ConfigError,
     "[generator] package = 'no_such_package_here': no such installed package"),
    ({"synthesis": "exported_models.py"}, None, InputFileError,
     "not an ONNX model onnxruntime can run"),
])
def test_bad_onnx_networks_are_named(nets, body, prepare, error, message):
    _bad(nets, prepare)
    if body["synthesis"] == "exported_models.py":
        (nets["root"] / "exported_models.py").write_text("not a network\n")
    with pytest.raises(error) as info:
        load_generator(section({"adapter": "onnx", **body}, nets["root"]))
    assert message in str(info.value)


def test_bad_ir_files_are_named(nets):
    _needs("openvino")
    root = nets["root"]
    _bad(nets, "input3d")
    to_ir(root / "in3d.onnx", root / "in3d.xml")
    with pytest.raises(ConfigError, match=r"synthesis = 'in3d.xml': the network's input is "
                                          r"\(\?, 1, 5\); expected \(n, d\)"):
        load_generator(section({"adapter": "openvino", "synthesis": "in3d.xml"}, root))
    (root / "lonely.xml").write_text((root / "synthesis.xml").read_text())
    with pytest.raises(InputFileError, match="the weights file lonely.bin is not next to it"):
        load_generator(section({"adapter": "openvino", "synthesis": "lonely.xml"}, root))
    with pytest.raises(InputFileError, match="no such file"):
        load_generator(section({"adapter": "openvino", "synthesis": "gone.xml"}, root))


def test_the_cli_says_one_error_line_for_a_missing_network(tmp_path):
    exp = tmp_path / "bad.toml"
    exp.write_text('[experiment]\nname = "bad"\nkind = "generator"\n[cage]\npairs = [["a", "b"]]\n'
                   'outcomes = ["latent"]\n[generator]\nadapter = "onnx"\n'
                   'synthesis = "nowhere.onnx"\n[labels]\nsource = "precomputed"\n'
                   'latents = "l.npy"\nlabels = "l.csv"\n[pairs]\nn_same_source = 0\n'
                   'n_same_destination = 0\n')
    out = tmp_path / "run"
    res = CliRunner().invoke(cli, ["--quiet", "generate", "-e", str(exp), "--out", str(out)],
                             catch_exceptions=False)
    assert res.exit_code == 1
    text = res.output.strip()
    assert text.startswith("Error: ") and "\n" not in text, text
    assert "[generator] synthesis = 'nowhere.onnx'" in text and "no such file" in text
    assert not out.exists()


def test_the_onnx_observation_classifier_matches_its_closed_form(tmp_path):
    kmat = np.array([[1.0, -2.0], [0.5, 0.0], [-1.0, 3.0]], dtype=np.float32)
    write_classifier(tmp_path / "attrs.onnx", kmat)
    psi, what = classifier_from_section(section(
        {"kind": "onnx", "path": "attrs.onnx", "columns": ["bright", "red"], "batch_size": 2},
        tmp_path, "observation_classifier"), generator_device="cpu")
    x = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    got = psi(x)
    want = 1 / (1 + np.exp(-(x.numpy().mean(axis=(2, 3)) @ kmat)))
    np.testing.assert_allclose(got["bright"], want[:, 0], atol=1e-6)
    np.testing.assert_allclose(got["red"], want[:, 1], atol=1e-6)
    assert what == "onnx attrs.onnx"
    big = torch.rand(2, 3, 16, 16)
    with pytest.raises(ConfigError, match=r"takes images \(n, 3, 8, 8\) and gets \(2, 3, 16, 16\); "
                                          r"set input_size"):
        psi(big)
    psi_sized, _ = classifier_from_section(section(
        {"kind": "onnx", "path": "attrs.onnx", "columns": ["bright", "red"],
         "input_size": [8, 8]}, tmp_path, "observation_classifier"), generator_device="cpu")
    assert psi_sized(big)["red"].shape == (2,)
    with pytest.raises(InputFileError, match=r"\[observation_classifier\] path = 'none.onnx'"):
        classifier_from_section(section({"kind": "onnx", "path": "none.onnx"}, tmp_path,
                                        "observation_classifier"), generator_device="cpu")
