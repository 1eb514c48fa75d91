"""Latent classifiers and the batched logistic-regression refits (cage.engine.classifiers)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from cage.engine.classifiers import (
    LatentClassifier,
    fit_attribute_classifier,
    fit_logreg_batched,
    sigmoid,
    train_test_mask,
)
from cage.engine.nulls import permutation_labels
from cage_eval.errors import ConfigError


def _data(n=800, d=5, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, d))
    w = np.arange(1, d + 1, dtype=float)
    y = (rng.random(n) < sigmoid(z @ w * 0.8 - 0.3)).astype(int)
    return z, y


def test_logreg_matches_sklearn_and_exposes_the_contract():
    z, y = _data()
    clf = LatentClassifier("logreg", C=0.5).fit(z, y)
    ref = LogisticRegression(C=0.5, max_iter=5000, tol=1e-10).fit(z, y)
    np.testing.assert_allclose(clf.coef_, ref.coef_[0], rtol=1e-4, atol=1e-6)
    assert clf.intercept_ == pytest.approx(ref.intercept_[0], abs=1e-5)
    assert np.linalg.norm(clf.normal_) == pytest.approx(1.0)
    np.testing.assert_allclose(clf.normal_ * clf.weight_norm_, clf.coef_)
    p = clf.predict_proba(z)
    assert p.shape == (z.shape[0],)
    np.testing.assert_allclose(p, ref.predict_proba(z)[:, 1], atol=1e-5)


def test_linsvm_is_a_calibrated_linear_logit():
    z, y = _data(seed=1)
    clf = LatentClassifier("linsvm").fit(z, y)
    np.testing.assert_allclose(clf.predict_proba(z), sigmoid(z @ clf.coef_ + clf.intercept_))
    assert np.mean(clf.predict(z) == y) > 0.8
    # Calibration: mean predicted probability close to the base rate.
    assert abs(clf.predict_proba(z).mean() - y.mean()) < 0.03


def test_held_out_accuracy_and_split():
    z, y = _data(n=1000, seed=2)
    clf, mask = fit_attribute_classifier("a", z, y, test_fraction=0.3, seed=4)
    assert clf.n_test_ == mask.sum() and clf.n_train_ == (~mask).sum()
    assert abs(mask.mean() - 0.3) < 0.01
    assert clf.accuracy_ == pytest.approx(np.mean(clf.predict(z[mask]) == y[mask]))
    # Stratified: both classes are in both parts, in about the same proportion.
    assert abs(y[mask].mean() - y[~mask].mean()) < 0.02
    np.testing.assert_array_equal(mask, train_test_mask(y, 0.3, 4))


def test_single_class_and_non_finite_latents_are_user_errors():
    z, y = _data(n=50)
    with pytest.raises(ConfigError, match="single class"):
        fit_attribute_classifier("thick", z, np.ones(50, dtype=int))
    bad = z.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ConfigError, match="NaN"):
        fit_attribute_classifier("thick", bad, y)


def test_batched_refits_match_sklearn_fits():
    z, y = _data(n=600, d=8, seed=3)
    labels = permutation_labels(y, 6, seed=0)
    labels[:, 0] = y  # one informative column, five permuted ones
    coef, intercept = fit_logreg_batched(z, labels, C=1.0)
    for b in range(labels.shape[1]):
        ref = LogisticRegression(C=1.0, max_iter=5000, tol=1e-10).fit(z, labels[:, b])
        np.testing.assert_allclose(coef[b], ref.coef_[0], atol=1e-5)
        assert intercept[b] == pytest.approx(ref.intercept_[0], abs=1e-5)


def test_batched_refits_do_not_depend_on_row_order():
    z, y = _data(n=400, d=4, seed=5)
    labels = permutation_labels(y, 3, seed=1)
    perm = np.random.default_rng(0).permutation(400)
    c1, i1 = fit_logreg_batched(z, labels)
    c2, i2 = fit_logreg_batched(z[perm], labels[perm])
    np.testing.assert_allclose(c1, c2, atol=1e-9)
    np.testing.assert_allclose(i1, i2, atol=1e-9)
