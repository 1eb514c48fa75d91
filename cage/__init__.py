"""CAGE numerics, by role: Algorithm 1 (:mod:`cage.engine`), generators and their adapters
(:mod:`cage.generators`), attribute labels (:mod:`cage.labels`), experiment kinds and their data sets
(:mod:`cage.experiments`), one run end to end (:mod:`cage.run`), where the work runs
(:mod:`cage.compute`), counterfactual pairs (:mod:`cage.pairs`) and configuration
(:mod:`cage.config`).

No click, boto3, jinja2, HIT wording or crowd here; nothing prints.
"""

__all__ = ["compute", "config", "engine", "experiments", "generators", "labels", "pairs", "run"]
