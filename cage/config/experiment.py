"""Experiment configurations: TOML files with a common ``[experiment]`` and ``[cage]`` part.

An experiment file looks like::

    [experiment]
    name = "mog"              # used for the default output directory and in the manifest
    kind = "mog"              # selects the experiment kind (cage.experiments.registry)
    seed = 0
    description = "..."

    [cage]                    # every key optional; defaults are the fields of CageConfig
    pairs = [["m_c", "m_e"]]
    alphas = [0.25, 0.5, 1.0, 2.0]
    alpha = 1.0
    k = 10000
    ...

    [flow]                    # any other section is the experiment kind's own business: it is kept
    transforms = 5            # raw in ExperimentConfig.kind_options for the kind's module

The built-in experiments are ``cage/experiments/<name>.toml`` (read through importlib.resources, so
they work after a non-editable install). Every mistake is a :class:`cage_eval.errors.ConfigError`
naming the file, the field and what to do.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from cage_eval.errors import ConfigError

#: The experiment a bare ``cage-eval generate`` runs.
DEFAULT_EXPERIMENT = "digits"

#: Environment variable that overrides the default cache directory (trained generators).
CACHE_ENV = "CAGE_EVAL_CACHE"

CLASSIFIER_KINDS = ("logreg", "linsvm")
INTERVENTION_KINDS = ("linear", "conditional")
OUTCOME_KINDS = ("latent", "observation")
#: Every outcome variant ``[cage] outcomes`` accepts; ``OUTCOME_KINDS`` is the default list.
#: ``observation_conditional`` is eq. 9 with each treatment's direction orthogonal to the other
#: attribute of the pair (``h1`` with ``h2`` projected out, and vice versa; InterFaceGAN style).
OUTCOME_CHOICES = OUTCOME_KINDS + ("observation_conditional",)
NULL_KINDS = ("permutation", "random")
#: Call rules (:mod:`cage.engine.rules`); the first is the default.
RULES = ("controlled", "paper")
#: How ``[cage] level`` is corrected for the study's tests (one per pair and outcome variant).
CORRECTIONS = ("bonferroni", "none")
OUTCOME_SCALES = ("probability", "label")

#: An experiment name: the default run directory is ``runs/<name>``, so never a path.
_EXPERIMENT_NAME_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class CageConfig:
    """The CAGE part of an experiment (section ``[cage]``); see docs/engine.md for each choice.

    Attributes
    ----------
    pairs : tuple of (str, str)
        Attribute pairs ``(m1, m2)``; CAGE tests both orderings of each.
    alphas : tuple of float
        The alpha grid of the sweep (intervention strength, latent units; all > 0).
    alpha : float
        The headline alpha of ``directions.csv`` and of the null distributions.
    k : int
        Number of prior latents ``z ~ N(0, I)`` (Algorithm 1 step 3).
    n_null : int
        Null draws per null kind, attribute and outcome variant. ``"auto"`` in a file (the
        default there): :func:`auto_n_null`, chosen from the study's size.
    nulls : tuple of str
        Null constructions: ``permutation`` (shuffle the treatment labels, refit) and/or
        ``random`` (random unit directions).
    null : str
        The null whose p-values fill ``p_gate_12``, ``p_gate_21``, ``p_delta_tau`` and decide.
    classifier : str
        Latent classifier: ``logreg`` (logistic regression) or ``linsvm`` (linear SVM, Platt-calibrated).
    C : float
        Inverse L2 regularisation strength of the latent classifiers (scikit-learn's ``C``).
    intervention : str
        ``linear`` (``z +- alpha h``, eq. 4) or ``conditional`` (the normal with every attribute
        normal outside the pair projected out, InterFaceGAN style).
    outcomes : tuple of str
        ``latent`` (eq. 8) and/or ``observation`` (eq. 9, needs the experiment's observation
        classifier) and/or ``observation_conditional`` (eq. 9 with the other attribute of the pair
        held fixed: the treated normal with the other pair member's normal projected out).
    outcome_scale : str
        ``probability`` (soft outcome ``phi_e``) or ``label`` (hard ``1[phi_e > 0.5]``).
    test_fraction : float
        Held-out share of the annotated data for the separability check.
    level : float
        Significance level of the study (family-wise); :meth:`call_level` is what each call uses.
    correction : str
        ``bonferroni`` (the default: each call at ``level / (pairs x outcome variants)``) or
        ``none`` (each call at ``level``).
    falsified : str
        Empty, or why this experiment's arrows are known to fail a falsification (the same arrow
        with the data's mechanism reversed or removed): the controlled rule then reports ``?``
        with the reason ``falsified`` wherever it would draw an arrow.
    rule : str
        The call rule that fills ``direction``: ``controlled`` (an arrow only when it survives the
        geometry, centring, label-balance and alpha controls) or ``paper`` (the paper's reading).
        Both are always reported.
    min_accuracy : float
        Attributes whose held-out latent accuracy is below this are flagged ``separable = no``.
    k_null_observation : int
        Prior latents (the first ones) behind each observation-space null draw; the observed
        statistic for those p-values is recomputed on the same latents.
    k_observation : int
        Prior latents (the first ones) behind eq. 9's GATEs over the alpha grid and its factual
        outcomes; 0: all ``k`` (set it when a decode is expensive: eq. 8 keeps all ``k``).
    n_null_observation : int
        Null draws per kind (and rotation draws) in eq. 9; 0: ``n_null`` (eq. 8's draws cost no
        decodes, eq. 9's cost ``2 k_null_observation`` each).
    mmd_n : int
        Points per side in the MMD between conditional and counterfactual latents.
    mmd_permutations : int
        Permutations of the MMD test.
    baselines : bool
        Run the causal-discovery baselines (LiNGAM, ANM, NOTEARS; the ``baselines`` extra) on
        the attribute probabilities of the prior samples (paper Appendix D).
    """

    pairs: tuple[tuple[str, str], ...] = ()
    alphas: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
    alpha: float = 1.0
    k: int = 10_000
    n_null: int = 100
    nulls: tuple[str, ...] = NULL_KINDS
    null: str = "permutation"
    classifier: str = "logreg"
    C: float = 1.0
    intervention: str = "linear"
    outcomes: tuple[str, ...] = OUTCOME_KINDS
    outcome_scale: str = "probability"
    test_fraction: float = 0.25
    level: float = 0.05
    rule: str = RULES[0]
    min_accuracy: float = 0.75
    k_null_observation: int = 2000
    k_observation: int = 0
    n_null_observation: int = 0
    mmd_n: int = 500
    mmd_permutations: int = 200
    baselines: bool = True
    correction: str = CORRECTIONS[0]
    falsified: str = ""
    n_null_auto: bool = False

    @property
    def tests(self) -> int:
        """The study's calls: one per pair and outcome variant."""
        return max(1, len(self.pairs) * len(self.outcomes))

    def call_level(self) -> float:
        """The level each call's tests use: ``level`` corrected for :attr:`tests`."""
        return self.level / self.tests if self.correction == "bonferroni" else self.level


def auto_n_null(tests: int, level: float, correction: str = CORRECTIONS[0]) -> int:
    """Null draws so that an arrow never rests on the edge of a p-value's resolution.

    The smallest empirical p of ``n`` draws is ``1 / (n + 1)``; the call level is ``level / tests``
    (Bonferroni) or ``level``. The size returned is the smallest ``n`` with
    ``2 / (n + 1) <= call level``: a statistic beaten by one null draw can still pass, so the
    smallest attainable p is at most half the corrected level. One pair in two variants at 0.05:
    79 draws; three pairs in two variants: 239.
    """
    call = level / max(1, tests) if correction == "bonferroni" else level
    return max(1, math.ceil(2.0 / call - 1.0 - 1e-9))


@dataclass(frozen=True)
class ExperimentConfig:
    """A resolved experiment: common fields, the CAGE settings and the kind's raw sections.

    Attributes
    ----------
    name, kind : str
        Experiment name and kind (:mod:`cage.experiments.registry` finds its module).
    seed : int
        Master seed; every random stage derives its own seed from it.
    cage : CageConfig
        The ``[cage]`` section.
    kind_options : dict
        Every other section, raw (``{"flow": {...}, "data": {...}}``), validated by the kind module.
    source : str
        Where the config came from (``built-in:mog`` or a file path), for messages and the manifest.
    description : str
        One line for people.
    """

    name: str
    kind: str
    seed: int = 0
    cage: CageConfig = field(default_factory=CageConfig)
    kind_options: Mapping[str, Any] = field(default_factory=dict)
    source: str = "<memory>"
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain JSON-serialisable data (written to ``manifest.json``)."""
        cage = dataclasses.asdict(self.cage)
        cage["pairs"] = [list(p) for p in self.cage.pairs]
        for key in ("alphas", "nulls", "outcomes"):
            cage[key] = list(cage[key])
        return {
            "experiment": {
                "name": self.name,
                "kind": self.kind,
                "seed": self.seed,
                "description": self.description,
                "source": self.source,
            },
            "cage": cage,
            **{k: _plain(v) for k, v in self.kind_options.items()},
        }

    def option(self, section: str, key: str, default: Any) -> Any:
        """A raw kind option ``[section] key``, or ``default`` when absent."""
        return dict(self.kind_options.get(section, {})).get(key, default)

    def where(self, section: str, key: str) -> str:
        """``<source> [section] key`` for error messages."""
        return f"{self.source}: [{section}] {key}"


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# --------------------------------------------------------------------------- loading


def builtin_experiments() -> list[str]:
    """Names of the built-in experiments (``cage/experiments/*.toml``)."""
    root = resources.files("cage") / "experiments"
    return sorted(p.name[: -len(".toml")] for p in root.iterdir() if p.name.endswith(".toml"))


def default_cache_dir() -> Path:
    """``$CAGE_EVAL_CACHE``, else ``~/.cache/cage-eval``: where trained generators are kept."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "cage-eval"


def load_experiment(
    name_or_path: str | os.PathLike[str],
    *,
    overrides: Sequence[str] = (),
    seed: int | None = None,
) -> ExperimentConfig:
    """Load and validate an experiment.

    Parameters
    ----------
    name_or_path : str or path
        A built-in name (``mog``) or a path to a ``.toml`` file.
    overrides : sequence of str
        ``section.key=value`` items applied on top of the file; ``value`` is parsed as a TOML value
        (``cage.k=2000``, ``cage.alphas=[0.5,1]``, ``flow.steps=100``), else taken as a string.
    seed : int, optional
        Replaces ``[experiment] seed``.

    Raises
    ------
    ConfigError
        Unknown experiment, unreadable or malformed TOML, or an invalid field.
    """
    text, source = _read_source(name_or_path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: malformed TOML ({exc}); fix the file") from None
    for item in overrides:
        _apply_override(raw, item, source)
    if seed is not None:
        raw.setdefault("experiment", {})["seed"] = seed
    return config_from_dict(raw, source=source)


def _read_source(name_or_path: str | os.PathLike[str]) -> tuple[str, str]:
    text_name = os.fspath(name_or_path)
    looks_like_path = text_name.endswith(".toml") or os.sep in text_name or "/" in text_name
    if looks_like_path:
        path = Path(text_name)
        if not path.is_file():
            raise ConfigError(f"{path}: no such experiment file; give an existing .toml file or one "
                              f"of the built-in experiments: {', '.join(builtin_experiments())}")
        try:
            return path.read_text(encoding="utf-8"), str(path)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: unreadable ({exc}); give a UTF-8 TOML file") from None
    names = builtin_experiments()
    if text_name not in names:
        raise ConfigError(f"unknown experiment {text_name!r}; choose one of {', '.join(names)} "
                          "or give a path to a .toml file")
    res = resources.files("cage") / "experiments" / f"{text_name}.toml"
    return res.read_text(encoding="utf-8"), f"built-in:{text_name}"


def _apply_override(raw: dict[str, Any], item: str, source: str) -> None:
    key, sep, value = item.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or not section or not name:
        raise ConfigError(f"override {item!r}: expected section.key=value, e.g. cage.k=2000")
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()
    target = raw.setdefault(section, {})
    if not isinstance(target, dict):
        raise ConfigError(f"override {item!r}: {source} has no section [{section}]")
    target[name] = parsed


def config_from_dict(raw: Mapping[str, Any], *, source: str = "<memory>") -> ExperimentConfig:
    """Validate a parsed TOML document (see module docstring) into an :class:`ExperimentConfig`."""
    raw = dict(raw)
    exp = _section(raw, "experiment", source, required=True)
    cage_raw = _section(raw, "cage", source, required=False)
    known_exp = {"name", "kind", "seed", "description"}
    _unknown_keys(exp, known_exp, "experiment", source)
    name = _get(exp, "name", str, "experiment", source)
    if not _EXPERIMENT_NAME_RE.fullmatch(name) or name in (".", ".."):
        raise ConfigError(f"{source}: [experiment] name = {name!r}: must be a simple name "
                          "(letters, digits, '-', '_' and '.', not starting with '.'): it names "
                          "the run directory runs/<name>; e.g. name = \"my-study_2\"")
    kind = _get(exp, "kind", str, "experiment", source)
    if not _NAME_RE.match(kind):
        raise ConfigError(f"{source}: [experiment] kind = {kind!r} is not a valid kind name; "
                          "use letters, digits and underscores (e.g. \"mog\")")
    seed = _get(exp, "seed", int, "experiment", source, default=0)
    if seed < 0:
        raise ConfigError(f"{source}: [experiment] seed = {seed} must be >= 0")
    description = _get(exp, "description", str, "experiment", source, default="")
    cage = _cage_from_dict(cage_raw, source)
    kind_options = {k: v for k, v in raw.items() if k not in ("experiment", "cage")}
    for section, body in kind_options.items():
        if not isinstance(body, dict):
            raise ConfigError(f"{source}: top-level key {section!r} must be a [section] table")
    return ExperimentConfig(name=name, kind=kind, seed=seed, cage=cage, kind_options=kind_options,
                            source=source, description=description)


def _section(raw: Mapping[str, Any], name: str, source: str, *, required: bool) -> dict[str, Any]:
    if name not in raw:
        if required:
            raise ConfigError(f"{source}: missing section [{name}]; add it (see docs/engine.md)")
        return {}
    body = raw[name]
    if not isinstance(body, dict):
        raise ConfigError(f"{source}: [{name}] must be a table")
    return dict(body)


def _unknown_keys(body: Mapping[str, Any], known: set[str], section: str, source: str) -> None:
    for key in body:
        if key not in known:
            raise ConfigError(f"{source}: [{section}] {key}: unknown field; known fields are "
                              f"{', '.join(sorted(known))}")


_MISSING = object()


def _get(body: Mapping[str, Any], key: str, typ: type, section: str, source: str,
         default: Any = _MISSING) -> Any:
    if key not in body:
        if default is _MISSING:
            raise ConfigError(f"{source}: [{section}] {key}: missing; add it")
        return default
    value = body[key]
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise ConfigError(f"{source}: [{section}] {key} = {value!r}: expected {typ.__name__}")
    return value


def _cage_from_dict(body: dict[str, Any], source: str) -> CageConfig:
    defaults = CageConfig()
    known = {f.name for f in dataclasses.fields(CageConfig)} - {"n_null_auto"}
    _unknown_keys(body, known, "cage", source)

    def where(key: str) -> str:
        return f"{source}: [cage] {key}"

    def get(key: str, typ: type) -> Any:
        return _get(body, key, typ, "cage", source, default=getattr(defaults, key))

    pairs_raw = body.get("pairs", [])
    if not isinstance(pairs_raw, list) or not pairs_raw:
        raise ConfigError(f"{where('pairs')}: give at least one attribute pair, e.g. "
                          'pairs = [["m_c", "m_e"]]')
    pairs = []
    for p in pairs_raw:
        if (not isinstance(p, list) or len(p) != 2 or not all(isinstance(a, str) for a in p)
                or p[0] == p[1]):
            raise ConfigError(f"{where('pairs')}: {p!r} is not a pair of two different attribute "
                              'names; write e.g. ["thick", "bright"]')
        for a in p:
            if not _NAME_RE.match(a):
                raise ConfigError(f"{where('pairs')}: attribute {a!r}: use letters, digits, "
                                  "underscores")
        pairs.append((p[0], p[1]))
    alphas_raw = body.get("alphas", list(defaults.alphas))
    if not isinstance(alphas_raw, list) or not alphas_raw:
        raise ConfigError(f"{where('alphas')}: give a non-empty list of positive numbers")
    alphas = []
    for a in alphas_raw:
        if isinstance(a, bool) or not isinstance(a, (int, float)):
            raise ConfigError(f"{where('alphas')}: {a!r} is not a number")
        _check_alpha(float(a), where("alphas"))
        alphas.append(float(a))
    if len(set(alphas)) != len(alphas):
        raise ConfigError(f"{where('alphas')}: values repeat; list each alpha once")
    alpha = get("alpha", float)
    _check_alpha(alpha, where("alpha"))
    k = get("k", int)
    if k < 2:
        raise ConfigError(f"{where('k')} = {k}: need at least 2 prior latents (use e.g. 10000)")
    n_null_auto = body.get("n_null", "auto") == "auto"
    n_null = 0 if n_null_auto else get("n_null", int)
    if not n_null_auto and n_null < 1:
        raise ConfigError(f"{where('n_null')} = {n_null}: need at least 1 null draw (use e.g. 100) "
                          'or "auto"')
    nulls = tuple(_choices(body.get("nulls", list(defaults.nulls)), NULL_KINDS, where("nulls")))
    null = get("null", str)
    if null not in nulls:
        raise ConfigError(f"{where('null')} = {null!r}: must be one of nulls = {list(nulls)}")
    classifier = get("classifier", str)
    _one_of(classifier, CLASSIFIER_KINDS, where("classifier"))
    C = get("C", float)
    if not (C > 0 and math.isfinite(C)):
        raise ConfigError(f"{where('C')} = {C}: must be a positive number (e.g. 1.0)")
    intervention = get("intervention", str)
    _one_of(intervention, INTERVENTION_KINDS, where("intervention"))
    outcomes = tuple(_choices(body.get("outcomes", list(defaults.outcomes)), OUTCOME_CHOICES,
                              where("outcomes")))
    outcome_scale = get("outcome_scale", str)
    _one_of(outcome_scale, OUTCOME_SCALES, where("outcome_scale"))
    test_fraction = get("test_fraction", float)
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"{where('test_fraction')} = {test_fraction}: must be in (0, 1), e.g. 0.25")
    level = get("level", float)
    if not 0.0 < level < 1.0:
        raise ConfigError(f"{where('level')} = {level}: must be in (0, 1), e.g. 0.05")
    rule = get("rule", str)
    _one_of(rule, RULES, where("rule"))
    min_accuracy = get("min_accuracy", float)
    if not 0.0 <= min_accuracy <= 1.0:
        raise ConfigError(f"{where('min_accuracy')} = {min_accuracy}: must be in [0, 1]")
    k_null_observation = get("k_null_observation", int)
    if k_null_observation < 2:
        raise ConfigError(f"{where('k_null_observation')} = {k_null_observation}: must be >= 2")
    k_observation = get("k_observation", int)
    if k_observation != 0 and k_observation < 2:
        raise ConfigError(f"{where('k_observation')} = {k_observation}: must be 0 (all k) or >= 2")
    correction = get("correction", str)
    _one_of(correction, CORRECTIONS, where("correction"))
    if n_null_auto:
        n_null = auto_n_null(len(pairs) * len(outcomes), level, correction)
    n_null_observation = get("n_null_observation", int)
    if n_null_observation < 0 or n_null_observation > n_null:
        raise ConfigError(f"{where('n_null_observation')} = {n_null_observation}: must be 0 "
                          f"(n_null) or 1 .. n_null = {n_null}")
    mmd_n = get("mmd_n", int)
    if mmd_n < 2:
        raise ConfigError(f"{where('mmd_n')} = {mmd_n}: need at least 2 points per side")
    mmd_permutations = get("mmd_permutations", int)
    if mmd_permutations < 1:
        raise ConfigError(f"{where('mmd_permutations')} = {mmd_permutations}: must be >= 1")
    baselines = get("baselines", bool)
    falsified = get("falsified", str).strip()
    return CageConfig(pairs=tuple(pairs), alphas=tuple(alphas), alpha=alpha, k=k, n_null=n_null,
                      nulls=nulls, null=null, classifier=classifier, C=C,
                      intervention=intervention, outcomes=outcomes, outcome_scale=outcome_scale,
                      test_fraction=test_fraction, level=level, rule=rule, min_accuracy=min_accuracy,
                      k_null_observation=k_null_observation, k_observation=k_observation,
                      n_null_observation=n_null_observation, mmd_n=mmd_n,
                      mmd_permutations=mmd_permutations, baselines=baselines,
                      correction=correction, falsified=falsified, n_null_auto=n_null_auto)


def _check_alpha(alpha: float, where: str) -> None:
    if not (alpha > 0 and math.isfinite(alpha)):
        raise ConfigError(f"{where}: alpha = {alpha} must be a positive finite number "
                          "(the intervention strength, e.g. 1.0)")


def _one_of(value: str, allowed: Sequence[str], where: str) -> None:
    if value not in allowed:
        raise ConfigError(f"{where} = {value!r}: choose one of {', '.join(allowed)}")


def _choices(value: Any, allowed: Sequence[str], where: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: give a non-empty list drawn from {', '.join(allowed)}")
    for v in value:
        if not isinstance(v, str) or v not in allowed:
            raise ConfigError(f"{where}: {v!r} is not one of {', '.join(allowed)}")
    if len(set(value)) != len(value):
        raise ConfigError(f"{where}: values repeat; list each once")
    return list(value)
