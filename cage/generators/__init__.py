"""Generators CAGE can probe: the protocol (:mod:`cage.generators.base`), the project's own models
(a zuko MAF in :mod:`cage.generators.flow`, a convolutional VAE in :mod:`cage.generators.vae`),
loading from a ``[generator]`` section (:mod:`cage.generators.registry`) and the reference adapters
it offers (torch modules, NVIDIA and rosinality StyleGAN2 through the user's clone, zuko flows,
the project's VAE). Heavy or foreign code is imported only when an adapter is used."""

__all__ = ["base", "clone", "device", "flow", "flow_image", "output", "registry", "stylegan2_base", "stylegan2_nvidia", "stylegan2_rosinality", "torch_module", "vae", "zuko_flow"]
