"""Counterfactual image pairs: making them (:mod:`make`), writing them with their contact sheets
(:mod:`output`), and encoding images as PNG (:mod:`images`)."""

__all__ = ["images", "make", "output"]
