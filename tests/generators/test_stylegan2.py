"""The StyleGAN adapters on stand-in clones laid out like NVIDIA's and rosinality's repositories:
loading through sys.path, the z / w / w+ spaces, deterministic decoding, truncation, and the
errors a user meets (no clone given, a folder that is not a clone, a CUDA op that cannot build)."""

from __future__ import annotations

import sys

import pytest
import torch
from generator_fixtures import (
    pickle_nvlabs_generator,
    save_rosinality_checkpoint,
    write_nvlabs_clone,
    write_rosinality_clone,
)

from cage.config.sections import Section
from cage.generators.registry import load_generator
from cage.generators.stylegan2_nvidia import NVlabsGenerator
from cage_eval.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def nvlabs(tmp_path_factory):
    root = tmp_path_factory.mktemp("nv")
    clone = write_nvlabs_clone(root / "stylegan2-ada-pytorch")
    return clone, pickle_nvlabs_generator(clone, root / "network-snapshot.pkl", seed=0)


def nv(clone, pkl, **options):
    body = {"adapter": "stylegan2_nvidia", "pickle": str(pkl), "repo_path": str(clone), **options}
    return load_generator(Section(body, source="<memory>", name="generator"))


def _clone_modules():
    return sorted(m for m in sys.modules if m.split(".")[0] in ("dnnlib", "torch_utils", "training"))


def test_the_pickle_loads_through_the_clone_and_leaves_sys_path_as_it_was(nvlabs):
    clone, pkl = nvlabs
    path_before, modules_before = list(sys.path), _clone_modules()
    loaded = nv(clone, pkl)
    assert sys.path == path_before and _clone_modules() == modules_before == []
    gen = loaded.generator
    assert isinstance(gen, NVlabsGenerator) and loaded.obs_shape == (3, 16, 16)
    assert loaded.info["space"] == "w" and loaded.info["noise_mode"] == "const"
    # The unpickled network still runs after its modules left sys.modules.
    assert gen.decode(gen.sample(2, 0)).shape == (2, 3, 16, 16)


@pytest.mark.parametrize("space, dim", [("z", 6), ("w", 5), ("w+", 15)])
def test_each_space_decodes_deterministically(nvlabs, space, dim):
    clone, pkl = nvlabs
    gen = nv(clone, pkl, space=space, truncation_psi=0.8).generator
    z = gen.sample(5, 7)
    assert z.shape == (5, dim) and torch.equal(z, gen.sample(5, 7))
    a, b = gen.decode(z), gen.decode(z)
    assert torch.equal(a, b) and a.shape == (5, 3, 16, 16)
    assert 0.0 <= float(a.min()) and float(a.max()) <= 1.0
    # Decoding does not depend on how the rows are batched.
    small = nv(clone, pkl, space=space, truncation_psi=0.8, batch_size=2).generator
    assert torch.allclose(small.decode(z), a, atol=1e-6)


def test_the_three_spaces_agree_on_the_same_prior_draws(nvlabs):
    clone, pkl = nvlabs
    images = {s: (g := nv(clone, pkl, space=s).generator).decode(g.sample(4, 3))
              for s in ("z", "w", "w+")}
    assert torch.allclose(images["z"], images["w"], atol=1e-6)
    assert torch.allclose(images["w"], images["w+"], atol=1e-6)


def test_random_noise_is_what_const_noise_prevents(nvlabs):
    clone, pkl = nvlabs
    gen = nv(clone, pkl).generator
    ws = gen.to_ws(gen.sample(2, 0))
    with torch.no_grad():
        r1 = gen.G.synthesis(ws, noise_mode="random", force_fp32=True)
        r2 = gen.G.synthesis(ws, noise_mode="random", force_fp32=True)
    assert not torch.equal(r1, r2)


def test_truncation(nvlabs):
    clone, pkl = nvlabs
    zero = nv(clone, pkl, truncation_psi=0.0).generator
    w_avg = zero.w_avg
    with torch.no_grad():
        avg_image = (zero.G.synthesis(w_avg.expand(1, zero.num_ws, -1), noise_mode="const",
                                      force_fp32=True) + 1).div(2).clamp(0, 1)
    images = zero.decode(zero.sample(4, 0))
    for img in images:  # psi = 0: every latent decodes to w_avg's image
        assert torch.allclose(img, avg_image[0], atol=1e-6)
    half = nv(clone, pkl, truncation_psi=0.5).generator
    w = half.sample(3, 1)
    plain = nv(clone, pkl).generator
    assert torch.allclose(half.decode(w), plain.decode(w_avg + 0.5 * (w - w_avg)), atol=1e-6)
    # The cutoff truncates the first layers only; the prior itself is never truncated.
    cut = nv(clone, pkl, truncation_psi=0.0, truncation_cutoff=1).generator
    assert torch.equal(cut.sample(3, 1), w)
    ws = cut.truncate(cut.to_ws(w))
    assert torch.allclose(ws[:, 0], w_avg.expand(3, -1)) and torch.equal(ws[:, 1:], cut.to_ws(w)[:, 1:])
    # NVIDIA's own truncation in mapping() gives the same per-layer ws.
    z = nv(clone, pkl, space="z").generator.sample(3, 2)
    zgen = nv(clone, pkl, space="z", truncation_psi=0.6, truncation_cutoff=2).generator
    with torch.no_grad():
        theirs = zgen.G.mapping(z, torch.zeros(3, 0), truncation_psi=0.6, truncation_cutoff=2)
    assert torch.allclose(zgen.truncate(zgen.to_ws(z)), theirs, atol=1e-6)


def test_renormalised_z_lies_on_the_sphere_and_decodes_the_same(nvlabs):
    clone, pkl = nvlabs
    plain = nv(clone, pkl, space="z").generator
    renorm = nv(clone, pkl, space="z", renormalize_z=True).generator
    z = renorm.sample(4, 0)
    assert torch.allclose(z.norm(dim=1), torch.full((4,), 6 ** 0.5), atol=1e-5)
    assert torch.allclose(renorm.decode(3 * z), plain.decode(z), atol=1e-6)


def test_legacy_loader_of_the_clone(nvlabs):
    clone, pkl = nvlabs
    assert nv(clone, pkl, legacy=True).generator.latent_dim == 5


def test_a_pickle_without_its_code_names_the_path_to_add(nvlabs, tmp_path):
    clone, pkl = nvlabs
    with pytest.raises(ConfigError) as info:
        load_generator(Section({"adapter": "stylegan2_nvidia", "pickle": str(pkl)},
                               source="exp.toml", name="generator"))
    assert ("unpickling needs module 'torch_utils', NVIDIA's code, which cage-eval does not "
            "ship; set [generator] repo_path to your clone") in str(info.value)
    not_a_clone = tmp_path / "elsewhere"
    not_a_clone.mkdir()
    with pytest.raises(ConfigError, match="no dnnlib/ or torch_utils/ in it; point repo_path at"):
        nv(not_a_clone, pkl)
    with pytest.raises(ConfigError, match="has no entry 'G_smooth'"):
        nv(clone, pkl, network="G_smooth")


def test_conditional_networks_need_a_class(tmp_path):
    clone = write_nvlabs_clone(tmp_path / "clone")
    pkl = pickle_nvlabs_generator(clone, tmp_path / "cond.pkl", c_dim=3)
    with pytest.raises(ConfigError, match="c_dim = 3\\), give the class to generate \\(0 .. 2\\)"):
        nv(clone, pkl)
    a = nv(clone, pkl, class_index=0, space="z").generator
    b = nv(clone, pkl, class_index=2, space="z").generator
    z = a.sample(2, 0)  # the class enters through the mapping network
    assert not torch.allclose(a.decode(z), b.decode(z))
    with pytest.raises(ConfigError, match="has 3 classes"):
        nv(clone, pkl, class_index=3)


@pytest.fixture(scope="module")
def rosinality(tmp_path_factory):
    root = tmp_path_factory.mktemp("ros")
    clone = write_rosinality_clone(root / "stylegan2-pytorch")
    return clone, save_rosinality_checkpoint(clone, root / "550000.pt"), root


def ros(clone, ckpt, **options):
    body = {"adapter": "stylegan2_rosinality", "checkpoint": str(ckpt), "repo_path": str(clone),
            **options}
    return load_generator(Section(body, source="<memory>", name="generator"))


@pytest.mark.parametrize("space, dim", [("z", 6), ("w", 6), ("w+", 36)])
def test_rosinality_spaces_decode_deterministically(rosinality, space, dim):
    clone, ckpt, _ = rosinality
    modules = sorted(m for m in sys.modules if m.split(".")[0] in ("model", "op"))
    gen = ros(clone, ckpt, space=space, truncation_psi=0.7, truncation_cutoff=3).generator
    assert sorted(m for m in sys.modules if m.split(".")[0] in ("model", "op")) == modules == []
    z = gen.sample(4, 1)
    assert z.shape == (4, dim)
    assert torch.equal(gen.decode(z), gen.decode(z))


def test_rosinality_truncation_centre_comes_from_the_checkpoint_or_the_prior(rosinality):
    clone, ckpt, root = rosinality
    with_avg = save_rosinality_checkpoint(clone, root / "converted.pt", latent_avg=True)
    gen = ros(clone, with_avg, truncation_psi=0.0).generator
    assert torch.equal(gen.latent_avg, torch.full((6,), 0.25))
    images = gen.decode(gen.sample(3, 0))
    assert torch.allclose(images[0], images[2])
    computed = ros(clone, ckpt, truncation_mean=512).generator
    w = computed.g.style(torch.randn(2048, 6, generator=torch.Generator().manual_seed(5))).mean(0)
    assert torch.allclose(computed.latent_avg, w, atol=0.1)


def test_rosinality_op_that_cannot_build_is_explained(rosinality, tmp_path):
    _, ckpt, _ = rosinality
    broken = write_rosinality_clone(tmp_path / "stylegan2-pytorch", broken_op=True)
    with pytest.raises(ConfigError) as info:
        ros(broken, ckpt)
    message = str(info.value)
    assert "importing its model.py failed (RuntimeError: Error building extension 'fused'" in message
    assert "compiles its CUDA kernels" in message and "nvcc" in message
