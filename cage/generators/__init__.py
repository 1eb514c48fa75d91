"""Generators CAGE can probe: the protocol (:mod:`cage.generators.base`), the project's own models
(a zuko MAF in :mod:`cage.generators.flow`, a convolutional VAE in :mod:`cage.generators.vae`)."""
