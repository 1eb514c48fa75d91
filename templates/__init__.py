"""Default HIT templates (data), installed as the package ``cage_eval_templates``."""
