"""The contract between the CAGE pipeline and an experiment kind (``mog``, ``digits``, ...).

An experiment is a TOML file (the built-ins live in ``cage/experiments/``, see :mod:`cage.config.experiment`)
whose ``[experiment] kind`` names a kind module (found by :mod:`cage.experiments.registry`). That
module provides

``setup(config: ExperimentConfig, *, cache_dir: pathlib.Path) -> ExperimentSetup``
    validate its own sections (``config.kind_options``; raise ``cage_eval.errors.ConfigError``
    naming ``config.where(section, key)``), train or load the generator (cache it under
    ``cache_dir``), encode the annotated data, return everything CAGE needs;

``setup_worker(config: ExperimentConfig, *, cache_dir: pathlib.Path) -> ExperimentSetup``  (optional)
    what the ranks other than 0 of a torchrun job call instead of ``setup`` (after rank 0's setup,
    so that whatever it trained is in the cache): only ``generator`` and
    ``observation_classifier`` are used, so labels and encodings can be skipped. Without it they
    call ``setup`` (docs/distributed.md).

``finish(setup: ExperimentSetup, result: CageResult, run_dir: pathlib.Path, config) -> dict``  (optional)
    called after the engine has written its files into the (staging) run directory; writes extra
    outputs (e.g. counterfactual pairs) and returns entries merged into ``manifest.json`` (keys the
    engine writes itself are refused).

``result`` is a :class:`cage.run.pipeline.CageResult` (latent classifiers, per-pair directions,
intervention directions); interventions for pair making are in :mod:`cage.engine.interventions`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import torch

from cage.generators.base import LatentGenerator

if TYPE_CHECKING:
    from cage.config.experiment import ExperimentConfig
    from cage.run.result import CageResult

__all__ = ["ExperimentKind", "ExperimentSetup", "Kind"]


@dataclass
class ExperimentSetup:
    """What an experiment kind hands to the CAGE engine.

    Attributes
    ----------
    generator : LatentGenerator
        The trained generator (encode available for flows / VAEs).
    data_latents : np.ndarray, shape (n, d)
        ``ENC(x_D)``: encoded annotated observations, used to fit the latent classifiers.
    attributes : dict[str, np.ndarray]
        Binary labels (0/1, shape ``(n,)``) per attribute, aligned with ``data_latents``.
    observation_classifier : callable or None
        ``f(x: torch.Tensor (n, *obs_shape)) -> dict[str, np.ndarray]`` of ``P(attribute = 1)`` per
        attribute, for the eq. 9 variant; None when the experiment has none. Called under
        ``torch.no_grad()`` on decoded counterfactuals, in batches.
    info : dict
        Extra, JSON-serialisable facts for the manifest (training losses, dataset sizes, ...).
    observation_accuracy : dict[str, float]
        Held-out accuracy of the observation classifier per attribute (reported in classifiers.csv).
    observation_sizes : dict[str, tuple[int, int]]
        ``(n_train, n_test)`` behind each observation accuracy.
    """

    generator: LatentGenerator
    data_latents: np.ndarray
    attributes: dict[str, np.ndarray]
    observation_classifier: Callable[[torch.Tensor], dict[str, np.ndarray]] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    observation_accuracy: dict[str, float] = field(default_factory=dict)
    observation_sizes: dict[str, tuple[int, int]] = field(default_factory=dict)


@runtime_checkable
class ExperimentKind(Protocol):
    """What a kind module must provide: ``setup`` (``setup_worker`` and ``finish`` are optional and
    reached through :class:`Kind`)."""

    def setup(self, config: ExperimentConfig, *, cache_dir: Path) -> ExperimentSetup: ...


@dataclass(frozen=True)
class Kind:
    """A kind module seen through the contract of this module's docstring.

    The pipeline calls these three methods and never looks into the module itself: an optional
    function the module lacks has its documented default here, once.
    """

    name: str
    module: ModuleType

    def setup(self, config: ExperimentConfig, *, cache_dir: Path) -> ExperimentSetup:
        return self.module.setup(config, cache_dir=cache_dir)

    def setup_worker(self, config: ExperimentConfig, *, cache_dir: Path) -> ExperimentSetup:
        """The kind's ``setup_worker``, or its ``setup`` when it has none."""
        fn = getattr(self.module, "setup_worker", None) or self.module.setup
        return fn(config, cache_dir=cache_dir)

    @property
    def makes_outputs(self) -> bool:
        """Whether the kind writes outputs of its own after the engine (a ``finish``)."""
        return callable(getattr(self.module, "finish", None))

    def finish(self, setup: ExperimentSetup, result: CageResult, run_dir: Path,
               config: ExperimentConfig) -> dict[str, Any]:
        """The kind's ``finish`` (its manifest entries), or no entries when it has none."""
        if not self.makes_outputs:
            return {}
        return dict(self.module.finish(setup, result, run_dir, config) or {})
