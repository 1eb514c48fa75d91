"""Experiment kinds (one module each) and the built-in experiment files (``*.toml``).

:mod:`cage.experiments.base` is the contract between the pipeline and a kind;
:mod:`cage.experiments.registry` finds a kind's module by name.
"""

__all__ = ["base", "digits", "generator", "mnist", "mog", "registry", "synthetic"]
