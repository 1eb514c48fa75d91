"""Observation-space attribute classifiers ``psi`` on 28x28 images (paper eq. 9).

One small CNN with a sigmoid output per attribute. It is trained on the real images *and* on their
VAE reconstructions (same labels), so that it is calibrated on what the generator actually draws;
otherwise blurry decoded digits would be judged by a classifier that never saw one. Held-out
accuracy is reported on both kinds of input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from cage.compute.runtime import deterministic_torch, torch_threads
from cage_eval import progress


@dataclass(frozen=True)
class ObsClassifierConfig:
    """Training hyperparameters of the observation-space classifier."""

    epochs: int = 8
    batch_size: int = 128
    lr: float = 2e-3
    test_fraction: float = 0.2
    seed: int = 0
    max_steps: int | None = None


class AttributeCNN(nn.Module):
    """Two stride-2 convolutions, one hidden layer, one logit per attribute (cheap next to the
    decoder, so checking every counterfactual costs little)."""

    def __init__(self, n_attributes: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(16 * 7 * 7, 32), nn.ReLU(), nn.Linear(32, n_attributes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@dataclass
class ObsReport:
    """Held-out accuracy per attribute on real images and on reconstructions."""

    accuracy_real: dict[str, float] = field(default_factory=dict)
    accuracy_recon: dict[str, float] = field(default_factory=dict)
    steps: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy_real": self.accuracy_real, "accuracy_recon": self.accuracy_recon,
                "steps": self.steps}


class ObservationClassifier:
    """``psi``: images ``(n, 1, 28, 28)`` in [0, 1] -> ``{attribute: P(attribute = 1)}``, on
    ``threads`` torch threads (default 1, as :class:`cage.generators.vae.VAEGenerator`).

    Parameters
    ----------
    model : AttributeCNN
    attributes : sequence of str
        Attribute names, in the order of the model's outputs.
    """

    def __init__(self, model: AttributeCNN, attributes: Sequence[str], batch_size: int = 1024,
                 threads: int | None = 1):
        self.model = model.eval()
        self.attributes = tuple(attributes)
        self.batch_size = batch_size
        self.threads = threads

    @torch.no_grad()
    def probabilities(self, x: torch.Tensor) -> np.ndarray:
        """``P(attribute = 1)``, shape ``(n, n_attributes)``, float64."""
        x = torch.as_tensor(x, dtype=torch.float32)
        with torch_threads(self.threads):
            parts = [torch.sigmoid(self.model(x[s:s + self.batch_size]))
                     for s in range(0, x.shape[0], self.batch_size)]
        if not parts:
            return np.empty((0, len(self.attributes)))
        return torch.cat(parts).double().numpy()

    def __call__(self, x: torch.Tensor) -> dict[str, np.ndarray]:
        p = self.probabilities(x)
        return {name: p[:, j] for j, name in enumerate(self.attributes)}


def split_indices(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded train / test split of ``range(n)``."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def held_out_accuracy(clf: ObservationClassifier, images: np.ndarray, labels: dict[str, np.ndarray],
                      config: ObsClassifierConfig) -> dict[str, float]:
    """``clf``'s accuracy per attribute on the held-out split :func:`train_obs_classifier` draws
    for ``config``: ``images`` are all ``(n, 1, 28, 28)`` images (real or reconstructed), only
    the held-out ones are classified."""
    _, test = split_indices(len(images), config.test_fraction, config.seed)
    y = np.stack([np.asarray(labels[a], dtype=np.float32) for a in clf.attributes], axis=1)[test]
    pred = clf.probabilities(torch.as_tensor(images[test])) > 0.5
    acc = (pred == (y > 0.5)).mean(axis=0) if len(test) else np.zeros(len(clf.attributes))
    return {a: float(acc[j]) for j, a in enumerate(clf.attributes)}


def agrees(recorded: Any, computed: dict[str, float], n_test: int) -> bool:
    """Whether accuracies ``recorded`` (from a side file) agree with ``computed`` to within one
    held-out image (another machine may round a borderline image the other way)."""
    tolerance = 1.5 / max(n_test, 1)
    return isinstance(recorded, dict) and set(recorded) == set(computed) and all(
        isinstance(recorded[a], (int, float)) and abs(float(recorded[a]) - v) <= tolerance
        for a, v in computed.items())


def train_obs_classifier(
    images: np.ndarray,
    reconstructions: np.ndarray,
    labels: dict[str, np.ndarray],
    config: ObsClassifierConfig,
) -> tuple[ObservationClassifier, ObsReport]:
    """Train :class:`AttributeCNN` on real images and reconstructions with binary cross-entropy.

    Parameters
    ----------
    images, reconstructions : np.ndarray, shape (n, 1, 28, 28), float32 in [0, 1]
    labels : dict[str, np.ndarray]
        0/1 labels, shape ``(n,)`` each.
    """
    names = tuple(labels)
    y_all = np.stack([np.asarray(labels[a], dtype=np.float32) for a in names], axis=1)
    train, test = split_indices(len(images), config.test_fraction, config.seed)
    x_train = torch.as_tensor(np.concatenate([images[train], reconstructions[train]]))
    y_train = torch.as_tensor(np.concatenate([y_all[train], y_all[train]]))
    report = ObsReport()
    with deterministic_torch(), progress.bar(None, "training the observation classifier",
                                             "step") as bar:
        torch.manual_seed(config.seed)
        gen = torch.Generator().manual_seed(config.seed + 1)
        model = AttributeCNN(len(names))
        opt = torch.optim.Adam(model.parameters(), lr=config.lr)
        n = x_train.shape[0]
        total = config.epochs * -(-n // config.batch_size)
        if config.max_steps is not None:
            total = min(total, config.max_steps)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=total)
        model.train()
        while report.steps < total:
            order = torch.randperm(n, generator=gen)
            for start in range(0, n, config.batch_size):
                if report.steps >= total:
                    break
                idx = order[start:start + config.batch_size]
                loss = F.binary_cross_entropy_with_logits(model(x_train[idx]), y_train[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                report.steps += 1
                bar.update(1)
        clf = ObservationClassifier(model, names)
        for key, x in (("real", images[test]), ("recon", reconstructions[test])):
            pred = clf.probabilities(torch.as_tensor(x)) > 0.5
            acc = (pred == (y_all[test] > 0.5)).mean(axis=0)
            target = report.accuracy_real if key == "real" else report.accuracy_recon
            target.update({a: float(acc[j]) for j, a in enumerate(names)})
    return clf, report
