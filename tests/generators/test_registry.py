"""Loading generators from ``[generator]``: factories, entry points, the reference adapters for
torch modules, zuko flows and the project's VAE, devices, and the errors that name what is wrong."""

from __future__ import annotations

from importlib import metadata

import numpy as np
import pytest
import torch
from tiny_models import make_synthesis

from cage.config.sections import Section
from cage.generators import registry
from cage.generators.device import Compute, resolve_device
from cage.generators.output import OutputLayout
from cage.generators.registry import load_generator
from cage_eval.errors import ConfigError, InputFileError

pytestmark = pytest.mark.usefixtures("one_thread")


def section(body, source="<memory>"):
    return Section(body, source=source, name="generator")


def test_a_factory_gets_the_other_keys_and_the_device():
    loaded = load_generator(section({"factory": "tiny_models:make_generator", "latent_dim": 5,
                                     "size": 8, "channels": 1, "seed": 3}))
    gen = loaded.generator
    assert gen.latent_dim == 5 and loaded.obs_shape == (1, 8, 8)
    assert loaded.info["factory"] == "tiny_models:make_generator" and loaded.info["device"] == "cpu"
    z = gen.sample(4, 0)
    assert torch.equal(z, gen.sample(4, 0)) and not torch.equal(z, gen.sample(4, 1))
    x = gen.decode(z)
    assert x.shape == (4, 1, 8, 8) and 0 <= x.min() and x.max() <= 1


@pytest.mark.parametrize("body, message", [
    ({"factory": "tiny_models:make_incomplete"},
     "[generator] factory = 'tiny_models:make_incomplete': the generator (Incomplete) has no "
     "decode; it must provide latent_dim, sample(n, seed) and decode(z)"),
    ({"factory": "tiny_models:make_unscaled"},
     "images must be in [0, 1] (a generator with outputs in [-1, 1] needs output_range = [-1, 1]"),
    ({"factory": "tiny_models:make_flat"}, "decode(z) returned shape (2, 16, 16); expected images"),
    ({"factory": "tiny_models:make_generator", "width": 3},
     "[generator] factory = 'tiny_models:make_generator': make_generator takes no option "
     "'width' (its parameters: latent_dim, "
     "size, channels, seed, device)"),
    ({"factory": "tiny_models:nothing_here"}, "module 'tiny_models' has no attribute 'nothing_here'"),
    ({"factory": "no_such_pkg.models:make"},
     "cannot import module 'no_such_pkg.models' (no module named 'no_such_pkg'); install its "
     "package or list the folder that holds it in python_path"),
    ({"factory": "tiny_models"}, "expected \"package.module:attribute\""),
    ({"adapter": "nope"}, "[generator] adapter = 'nope': no such generator adapter; choose one of "
                          "cage_vae, onnx, openvino, stylegan2_nvidia, stylegan2_rosinality, torch_module, "
                          "zuko_flow"),
    ({}, "give exactly one of factory"),
    ({"adapter": "cage_vae", "colour": 1}, "[generator] colour: unknown field"),
    ({"adapter": "cage_vae", "device": "tpu"}, "[generator] device = 'tpu': choose \"cpu\" or"),
    ({"adapter": "cage_vae", "autocast": "fp8"}, "[generator] autocast = 'fp8': choose one of"),
])
def test_bad_generators_are_named(body, message):
    with pytest.raises(ConfigError) as info:
        load_generator(section(body))
    assert message in str(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_refused():
    with pytest.raises(ConfigError, match=r"\[generator\] device = 'cuda': torch .* sees no CUDA"):
        load_generator(section({"adapter": "cage_vae", "device": "cuda"}))
    with pytest.raises(ConfigError, match="sees no CUDA GPU"):
        load_generator(section({"factory": "tiny_models:make_generator"}), device_override="cuda")


def test_autocast_is_off_on_the_cpu():
    compute = Compute(device=resolve_device("cpu", "x"), autocast="bf16")
    assert compute.autocast_dtype is None and compute.describe()["autocast"] == "off"


def test_an_entry_point_names_a_factory(monkeypatch):
    ep = metadata.EntryPoint(name="tiny", value="tiny_models:make_generator",
                             group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry.metadata, "entry_points",
                        lambda group: [ep] if group == registry.ENTRY_POINT_GROUP else [])
    loaded = load_generator(section({"adapter": "tiny", "size": 8}))
    assert loaded.obs_shape == (3, 8, 8) and loaded.info["adapter"] == "tiny"
    assert "tiny" in registry.adapter_names()


def test_torch_module_adapter_from_a_module_and_its_weights(tmp_path):
    net = make_synthesis(latent_dim=6, size=8, channels=3, seed=5)
    torch.save(net.state_dict(), tmp_path / "weights.pt")
    loaded = load_generator(section({
        "adapter": "torch_module", "synthesis": "tiny_models:TinySynthesis",
        "synthesis_options": {"latent_dim": 6, "size": 8}, "weights": "weights.pt",
        "output_range": [-1, 1], "batch_size": 3}, source=str(tmp_path / "exp.toml")))
    z = loaded.generator.sample(7, 0)
    expected = (net(z) + 1) / 2
    assert torch.allclose(loaded.generator.decode(z), expected, atol=1e-6)
    assert loaded.generator.latent_dim == 6  # from the module's latent_dim attribute
    assert loaded.info["batch_size"] == 3 and loaded.info["output_range"] == [-1.0, 1.0]


def test_torch_module_adapter_from_torchscript_channels_last_and_flat_outputs(tmp_path):
    net = make_synthesis(latent_dim=4, size=8, channels=3, seed=1)

    class FlatChannelsLast(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, z):
            return self.net(z).permute(0, 2, 3, 1).reshape(z.shape[0], -1)

    torch.jit.save(torch.jit.script(FlatChannelsLast()), str(tmp_path / "dec.pt"))
    loaded = load_generator(section({
        "adapter": "torch_module", "synthesis": "dec.pt", "latent_dim": 4,
        "output_range": [-1, 1], "channels_last": True, "image_shape": [3, 8, 8]},
        source=str(tmp_path / "exp.toml")))
    z = loaded.generator.sample(3, 2)
    assert torch.allclose(loaded.generator.decode(z), (net(z) + 1) / 2, atol=1e-6)
    with pytest.raises(InputFileError, match="not a TorchScript file"):
        (tmp_path / "bad.pt").write_bytes(b"nope")
        load_generator(section({"adapter": "torch_module", "synthesis": "bad.pt",
                                "latent_dim": 4}, source=str(tmp_path / "exp.toml")))


def test_torch_module_adapter_edits_w_of_a_mapping_network():
    mapping = torch.nn.Sequential(torch.nn.Linear(3, 6), torch.nn.Tanh())
    import tiny_models

    tiny_models.MAPPING = mapping
    tiny_models.SYNTHESIS = make_synthesis(latent_dim=6, size=8, seed=2)
    body = {"adapter": "torch_module", "synthesis": "tiny_models:SYNTHESIS",
            "mapping": "tiny_models:MAPPING",
            "latent_dim": 3, "output_range": [-1, 1], "space": "w"}
    gen_w = load_generator(section(body)).generator
    gen_z = load_generator(section({**body, "space": "z"})).generator
    assert gen_w.latent_dim == 6 and gen_z.latent_dim == 3
    w = gen_w.sample(5, 4)
    assert torch.allclose(w, mapping(gen_z.sample(5, 4)))
    assert torch.allclose(gen_w.decode(w), gen_z.decode(gen_z.sample(5, 4)), atol=1e-6)
    with pytest.raises(ConfigError, match="space = 'w': needs a mapping network"):
        load_generator(section({k: v for k, v in body.items() if k != "mapping"}))


def test_zuko_flow_adapter_saved_or_built(tmp_path):
    import zuko

    torch.manual_seed(0)
    flow = zuko.flows.MAF(features=4, transforms=2, hidden_features=(8,))
    torch.save(flow, tmp_path / "flow.pt")
    torch.save(flow.state_dict(), tmp_path / "flow_state.pt")
    saved = load_generator(section({"adapter": "zuko_flow", "path": "flow.pt"},
                                   source=str(tmp_path / "e.toml")), images=False).generator
    built = load_generator(section({
        "adapter": "zuko_flow", "flow": "zuko.flows:MAF", "weights": "flow_state.pt",
        "flow_options": {"features": 4, "transforms": 2, "hidden_features": [8]}},
        source=str(tmp_path / "e.toml")), images=False, need_encode=True).generator
    z = saved.sample(6, 1)
    assert torch.allclose(saved.decode(z), built.decode(z), atol=1e-5)
    assert torch.allclose(built.encode(built.decode(z)), z, atol=1e-4)
    # A flow over 2x2 "images" in [-1, 1]: decode maps to [0, 1], encode inverts it.
    img = load_generator(section({"adapter": "zuko_flow", "path": "flow.pt",
                                  "image_shape": [1, 2, 2], "output_range": [-8, 8]},
                                 source=str(tmp_path / "e.toml")), need_encode=True).generator
    x = img.decode(z)
    assert x.shape == (6, 1, 2, 2)
    assert torch.allclose(img.encode(x), z, atol=1e-4)


def test_cage_vae_adapter_matches_the_digits_generator():
    from cage.generators.vae import VAEGenerator

    loaded = load_generator(section({"adapter": "cage_vae", "batch_size": 5}), need_encode=True)
    gen = loaded.generator
    assert loaded.obs_shape == (1, 28, 28) and gen.latent_dim == 16
    ref = VAEGenerator(gen.model)
    z = gen.sample(11, 0)
    assert torch.allclose(gen.decode(z), ref.decode(z), atol=1e-6)
    x = gen.decode(z)
    assert torch.allclose(gen.encode(x), ref.encode(x), atol=1e-5)


def test_layout_round_trips():
    layout = OutputLayout(value_range=(-1.0, 1.0), channels_last=True, shape=(3, 4, 5))
    raw = torch.rand(2, 60) * 2 - 1
    images = layout.to_protocol(raw)
    assert images.shape == (2, 3, 4, 5)
    assert torch.allclose(layout.from_protocol(images), raw, atol=1e-6)
    assert np.isclose(float(images.min()), (float(raw.min()) + 1) / 2)
