"""Morpho-MNIST morphometrics and the thickness perturbation, implemented from their description.

Castro et al., "Morpho-MNIST: Quantitative Assessment and Diagnostics for Representation Learning"
(JMLR 2019). Every measurement works on an upsampled ("high-resolution") copy of a 28x28 digit,
binarised at half its dynamic range:

* thickness: twice the mean distance-to-background along the medial axis (the mean stroke
  diameter), in 28x28 pixels. ``method="thinning"`` (the default) takes the axis from
  ``skimage.morphology.skeletonize`` and the distances from the Euclidean distance transform, about
  100x faster than ``method="medial_axis"`` (``skimage.morphology.medial_axis``, Morpho-MNIST's
  choice; seeded here, since its tie-breaking is random). On 100 of the built-in digits the two agree
  with correlation 0.97, mean difference -0.06 px and largest difference 0.6 px;
* area: number of foreground pixels, in 28x28 pixels squared;
* slant: ``arctan(-shear)`` with the horizontal shear ``mu_xy / mu_yy`` of the second-order moments
  (positive for a digit whose top leans right), in radians;
* width / height: extent of the de-slanted foreground after discarding ``bound_frac`` of the mass;
* intensity (not a Morpho-MNIST metric; DeepSCM's): the median pixel value over the pixels at or
  above half the dynamic range, in the image's own units.

:func:`set_thickness` is Morpho-MNIST's ``SetThickness``: dilate (or erode) the high-resolution binary
digit by half the difference between the target and the measured thickness. The disk is applied
through Euclidean distance transforms, which gives fractional radii and an antialiased edge, and the
result is block-averaged back to 28x28.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.morphology import medial_axis, skeletonize
from skimage.transform import pyramid_expand

#: Default upsampling factor for measurements and perturbations (Morpho-MNIST uses 4 to 16).
SCALE = 4
THICKNESS_METHODS = ("thinning", "medial_axis")


@dataclass(frozen=True)
class Morphometrics:
    """Measurements of one digit (units: 28x28 pixels; slant in radians)."""

    thickness: float
    area: float
    slant: float
    width: float
    height: float
    intensity: float


def upscale(image: np.ndarray, scale: int = SCALE) -> np.ndarray:
    """Bicubic upsampling of a 2-D image by an integer factor (``pyramid_expand``, order 3)."""
    return pyramid_expand(np.asarray(image, dtype=np.float64), upscale=scale, order=3)


def binarise(image: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Foreground mask ``image >= min + threshold * (max - min)``; all False for a flat image."""
    lo, hi = float(image.min()), float(image.max())
    if hi <= lo:
        return np.zeros(image.shape, dtype=bool)
    return image >= lo + threshold * (hi - lo)


def intensity(image: np.ndarray, threshold: float = 0.5) -> float:
    """DeepSCM's intensity: median pixel value over the mask of :func:`binarise`."""
    mask = binarise(image, threshold)
    return float(np.median(image[mask])) if mask.any() else 0.0


def _thickness_hires(mask: np.ndarray, scale: int, method: str = "thinning") -> float:
    if not mask.any():
        return 0.0
    if method == "thinning":
        skeleton = skeletonize(mask)
        distance = ndimage.distance_transform_edt(mask)
    elif method == "medial_axis":
        skeleton, distance = medial_axis(mask, return_distance=True, rng=0)
    else:
        raise ValueError(f"method must be one of {THICKNESS_METHODS}, got {method!r}")
    return float(2.0 * distance[skeleton].mean() / scale)


def _shear(mask: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    ys, xs = np.nonzero(mask)
    ys = ys.astype(np.float64)
    xs = xs.astype(np.float64)
    dy = ys - ys.mean()
    dx = xs - xs.mean()
    mu_yy = float((dy * dy).mean())
    shear = float((dx * dy).mean()) / mu_yy if mu_yy > 0 else 0.0
    return shear, dx, dy


def measure(image: np.ndarray, *, scale: int = SCALE, threshold: float = 0.5,
            bound_frac: float = 0.02, method: str = "thinning") -> Morphometrics:
    """Morphometrics of one 2-D digit image (any value range, background low).

    Parameters
    ----------
    image : np.ndarray, shape (h, w)
        The digit, e.g. 28x28 in [0, 1].
    scale : int
        Upsampling factor for the binary measurements.
    threshold : float
        Binarisation level, as a fraction of the dynamic range.
    bound_frac : float
        Fraction of the foreground mass discarded when measuring width and height.
    method : {"thinning", "medial_axis"}
        How the medial axis is found (see the module docstring).
    """
    image = np.asarray(image, dtype=np.float64)
    hires = upscale(image, scale)
    mask = binarise(hires, threshold)
    if not mask.any():
        return Morphometrics(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    shear, dx, dy = _shear(mask)
    deslanted = dx - shear * dy
    lo, hi = bound_frac / 2, 1 - bound_frac / 2
    width = float(np.quantile(deslanted, hi) - np.quantile(deslanted, lo)) / scale
    height = float(np.quantile(dy, hi) - np.quantile(dy, lo)) / scale
    return Morphometrics(
        thickness=_thickness_hires(mask, scale, method),
        area=float(mask.sum()) / scale**2,
        slant=float(np.arctan(-shear)),
        width=width,
        height=height,
        intensity=intensity(image, threshold),
    )


def thickness(image: np.ndarray, *, scale: int = SCALE, threshold: float = 0.5,
              method: str = "thinning") -> float:
    """Mean stroke diameter along the medial axis, in pixels of ``image``."""
    mask = binarise(upscale(np.asarray(image, dtype=np.float64), scale), threshold)
    return _thickness_hires(mask, scale, method)


def set_thickness(image: np.ndarray, target: float, *, scale: int = SCALE,
                  threshold: float = 0.5, current: float | None = None) -> np.ndarray:
    """Morpho-MNIST ``SetThickness``: thicken or thin a digit to a target stroke thickness.

    The high-resolution binary digit is dilated when ``target`` exceeds the measured thickness and
    eroded otherwise, by a disk of radius ``scale * |target - current| / 2``. Erosion stops short of
    the medial axis (at most 90% of the largest inner distance) so a digit never vanishes.

    Parameters
    ----------
    image : np.ndarray, shape (h, w)
        The digit (background low).
    target : float
        Target thickness in pixels of ``image``.
    current : float, optional
        The already measured thickness (saves one medial-axis pass).

    Returns
    -------
    np.ndarray, shape (h, w), float64 in [0, 1]
        The perturbed digit: a binary stroke with antialiased edges.
    """
    hires = upscale(np.asarray(image, dtype=np.float64), scale)
    mask = binarise(hires, threshold)
    if not mask.any():
        return np.zeros(np.shape(image), dtype=np.float64)
    if current is None:
        current = _thickness_hires(mask, scale)
    radius = scale * abs(target - current) / 2.0
    if target >= current:
        outside = ndimage.distance_transform_edt(~mask)
        soft = np.clip(radius + 1.0 - outside, 0.0, 1.0)
    else:
        inside = ndimage.distance_transform_edt(mask)
        radius = max(0.0, min(radius, 0.9 * float(inside.max()) - 1.0))
        soft = np.clip(inside - radius, 0.0, 1.0)
    h, w = np.shape(image)
    return soft.reshape(h, scale, w, scale).mean(axis=(1, 3))
