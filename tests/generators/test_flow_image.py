"""The 784-d multiscale Glow: exact invertibility, log-determinants, the generator protocol, training
determinism, and the shipped weights."""

import hashlib
import json

import numpy as np
import pytest
import torch

from cage.config.experiment import load_experiment
from cage.experiments.mnist import data as mnist
from cage.experiments.mnist.kind import parse_options
from cage.experiments.mnist.models import MorphoModelConfigs, shipped_dir
from cage.generators.base import EncodingGenerator, check_generator
from cage.generators.flow_image import (
    GlowConfig,
    GlowGenerator,
    from_flow_space,
    glow_from_bytes,
    state_to_bytes,
    to_flow_space,
    train_glow,
)

TINY = GlowConfig(blocks=2, hidden=8, steps=3, batch_size=8, warmup=1, test_fraction=0.2)


@pytest.fixture(scope="module")
def images():
    data = mnist.build(mnist.MorphoMNISTConfig(n_digits=20, draws=1))
    return data.images


@pytest.fixture(scope="module")
def trained(images):
    # A few steps: ActNorm is initialised from data and the couplings are no longer the identity.
    flow, report = train_glow(images, TINY)
    return GlowGenerator(flow), report


def test_generator_protocol_and_shapes(trained):
    gen, report = trained
    assert isinstance(gen, EncodingGenerator) and gen.latent_dim == 784
    assert gen.shapes == [(8, 7, 7), (2, 14, 14)]
    assert check_generator(gen, "test", need_encode=True, images=True) == (1, 28, 28)
    z = gen.sample(5, 3)
    assert z.shape == (5, 784) and torch.equal(z, gen.sample(5, 3))
    assert np.isfinite(report.test_bpd) and report.steps == 3 and report.n_test == 4
    hot = GlowGenerator(gen.flow, temperature=0.5)
    assert torch.allclose(hot.sample(5, 3), 0.5 * z)


def test_encode_decode_are_exact_inverses(trained, images):
    gen, _ = trained
    z = gen.sample(16, 0)
    y, _ = gen.decode_with_log_det(z)
    with torch.no_grad():
        zs, _ = gen.flow.inverse_and_log_det(y)
    assert torch.allclose(gen.join(zs), z, atol=1e-4)
    x = torch.as_tensor(images[:8, None] / 255.0, dtype=torch.float32)
    back = gen.decode(gen.encode(x))
    assert torch.allclose(back, x, atol=1e-4)
    assert torch.equal(torch.round(back * 255), torch.as_tensor(images[:8, None]).float())
    assert torch.allclose(from_flow_space(to_flow_space(x)), x, atol=1e-6)


def test_log_determinants_agree_with_each_other_and_with_autograd(trained):
    gen, _ = trained
    z = gen.sample(3, 1)
    with torch.no_grad():
        y, ld_fwd = gen.decode_with_log_det(z)
        _, ld_inv = gen.flow.inverse_and_log_det(y)
    assert torch.allclose(ld_fwd, -ld_inv, atol=1e-2, rtol=1e-5)
    # Brute force for one latent: log |det dy/dz| from the full 784 x 784 Jacobian.
    jac = torch.autograd.functional.jacobian(
        lambda v: gen.flow.forward_and_log_det(gen.split(v[None]))[0].reshape(-1), z[0])
    sign, logabs = torch.linalg.slogdet(jac.double())
    assert sign != 0
    assert float(logabs) == pytest.approx(float(ld_fwd[0]), rel=1e-3, abs=0.05)


def test_training_is_deterministic(images):
    a, ra = train_glow(images, TINY)
    b, rb = train_glow(images, TINY)
    assert state_to_bytes(a) == state_to_bytes(b) and ra.losses == rb.losses
    c = glow_from_bytes(state_to_bytes(a), TINY)
    z = torch.randn(2, 784, generator=torch.Generator().manual_seed(0))
    assert torch.equal(GlowGenerator(a).decode(z), GlowGenerator(c).decode(z))


@pytest.mark.parametrize("experiment", ["morphomnist", "morphomnist_loose"])
def test_shipped_weights_match_the_builtin_configs_and_their_checksums(experiment):
    configs: MorphoModelConfigs = parse_options(load_experiment(experiment)).models
    stem = configs.file_stem("flow")
    meta = json.loads((shipped_dir() / f"{stem}.json").read_text())
    blob = (shipped_dir() / f"{stem}.pt").read_bytes()
    assert hashlib.sha256(blob).hexdigest() == meta["sha256"]
    assert meta["key"] == configs.flow_key() and meta["flow"] == configs.flow.to_dict()
    assert meta["report"]["test_bpd"] < 3.0 and len(blob) < 10 * 2**20
    gen = GlowGenerator(glow_from_bytes(blob, configs.flow))  # weights_only=True inside
    x = gen.decode(gen.sample(4, 0))
    assert x.shape == (4, 1, 28, 28) and 0 <= float(x.min()) and float(x.max()) <= 1
    obs = json.loads((shipped_dir() / f"{configs.file_stem('obs')}.json").read_text())
    obs_blob = (shipped_dir() / f"{configs.file_stem('obs')}.pt").read_bytes()
    assert hashlib.sha256(obs_blob).hexdigest() == obs["sha256"]
    assert min(obs["report"]["accuracy"][a] for a in ("thick", "bright")) > 0.8


def test_non_finite_decodes_become_background_and_are_counted(trained, monkeypatch):
    gen = GlowGenerator(trained[0].flow)
    z = gen.sample(4, 2)
    y, ld = gen.decode_with_log_det(z)
    y[1, 0, 3:9, 3:9] = float("nan")
    monkeypatch.setattr(gen, "decode_with_log_det", lambda _z: (y.clone(), ld))
    x = gen.decode(z)
    assert torch.isfinite(x).all() and gen.nonfinite_rows == 1
    assert float(x[1, 0, 3:9, 3:9].abs().max()) == 0.0
    assert torch.equal(x[0], from_flow_space(y[0]))
