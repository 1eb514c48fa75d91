"""Algorithm 1 and nothing else (docs/method.md §2–§3): latent classifiers, interventions,
generative treatment effects (GATE, delta tau, the call rule), null distributions and MMD.

Nothing here knows about experiments, generators' training or files.
"""

__all__ = ["classifiers", "effects", "geometry", "interventions", "mmd", "nulls", "rules", "seeds", "variants"]
