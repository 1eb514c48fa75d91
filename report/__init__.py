"""The run's HTML page: what it shows read from the run directory (:mod:`data`, :mod:`answers`),
plain-language verdicts (:mod:`explain`) and the rendering (:mod:`html`). No torch here."""

__all__ = ["answers", "data", "explain", "html"]
