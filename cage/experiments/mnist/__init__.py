"""Morpho-MNIST on real MNIST digits: the data (:mod:`data`), the shipped Glow and CNN
(:mod:`models`, files in ``weights/``), the morphometric judge (:mod:`judge`) and the experiment
kind (:mod:`kind`)."""

__all__ = ["data", "judge", "kind", "models"]
