"""CAGE numerics: generators and adapters, datasets, latent classifiers, interventions, effects
(GATE, delta tau), null distributions, MMD and counterfactual pair construction.

No click, boto3 or jinja2 here; nothing prints.
"""
