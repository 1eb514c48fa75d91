"""Counterfactual image pairs: making them (:mod:`make`), writing them with their contact sheets
(:mod:`output`), how different their two images are (:mod:`difference`), and encoding images
as PNG (:mod:`images`)."""

__all__ = ["difference", "images", "make", "output"]
