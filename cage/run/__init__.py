"""One CAGE run: :func:`pipeline.run_experiment` (Algorithm 1 over every pair and variant), the result
record (:mod:`result`), eq. 9 scoring reused from :mod:`cage.engine.variants`, the run's tables and
npz (:mod:`tables`), its plots (:mod:`plots`) and the causal-discovery baselines (:mod:`baselines`)."""

__all__ = ["baselines", "pipeline", "plots", "result", "tables"]
