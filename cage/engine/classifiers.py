"""Linear latent attribute classifiers (docs/method.md §2, step 2) and batched refits.

:class:`LatentClassifier` follows the scikit-learn contract. Whatever the kind, the fitted model is a
*linear logit* ``logit(z) = coef_ . z + intercept_`` with ``P(m = 1 | z) = sigmoid(logit)``, so the
closed-form evaluation in :mod:`cage.engine.effects` applies to it:

- ``logreg``: L2 logistic regression (scikit-learn ``LogisticRegression``, lbfgs);
- ``linsvm``: ``LinearSVC`` whose decision value ``f`` is Platt-calibrated, ``P = sigmoid(a f + c)``
  with ``(a, c)`` fitted on out-of-fold decision values; ``coef_ = a w``, ``intercept_ = a b + c``.

:func:`fit_logreg_batched` fits many L2 logistic regressions that share the design matrix (the
label-permutation null) at once, as one weight matrix, by a damped quasi-Newton iteration whose
Hessian is shared across columns.
"""

from __future__ import annotations

import numpy as np
import torch

from cage_eval.errors import ConfigError

#: Rows per block when computing logits of a large latent matrix in float64.
LOGIT_CHUNK = 8192


def logits_of(z: np.ndarray | torch.Tensor, coef: np.ndarray, intercept: float) -> np.ndarray:
    """``z @ coef + intercept`` in float64, in row blocks (no float64 copy of ``z``).

    Parameters
    ----------
    z : array, shape (n, d)
    coef : array, shape (d,)
    intercept : float

    Returns
    -------
    np.ndarray, shape (n,), float64
    """
    zt = torch.as_tensor(z)
    w = torch.as_tensor(np.asarray(coef, dtype=np.float64))
    out = torch.empty(zt.shape[0], dtype=torch.float64)
    for start in range(0, zt.shape[0], LOGIT_CHUNK):
        block = zt[start:start + LOGIT_CHUNK].to(torch.float64)
        out[start:start + LOGIT_CHUNK] = block @ w
    return out.numpy() + float(intercept)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


class LatentClassifier:
    """A linear probabilistic classifier of one binary attribute on latents.

    Parameters
    ----------
    kind : {'logreg', 'linsvm'}
    C : float
        Inverse L2 regularisation strength.
    random_state : int
        Seed for the SVM's internal shuffling and the calibration folds.

    Attributes
    ----------
    coef_ : np.ndarray, shape (d,)
        Logit weights ``w`` (float64).
    intercept_ : float
        Logit intercept ``b``.
    normal_ : np.ndarray, shape (d,)
        Unit normal ``h = w / |w|`` of the decision hyperplane.
    weight_norm_ : float
        ``|w|``: the logit moves by ``|w| cos`` per unit step along a unit direction.
    accuracy_ : float
        Held-out accuracy (set by :func:`fit_attribute_classifier`; NaN when fitted directly).
    n_train_, n_test_ : int
    """

    def __init__(self, kind: str = "logreg", C: float = 1.0, random_state: int = 0) -> None:
        self.kind = kind
        self.C = C
        self.random_state = random_state

    def fit(self, z: np.ndarray, y: np.ndarray) -> LatentClassifier:
        """Fit on latents ``z`` (n, d) and 0/1 labels ``y`` (n,); return self."""
        from sklearn.linear_model import LogisticRegression

        z = np.asarray(z, dtype=np.float64)
        y = np.asarray(y).astype(np.int64)
        if z.ndim != 2 or y.shape != (z.shape[0],):
            raise ValueError(f"expected z (n, d) and y (n,), got {z.shape} and {y.shape}")
        if np.unique(y).size != 2:
            raise ValueError("y must contain both classes 0 and 1")
        if self.kind == "logreg":
            model = LogisticRegression(C=self.C, max_iter=5000, tol=1e-8)
            model.fit(z, y)
            coef, intercept = model.coef_[0].astype(np.float64), float(model.intercept_[0])
        elif self.kind == "linsvm":
            from sklearn.model_selection import StratifiedKFold, cross_val_predict
            from sklearn.svm import LinearSVC

            svm = LinearSVC(C=self.C, random_state=self.random_state, max_iter=20000, tol=1e-6)
            n_splits = int(min(3, np.bincount(y).min()))
            if n_splits >= 2:
                folds = StratifiedKFold(n_splits=n_splits, shuffle=True,
                                        random_state=self.random_state)
                oof = cross_val_predict(svm, z, y, cv=folds, method="decision_function")
            svm.fit(z, y)
            if n_splits < 2:
                oof = svm.decision_function(z)
            platt = LogisticRegression(C=1e6, max_iter=1000).fit(oof.reshape(-1, 1), y)
            a, c = float(platt.coef_[0, 0]), float(platt.intercept_[0])
            coef = a * svm.coef_[0].astype(np.float64)
            intercept = a * float(svm.intercept_[0]) + c
        else:
            raise ValueError(f"unknown classifier kind {self.kind!r}")
        self.coef_ = coef
        self.intercept_ = intercept
        self.weight_norm_ = float(np.linalg.norm(coef))
        self.normal_ = coef / self.weight_norm_ if self.weight_norm_ > 0 else coef.copy()
        self.accuracy_ = float("nan")
        self.n_train_ = int(z.shape[0])
        self.n_test_ = 0
        return self

    def decision_function(self, z: np.ndarray | torch.Tensor) -> np.ndarray:
        """Logits ``w . z + b``, shape (n,), float64."""
        return logits_of(z, self.coef_, self.intercept_)

    def predict_proba(self, z: np.ndarray | torch.Tensor) -> np.ndarray:
        """``P(attribute = 1 | z)``, shape (n,) (not scikit-learn's (n, 2))."""
        return sigmoid(self.decision_function(z))

    def predict(self, z: np.ndarray | torch.Tensor) -> np.ndarray:
        """Hard labels ``1[P > 0.5]``, shape (n,), int64."""
        return (self.decision_function(z) > 0).astype(np.int64)


def train_test_mask(y: np.ndarray, test_fraction: float, seed: int) -> np.ndarray:
    """A stratified, seeded held-out mask (True = test), shape (n,)."""
    rng = np.random.default_rng(seed)
    y = np.asarray(y)
    mask = np.zeros(y.shape[0], dtype=bool)
    for cls in (0, 1):
        idx = np.flatnonzero(y == cls)
        n_test = int(round(test_fraction * idx.size))
        n_test = min(max(n_test, 1), idx.size - 1)
        mask[rng.permutation(idx)[:n_test]] = True
    return mask


def fit_attribute_classifier(
    name: str,
    z: np.ndarray,
    y: np.ndarray,
    *,
    kind: str = "logreg",
    C: float = 1.0,
    test_fraction: float = 0.25,
    seed: int = 0,
) -> tuple[LatentClassifier, np.ndarray]:
    """Fit one attribute's latent classifier on a stratified split; report held-out accuracy.

    Returns
    -------
    classifier : LatentClassifier
        With ``accuracy_``, ``n_train_`` and ``n_test_`` set.
    test_mask : np.ndarray of bool, shape (n,)
        The held-out rows.

    Raises
    ------
    ConfigError
        The attribute has a single class or too few examples of one class, or the latents are not
        finite.
    """
    y = np.asarray(y)
    if not np.all(np.isin(y, (0, 1))):
        raise ConfigError(f"attribute {name!r}: labels must be 0/1, got values "
                          f"{sorted(set(np.unique(y).tolist()))[:5]}")
    counts = np.bincount(y.astype(np.int64), minlength=2)
    if counts.min() < 2:
        raise ConfigError(f"attribute {name!r} has a single class ({int(counts[0])} zeros, "
                          f"{int(counts[1])} ones); choose an attribute that varies in the data")
    if not np.all(np.isfinite(z)):
        raise ConfigError(f"attribute {name!r}: the encoded latents contain NaN or infinity; "
                          "retrain or check the generator")
    mask = train_test_mask(y, test_fraction, seed)
    clf = LatentClassifier(kind=kind, C=C, random_state=seed).fit(z[~mask], y[~mask])
    clf.accuracy_ = float(np.mean(clf.predict(z[mask]) == y[mask]))
    clf.n_train_ = int((~mask).sum())
    clf.n_test_ = int(mask.sum())
    return clf, mask


# --------------------------------------------------------------------------- batched refits


def fit_logreg_batched(
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    *,
    C: float = 1.0,
    max_iter: int = 100,
    shared_iter: int = 25,
    tol: float = 1e-8,
    dtype: torch.dtype = torch.float64,
) -> tuple[np.ndarray, np.ndarray]:
    """Fit ``B`` L2 logistic regressions sharing the design ``x`` at once.

    Minimises, for every column ``b`` independently,
    ``sum_i logloss(y_ib, x_i . w_b + c_b) + |w_b|^2 / (2 C)`` (scikit-learn's objective; the
    intercept is not penalised).

    Method: a chord (fixed-Hessian) Newton iteration. The Hessian at the start point,
    ``H0 = v X^T X + I/C`` with ``v`` the mean base-rate variance ``p(1-p)``, is factorised once
    (one ``n d^2`` Gram product) and shared by all columns; each iteration then costs two GEMMs
    (logits ``X W`` and gradients ``X^T (P - Y)``) and a triangular solve with ``B`` right-hand
    sides. For permuted labels the optimum is close to the start, where ``H0`` is nearly the exact
    Hessian, so a few iterations reach ``tol``. Columns still unconverged after ``shared_iter``
    iterations (informative labels) switch to exact per-column Newton steps. Steps are halved per
    column where the objective would rise, so every column descends monotonically.

    Parameters
    ----------
    x : array, shape (n, d)
    y : array, shape (n, B)
        0/1 labels, one column per regression (e.g. ``B`` permutations of one label vector).
    C : float
    max_iter : int
        Iterations in all.
    shared_iter : int
        Iterations with the shared Hessian before unconverged columns switch to their own.
    tol : float
        Stop when every column's gradient max-norm is below ``tol * n``.
    dtype : torch.dtype
        Precision of the big products (``X W``, ``X^T R``, the Gram matrix). ``torch.float32``
        halves their cost; the objective, the gradients' accumulation target, the factorisation
        and the weights stay float64 either way.

    Returns
    -------
    coef : np.ndarray, shape (B, d)
    intercept : np.ndarray, shape (B,)
    """
    f64 = torch.float64
    xt = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).to(dtype)
    yt = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y).to(dtype)
    n, d = xt.shape
    if yt.ndim != 2 or yt.shape[0] != n:
        raise ValueError(f"expected y of shape ({n}, B), got {tuple(yt.shape)}")
    xa = torch.cat([xt, torch.ones(n, 1, dtype=dtype)], dim=1)  # intercept as last column
    reg = torch.full((d + 1,), 1.0 / C, dtype=f64)
    reg[-1] = 0.0
    n_cols = yt.shape[1]
    w = torch.zeros(d + 1, n_cols, dtype=f64)
    base = yt.mean(0, dtype=f64).clamp(1e-6, 1 - 1e-6)
    w[-1] = torch.log(base / (1 - base))  # start at the base rate
    # Objective increases smaller than this count as numerical noise of the products.
    slack = 1e-12 if dtype == f64 else 1e-6

    def objective(wm: torch.Tensor, logits: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        loss = torch.nn.functional.softplus(logits) - ys * logits
        return loss.sum(0, dtype=f64) + 0.5 * (reg[:, None] * wm * wm).sum(0)

    def gradient(wm: torch.Tensor, logits: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        return (xa.T @ (torch.sigmoid(logits) - ys)).to(f64) + reg[:, None] * wm

    eye = torch.diag(reg) + 1e-10 * torch.eye(d + 1, dtype=f64)
    v = float((base * (1 - base)).mean())
    chol = torch.linalg.cholesky(v * (xa.T @ xa).to(f64) + eye)
    logits = w[-1].to(dtype)[None, :].repeat(n, 1)  # X w at the start: the intercepts
    obj = objective(w, logits, yt)
    grad = gradient(w, logits, yt)
    # Converged columns no longer move, so each iteration works on the still-active ones only.
    for it in range(max_iter):
        idx = torch.nonzero(grad.abs().amax(0) >= tol * n).flatten()
        if idx.numel() == 0:
            break
        w_a, logits_a, obj_a, y_a, g_a = w[:, idx], logits[:, idx], obj[idx], yt[:, idx], grad[:, idx]
        if it < shared_iter:
            step = torch.cholesky_solve(g_a, chol)
        else:
            step = torch.empty_like(g_a)
            xd = xa.to(f64)
            for j in range(idx.numel()):
                pj = torch.sigmoid(logits_a[:, j].to(f64))
                hess = (xd * (pj * (1 - pj))[:, None]).T @ xd + eye
                step[:, j] = torch.linalg.solve(hess, g_a[:, j])
        scale = torch.ones(idx.numel(), dtype=f64)
        for _halving in range(30):
            w_new = w_a - step * scale
            logits_new = xa @ w_new.to(dtype)
            obj_new = objective(w_new, logits_new, y_a)
            worse = obj_new > obj_a + slack * obj_a.abs()
            if not bool(worse.any()):
                break
            scale = torch.where(worse, scale * 0.5, scale)
        keep = ~worse  # columns with no descent left have converged: leave them as they were
        w_new[:, worse], logits_new[:, worse], obj_new[worse] = w_a[:, worse], logits_a[:, worse], obj_a[worse]
        w[:, idx], logits[:, idx], obj[idx] = w_new, logits_new, obj_new
        grad[:, idx] = gradient(w_new, logits_new, y_a)
        if not bool(keep.any()):
            break
    wn = w.T.contiguous().numpy()
    return wn[:, :d].astype(np.float64), wn[:, d].astype(np.float64)
