"""Where and how the work runs: torchrun ranks and units of work (:mod:`distributed`), per-unit
checkpoints (:mod:`checkpoints`), torch threads and determinism (:mod:`runtime`)."""

__all__ = ["checkpoints", "distributed", "runtime"]
