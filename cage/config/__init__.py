"""Configuration: the experiment config read from TOML (:mod:`experiment`) and the one way to read
and check a TOML section (:mod:`sections`)."""

__all__ = ["experiment", "sections"]
