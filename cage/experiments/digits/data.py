"""The built-in thickness -> intensity digits: a Morpho-MNIST-style dataset made offline.

MNIST cannot be downloaded here, so the digits come from scikit-learn's bundled ``load_digits``
(1,797 images, 8x8, values 0..16), upsampled bicubically to 20x20 and padded to 28x28 as MNIST is.
Each digit is drawn ``draws`` times with the DeepSCM thickness -> intensity mechanism (Pawlowski et
al. 2020, ``create_synth_thickness_intensity_data.py``):

* thickness ``t = 0.5 + Gamma(concentration=10, rate=5)``;
* intensity ``i = 64 + 191 * sigmoid(2 * (t - 2.5) + 0.5 * eps)``, ``eps ~ N(0, 1)``;
* the digit is set to thickness ``t`` (:func:`cage.experiments.digits.morpho.set_thickness`) and rescaled so that the
  median foreground value equals ``i`` (out of 255).

Binary attributes (``ATTRIBUTES``): ``thick`` = ``t`` above its median, ``bright`` = ``i`` above its
median (the sampled causal variables, as DeepSCM saves them); ``slanted`` and ``wide`` = measured
slant / width of the final image above their medians; ``round`` = the digit class is 0, 6, 8 or 9.
The causal graph of the data is ``thick -> bright``; class and style are exogenous.

The build is seeded and cached as ``digits-<key>.npz`` in a cache directory. A cache file is read
without pickles (``allow_pickle=False``) and checked; one that cannot be read or does not hold
what the build makes is rebuilt after a :class:`cage_eval.errors.CacheWarning`.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cage.experiments.digits import morpho
from cage_eval import progress
from cage_eval.cache import check_cache_path
from cage_eval.errors import CacheWarning, RunDirError
from cage_eval.files import atomic_write_bytes, content_key

ATTRIBUTES = ("thick", "bright", "slanted", "wide", "round")
ROUND_DIGITS = (0, 6, 8, 9)
IMAGE_SIZE = 28
#: Bump when the construction changes, so stale caches are not reused.
DATASET_VERSION = 1


@dataclass(frozen=True)
class DigitsConfig:
    """How the dataset is built.

    Attributes
    ----------
    draws : int
        Thickness draws per source digit.
    n_digits : int or None
        Use only the first ``n_digits`` of the 1,797 (None: all).
    seed : int
        Seed of the thickness / intensity draws.
    scale : int
        Morpho-MNIST upsampling factor.
    """

    draws: int = 3
    n_digits: int | None = None
    seed: int = 0
    scale: int = morpho.SCALE

    def key(self) -> str:
        """A short hash of the configuration and dataset version (the cache key)."""
        return content_key({**asdict(self), "version": DATASET_VERSION})


@dataclass(frozen=True)
class DigitsDataset:
    """The annotated images.

    Attributes
    ----------
    images : np.ndarray, shape (n, 28, 28), uint8
    labels : np.ndarray, shape (n,), int64  -- digit class
    source : np.ndarray, shape (n,), int64  -- index into ``load_digits``
    thickness, intensity : np.ndarray, shape (n,)  -- sampled t (pixels) and i (0..255)
    measured : dict[str, np.ndarray]  -- morphometrics of the final images
    attributes : dict[str, np.ndarray]  -- binary 0/1 int64 labels, keys ``ATTRIBUTES``
    """

    images: np.ndarray
    labels: np.ndarray
    source: np.ndarray
    thickness: np.ndarray
    intensity: np.ndarray
    measured: dict[str, np.ndarray]
    attributes: dict[str, np.ndarray]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def float_images(self) -> np.ndarray:
        """Images as float32 in [0, 1], shape (n, 1, 28, 28)."""
        return (self.images.astype(np.float32) / 255.0)[:, None]


def base_digits(n_digits: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as 28x28 float images in [0, 1] (20x20 bicubic, 4-pixel border).

    Returns
    -------
    images : np.ndarray, shape (n, 28, 28), float64
    labels : np.ndarray, shape (n,), int64
    """
    from skimage.transform import resize
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images, labels = bunch.images, bunch.target.astype(np.int64)
    if n_digits is not None:
        images, labels = images[:n_digits], labels[:n_digits]
    out = np.empty((len(images), IMAGE_SIZE, IMAGE_SIZE))
    for n, image in enumerate(images):
        small = resize(image / 16.0, (20, 20), order=3, mode="edge", anti_aliasing=False)
        out[n] = np.pad(np.clip(small, 0.0, 1.0), 4)
    return out, labels


def sample_thickness_intensity(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """DeepSCM's mechanism: ``t = 0.5 + Gamma(10, rate 5)``,
    ``i = 64 + 191 sigmoid(2 (t - 2.5) + 0.5 eps)``; returns ``(t, i)``, shape ``(n,)`` each."""
    t = 0.5 + rng.gamma(shape=10.0, scale=1.0 / 5.0, size=n)
    loc = 2.0 * (t - 2.5)
    i = 64.0 + 191.0 / (1.0 + np.exp(-(loc + 0.5 * rng.standard_normal(n))))
    return t, i


def build(config: DigitsConfig) -> DigitsDataset:
    """Build the dataset (deterministic in ``config``); a full build takes about a minute."""
    base, base_labels = base_digits(config.n_digits)
    rng = np.random.default_rng(config.seed)
    n = len(base) * config.draws
    source = np.repeat(np.arange(len(base)), config.draws)
    t, i = sample_thickness_intensity(n, rng)
    current = [morpho.thickness(image, scale=config.scale) for image in base]
    images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    fields = ("thickness", "area", "slant", "width", "height", "intensity")
    measured = {name: np.empty(n) for name in fields}
    with progress.bar(n, "building the digits data set", "image") as bar:
        for k in range(n):
            s = source[k]
            shaped = morpho.set_thickness(base[s], t[k], scale=config.scale, current=current[s])
            fg = shaped[morpho.binarise(shaped)]
            avg = float(np.median(fg)) if fg.size else 1.0
            scaled = np.clip(shaped * 255.0 * (i[k] / 255.0) / max(avg, 1e-6), 0.0, 255.0)
            images[k] = np.round(scaled).astype(np.uint8)
            metrics = morpho.measure(images[k].astype(np.float64), scale=config.scale)
            for name in fields:
                measured[name][k] = getattr(metrics, name)
            bar.update(1)
    labels = base_labels[source]
    return DigitsDataset(
        images=images,
        labels=labels,
        source=source,
        thickness=t,
        intensity=i,
        measured=measured,
        attributes=annotate(t, i, measured, labels),
    )


def annotate(t: np.ndarray, i: np.ndarray, measured: dict[str, np.ndarray],
             labels: np.ndarray) -> dict[str, np.ndarray]:
    """Binary attributes (see module docstring): median splits and the ``round`` class set."""

    def above_median(v: np.ndarray) -> np.ndarray:
        return (v > np.median(v)).astype(np.int64)

    return {
        "thick": above_median(t),
        "bright": above_median(i),
        "slanted": above_median(measured["slant"]),
        "wide": above_median(measured["width"]),
        "round": np.isin(labels, ROUND_DIGITS).astype(np.int64),
    }


#: The morphometrics :func:`build` stores (``m_<name>`` in the cache file).
MEASURED = ("thickness", "area", "slant", "width", "height", "intensity")
N_BASE_DIGITS = 1797


def _expected_size(config: DigitsConfig) -> int:
    return min(config.n_digits or N_BASE_DIGITS, N_BASE_DIGITS) * config.draws


def _from_npz(path: Path, n: int) -> DigitsDataset:
    """The dataset in a cache file, checked; ValueError (or an I/O error) when it is not one."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    want = {"images", "labels", "source", "thickness", "intensity",
            *(f"m_{k}" for k in MEASURED), *(f"a_{k}" for k in ATTRIBUTES)}
    if set(arrays) != want:
        raise ValueError("unexpected arrays")
    if arrays["images"].shape != (n, IMAGE_SIZE, IMAGE_SIZE) or arrays["images"].dtype != np.uint8:
        raise ValueError(f"images of shape {arrays['images'].shape}, not ({n}, 28, 28) uint8")
    for key, value in arrays.items():
        if key != "images" and (value.shape != (n,) or value.dtype.kind not in "iuf"
                                or not np.isfinite(value).all()):
            raise ValueError(f"array {key} is not {n} finite numbers")
    for a in ATTRIBUTES:
        if not np.isin(arrays[f"a_{a}"], (0, 1)).all():
            raise ValueError(f"attribute {a} is not 0/1")
    return DigitsDataset(
        arrays["images"], arrays["labels"].astype(np.int64), arrays["source"].astype(np.int64),
        arrays["thickness"], arrays["intensity"], {k: arrays[f"m_{k}"] for k in MEASURED},
        {a: arrays[f"a_{a}"].astype(np.int64) for a in ATTRIBUTES})


def _consistent(data: DigitsDataset, config: DigitsConfig) -> DigitsDataset:
    """``data`` if what the build derives cheaply from the seed agrees with it: the thickness
    and intensity draws (bit for bit), the source digits and their classes, and every binary
    attribute from the stored values; ValueError otherwise (an edited or flipped array)."""
    from sklearn.datasets import load_digits

    n = len(data)
    t, i = sample_thickness_intensity(n, np.random.default_rng(config.seed))
    if not (np.array_equal(t, data.thickness) and np.array_equal(i, data.intensity)):
        raise ValueError("thickness or intensity differ from the seeded draws")
    n_base = n // config.draws
    source = np.repeat(np.arange(n_base), config.draws)
    if not np.array_equal(source, data.source):
        raise ValueError("source digits differ from the build's")
    if not np.array_equal(load_digits().target[:n_base][source], data.labels):
        raise ValueError("digit classes differ from scikit-learn's")
    for a, values in annotate(t, i, data.measured, data.labels).items():
        if not np.array_equal(values, data.attributes[a]):
            raise ValueError(f"attribute {a} differs from the one its measurements give")
    return data


def _read_cache(path: Path, config: DigitsConfig) -> DigitsDataset | None:
    """The cached dataset, or None (after a :class:`CacheWarning`) when it cannot be trusted."""
    try:
        return _consistent(_from_npz(path, _expected_size(config)), config)
    except Exception as exc:  # any failure: the cache is untrusted input, never an error
        reason = str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__
        warnings.warn(CacheWarning(f"{path}: unusable dataset cache ({reason}); rebuilding it"),
                      stacklevel=3)
        return None


def load(config: DigitsConfig, cache_dir: str | os.PathLike[str] | None) -> DigitsDataset:
    """The dataset from ``cache_dir/digits-<key>.npz``, building and caching it if absent or
    unusable (a truncated, pickled or otherwise tampered file is rebuilt, never loaded)."""
    path = Path(cache_dir) / f"digits-{config.key()}.npz" if cache_dir is not None else None
    if path is not None:
        check_cache_path(path)
    if path is not None and path.is_file():
        cached = _read_cache(path, config)
        if cached is not None:
            progress.note(f"digits data set: cached in {path}")
            return cached
    with progress.stage("building the digits data set (Morpho-MNIST thickness and intensity, "
                        "once; cached afterwards)"):
        data = build(config)
    if path is not None:
        buf = io.BytesIO()
        np.savez_compressed(
            buf, images=data.images, labels=data.labels, source=data.source,
            thickness=data.thickness, intensity=data.intensity,
            **{f"m_{k}": v for k, v in data.measured.items()},
            **{f"a_{k}": v for k, v in data.attributes.items()},
        )
        try:
            atomic_write_bytes(path, buf.getvalue())
        except OSError as exc:
            raise RunDirError(f"{path.parent}: cannot write the dataset cache ({exc.strerror}); "
                              "set CAGE_EVAL_CACHE to a writable directory") from None
    return data
