"""The built-in digits experiment (sklearn digits, thickness -> intensity): the data
(:mod:`data`), morphometrics (:mod:`morpho`), the observation classifier (:mod:`obs_classifier`),
the shipped weights (:mod:`models`, files in ``weights/``), the experiment kind (:mod:`kind`) and
the shipped VAE as a ``[generator]`` adapter (:mod:`vae_adapter`, ``adapter = "cage_vae"``)."""

__all__ = ["data", "kind", "models", "morpho", "obs_classifier", "vae_adapter"]
