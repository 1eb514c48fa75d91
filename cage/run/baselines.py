"""Causal-discovery baselines on two attributes' probabilities (paper Appendix D).

The paper compares CAGE with three classical methods run on the attribute-classifier
probabilities of generated samples, and finds them often disagreeing with each other:

LiNGAM (Shimizu et al. 2006; DirectLiNGAM, Shimizu et al. 2011)
    Linear, non-Gaussian, acyclic model. ``causal-learn``'s ``DirectLiNGAM`` (pairwise
    likelihood-ratio measure, Hyvärinen & Smith 2013) orders the two variables and fits the
    connection strength by adaptive lasso.
ANM (Hoyer et al. 2008)
    Additive noise model ``y = f(x) + e`` with ``e`` independent of ``x``. ``causal-learn``'s
    ``ANM`` fits ``f`` by Gaussian-process regression in both directions and tests the residual's
    independence of the input with the kernel independence test (KCI, gamma approximation).
NOTEARS (Zheng et al. 2018)
    Linear structural equation model learnt by continuous optimisation with the acyclicity
    constraint ``h(W) = 0``; ``gcastle``'s ``Notears`` (least squares, lambda1 = 0.1, edges with
    ``|w| >= 0.3``, the reference values).

All three come from maintained packages behind the optional extra ``baselines``
(``pip install -e '.[baselines]'``); docs/baselines.md says why these packages. Without the
extra every method returns a record with ``available=False`` and the install hint, so a caller
never has to special-case it. The numbers in, plain records out; nothing here prints or writes.
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

METHODS = ("LiNGAM", "ANM", "NOTEARS")
INSTALL_HINT = "pip install -e '.[baselines]' (causal-learn, gcastle)"
#: ANM fits two Gaussian processes (cubic in the sample size): this many samples, drawn by seed.
ANM_SAMPLES = 400
#: The reference NOTEARS settings (Zheng et al. 2018, notears/linear.py).
NOTEARS_LAMBDA1 = 0.1
NOTEARS_THRESHOLD = 0.3
VERDICTS = ("->", "<-", "?")


@dataclass(frozen=True)
class BaselineVerdict:
    """One method's verdict on the direction between two attributes ``m1`` and ``m2``.

    Attributes
    ----------
    method : ``"LiNGAM"``, ``"ANM"`` or ``"NOTEARS"``.
    m1, m2 : the attribute names, in the order given.
    verdict : ``"->"`` (m1 causes m2), ``"<-"`` (m2 causes m1) or ``"?"`` (no direction found,
        or the method is unavailable).
    score : signed strength, positive favouring m1 -> m2 (NaN when unavailable). LiNGAM and
        NOTEARS: ``|w(m1->m2)| - |w(m2->m1)|``, the fitted edge weights (NOTEARS on the
        commonly rescaled data, see :func:`run_baselines`); ANM: ``log10(p_forward) -
        log10(p_backward)``.
    p_forward, p_backward : ANM only (NaN otherwise): the p-value of the independence test of
        input and residual when m2 is regressed on m1 (forward) and m1 on m2 (backward); a large
        p-value means the additive-noise model in that direction fits.
    n : samples the method used.
    available : False when the ``baselines`` extra is not installed.
    note : why the verdict is ``"?"``, the install hint, or ``""``.
    package : the package and version that computed it (``""`` when unavailable).
    """

    method: str
    m1: str
    m2: str
    verdict: str
    score: float
    p_forward: float = math.nan
    p_backward: float = math.nan
    n: int = 0
    available: bool = True
    note: str = ""
    package: str = ""


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{dist} {version(dist)}"
    except PackageNotFoundError:
        return dist


def _unavailable(method: str, names: tuple[str, str], missing: str) -> BaselineVerdict:
    return BaselineVerdict(method, names[0], names[1], "?", math.nan, available=False,
                           note=f"{missing} is not installed; {INSTALL_HINT}")


def _check(p1: np.ndarray, p2: np.ndarray) -> np.ndarray:
    a, b = np.asarray(p1, dtype=float), np.asarray(p2, dtype=float)
    if a.ndim != 1 or b.ndim != 1 or len(a) != len(b):
        raise ValueError(f"p1 and p2 must be 1-D arrays of equal length, got shapes "
                         f"{a.shape} and {b.shape}")
    x = np.column_stack([a, b])
    if len(x) < 20:
        raise ValueError(f"need at least 20 samples, got {len(x)}")
    if not np.isfinite(x).all():
        raise ValueError("p1 and p2 must be finite")
    return x


# --------------------------------------------------------------------------- the methods


def lingam(x: np.ndarray, names: tuple[str, str], seed: int) -> BaselineVerdict:
    """DirectLiNGAM on the two columns of ``x`` (n, 2)."""
    try:
        from causallearn.search.FCMBased.lingam import DirectLiNGAM
    except ImportError:
        return _unavailable("LiNGAM", names, "causal-learn")
    model = DirectLiNGAM(random_state=seed).fit(x)
    b = np.asarray(model.adjacency_matrix_)   # b[i, j]: effect of variable j on variable i
    forward, backward = abs(float(b[1, 0])), abs(float(b[0, 1]))
    verdict, note = _by_weights(forward, backward, 0.0, "the adaptive lasso kept no edge")
    return BaselineVerdict("LiNGAM", *names, verdict, forward - backward, n=len(x), note=note,
                           package=_version("causal-learn"))


def anm(x: np.ndarray, names: tuple[str, str], seed: int, alpha: float = 0.05,
        samples: int = ANM_SAMPLES) -> BaselineVerdict:
    """Hoyer et al.'s decision rule: a direction is found when its additive-noise model is not
    rejected at ``alpha`` and the reverse one is."""
    try:
        from causallearn.search.FCMBased.ANM.ANM import ANM
    except ImportError:
        return _unavailable("ANM", names, "causal-learn")
    from sklearn.exceptions import ConvergenceWarning

    if len(x) > samples:
        x = x[np.sort(np.random.default_rng(seed).choice(len(x), samples, replace=False))]
    # GP regression is scale-sensitive in its kernel bounds; standardise each variable
    # (independence of residual and input does not depend on the scale).
    z = (x - x.mean(axis=0)) / x.std(axis=0)
    with warnings.catch_warnings():
        # A GP that finds no signal (independent attributes) hits its kernel bounds; that is
        # an answer here, not a problem to report.
        warnings.simplefilter("ignore", category=ConvergenceWarning)
        p_fwd, p_bwd = ANM().cause_or_effect(z[:, :1], z[:, 1:])
    p_fwd, p_bwd = float(p_fwd), float(p_bwd)
    if p_fwd > alpha >= p_bwd:
        verdict, note = "->", ""
    elif p_bwd > alpha >= p_fwd:
        verdict, note = "<-", ""
    else:
        verdict = "?"
        note = (f"both directions rejected at {alpha:g}" if max(p_fwd, p_bwd) <= alpha
                else f"neither direction rejected at {alpha:g}")
    tiny = 1e-300
    score = math.log10(max(p_fwd, tiny)) - math.log10(max(p_bwd, tiny))
    return BaselineVerdict("ANM", *names, verdict, score, p_forward=p_fwd, p_backward=p_bwd,
                           n=len(x), note=note, package=_version("causal-learn"))


def _import_notears():
    """gcastle's linear NOTEARS, imported without its import-time side effects.

    Importing ``castle.algorithms`` (1) calls ``logging.basicConfig(level=INFO)``, which would
    install a handler on the root logger and print INFO lines for the rest of the process (see
    :func:`_root_logger_untouched`), and (2) imports its torch NOTEARS variant, which calls
    ``torch.set_default_dtype(torch.double)``; the default dtype is put back, or every later
    float32 model in the process (the pipeline's generators) would meet float64 tensors.
    """
    import torch

    dtype = torch.get_default_dtype()
    try:
        with _root_logger_untouched():
            from castle.algorithms import Notears
    finally:
        torch.set_default_dtype(dtype)
    return Notears


@contextlib.contextmanager
def _root_logger_untouched() -> Iterator[None]:
    """Keep ``logging.basicConfig`` (called by gcastle at import, and implicitly by its
    module-level ``logging.info`` calls while learning) from configuring the root logger."""
    root = logging.getLogger()
    guard = logging.NullHandler()
    root.addHandler(guard)
    try:
        yield
    finally:
        root.removeHandler(guard)


def notears(x: np.ndarray, names: tuple[str, str]) -> BaselineVerdict:
    """Linear NOTEARS on the two columns of ``x`` (n, 2), centred and divided by one common
    scale (keeping the variance ratio, which is what orients two variables under a
    least-squares score; Reisach et al. 2021)."""
    try:
        notears_cls = _import_notears()
    except ImportError:
        return _unavailable("NOTEARS", names, "gcastle")
    z = x - x.mean(axis=0)
    z = z / z.std()
    model = notears_cls(lambda1=NOTEARS_LAMBDA1, loss_type="l2", w_threshold=NOTEARS_THRESHOLD)
    with _root_logger_untouched():
        model.learn(z)
    w = np.asarray(model.weight_causal_matrix, dtype=float)   # w[i, j]: edge i -> j
    forward, backward = abs(float(w[0, 1])), abs(float(w[1, 0]))
    verdict, note = _by_weights(forward, backward, NOTEARS_THRESHOLD,
                                f"no edge weight reached {NOTEARS_THRESHOLD:g}")
    return BaselineVerdict("NOTEARS", *names, verdict, forward - backward, n=len(x),
                           note=note, package=_version("gcastle"))


def _by_weights(forward: float, backward: float, threshold: float, none: str
                ) -> tuple[str, str]:
    if max(forward, backward) <= threshold or forward == backward:
        return "?", none
    return ("->", "") if forward > backward else ("<-", "")


# --------------------------------------------------------------------------- entry point


def run_baselines(p1: np.ndarray, p2: np.ndarray, names: tuple[str, str] = ("m1", "m2"),
                  seed: int = 0, *, methods: Sequence[str] = METHODS, alpha: float = 0.05,
                  anm_samples: int = ANM_SAMPLES) -> list[BaselineVerdict]:
    """Run LiNGAM, ANM and NOTEARS on two attributes' probabilities of the same samples.

    Parameters
    ----------
    p1, p2 : array of shape (n,)
        Per sample, the probability of attribute ``names[0]`` and of ``names[1]`` (for CAGE:
        the latent classifiers' probabilities on the generated prior samples), n >= 20.
        Any finite real values are accepted; they are not transformed except as each method
        states.
    names : the two attribute names; ``"->"`` in a verdict means ``names[0]`` causes
        ``names[1]``.
    seed : the only randomness is ANM's choice of ``anm_samples`` samples when n is larger;
        the same inputs and seed give the same records.
    methods : a subset of :data:`METHODS`, in the order wanted.
    alpha : ANM's level for rejecting an additive-noise model.
    anm_samples : samples used by ANM (two Gaussian-process fits, cubic in this number).

    Returns
    -------
    list of :class:`BaselineVerdict`, one per method in ``methods``; a method whose package is
    missing gives ``available=False``, verdict ``"?"`` and the install hint in ``note``.

    Raises
    ------
    ValueError
        Arrays of different lengths, not 1-D, shorter than 20 or not finite; an unknown method.
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {METHODS}")
    x = _check(p1, p2)
    names = (str(names[0]), str(names[1]))
    out = []
    for method in methods:
        if np.ptp(x[:, 0]) == 0 or np.ptp(x[:, 1]) == 0:
            out.append(BaselineVerdict(method, *names, "?", math.nan, n=len(x),
                                       note="an attribute is constant over the samples"))
        elif method == "LiNGAM":
            out.append(lingam(x, names, seed))
        elif method == "ANM":
            out.append(anm(x, names, seed, alpha=alpha, samples=anm_samples))
        else:
            out.append(notears(x, names))
    return out
