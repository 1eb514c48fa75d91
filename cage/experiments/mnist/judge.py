"""The Morpho-MNIST measurements as an observation-space outcome (paper eq. 9).

A CNN ``psi`` learns whatever separates the labels in the training images; where thickness and
intensity go together (``thick`` equals ``bright`` for most images) it cannot tell which of them it
is reading. The measurements can: the Morpho-MNIST thickness of a decoded image sees strokes and
nothing else, the DeepSCM intensity sees grey level and nothing else.

Each attribute gets a *link*, a one-dimensional logistic regression of its label on one measured
value of the real images, ``P(attr = 1 | m) = sigmoid(slope * (m - centre))``:

=========  =========================================  =============================
attribute  measured value                             label it is calibrated on
=========  =========================================  =============================
thick      Morpho-MNIST thickness (pixels)            sampled ``t`` above its quantile
bright     DeepSCM intensity (0..255)                 sampled ``i`` above its quantile
slanted    slant (radians)                            measured slant above its median
wide       width (pixels)                             measured width above its median
=========  =========================================  =============================

``centre`` is where the link crosses 1/2 (close to the label threshold expressed in the measured
value) and ``slope`` how sharply; both come from the fit, so the probability reflects how well the
measurement predicts the label on real data (thickness is measured with error, intensity almost
exactly). The judge applies the links to the measurements of decoded images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from cage.experiments.digits import morpho

#: Which measured value each attribute's link reads (``cage.experiments.digits.morpho.Morphometrics`` field).
MEASURE_OF = {"thick": "thickness", "bright": "intensity", "slanted": "slant", "wide": "width"}


@dataclass(frozen=True)
class Link:
    """``P(attr = 1 | m) = sigmoid(slope * (m - centre))`` on the measured value ``measure``."""

    attribute: str
    measure: str
    slope: float
    centre: float
    accuracy: float

    def probability(self, m: np.ndarray) -> np.ndarray:
        z = np.clip(self.slope * (np.asarray(m, dtype=np.float64) - self.centre), -50.0, 50.0)
        return 1.0 / (1.0 + np.exp(-z))


def fit_link(attribute: str, measured: np.ndarray, labels: np.ndarray, *,
             test_fraction: float = 0.2, seed: int = 0) -> Link:
    """Fit one link by (nearly unpenalised) logistic regression; accuracy on a held-out split.

    Parameters
    ----------
    measured : np.ndarray, shape (n,)
        The measured value (``MEASURE_OF[attribute]``) of the real images.
    labels : np.ndarray, shape (n,)
        0/1 labels.
    """
    from sklearn.linear_model import LogisticRegression

    m = np.asarray(measured, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64)
    order = np.random.default_rng(seed).permutation(m.size)
    n_test = int(round(m.size * test_fraction))
    test, train = order[:n_test], order[n_test:]
    mu, sd = float(m[train].mean()), float(m[train].std()) or 1.0
    clf = LogisticRegression(C=1e4).fit(((m[train] - mu) / sd)[:, None], y[train])
    a, b = float(clf.coef_[0, 0]), float(clf.intercept_[0])
    slope = a / sd
    centre = mu - b * sd / a if a != 0 else mu
    link = Link(attribute, MEASURE_OF[attribute], slope, centre, float("nan"))
    acc = float(((link.probability(m[test]) > 0.5) == (y[test] == 1)).mean()) if n_test else 1.0
    return Link(attribute, MEASURE_OF[attribute], slope, centre, acc)


def measure_images(images: np.ndarray, names: Sequence[str], *, scale: int = morpho.SCALE
                   ) -> dict[str, np.ndarray]:
    """Measured values ``names`` (``Morphometrics`` fields) of images in [0, 1], shape (n, 28, 28);
    intensity is returned in 0..255 units as DeepSCM's."""
    out = {name: np.empty(len(images)) for name in names}
    only_fast = set(names) <= {"thickness", "intensity"}
    for k, image in enumerate(np.asarray(images, dtype=np.float64) * 255.0):
        if only_fast:
            values = {"thickness": morpho.thickness(image, scale=scale) if "thickness" in out
                      else 0.0, "intensity": morpho.intensity(image)}
        else:
            values = asdict(morpho.measure(image, scale=scale))
        for name in names:
            out[name][k] = values[name]
    return out


class MorphometricJudge:
    """``psi`` from measurements: images ``(n, 1, 28, 28)`` in [0, 1] -> ``{attr: P(attr = 1)}``.

    Decoded images are quantised to 8 bits first (as a saved image would be).

    Parameters
    ----------
    links : sequence of Link
    scale : int
        Morpho-MNIST upsampling factor of the measurements.
    """

    def __init__(self, links: Sequence[Link], scale: int = morpho.SCALE) -> None:
        self.links = {link.attribute: link for link in links}
        self.attributes = tuple(self.links)
        self.scale = scale

    def __call__(self, x: torch.Tensor) -> dict[str, np.ndarray]:
        images = torch.as_tensor(x).detach().to("cpu", torch.float32).numpy()
        images = np.round(np.clip(images[:, 0], 0.0, 1.0) * 255.0) / 255.0
        names = sorted({link.measure for link in self.links.values()})
        measured = measure_images(images, names, scale=self.scale)
        return {a: link.probability(measured[link.measure]) for a, link in self.links.items()}

    def to_dict(self) -> dict[str, Any]:
        return {a: asdict(link) for a, link in self.links.items()}
