"""From annotations to the paper's Table 2: ingest, counts, exact tests, corrections, agreement,
robustness and tables. Never imports torch or cage."""

__all__ = ["coverage", "escaping", "exclusions", "ingest", "join", "plan", "power", "report", "robustness", "stats", "tables", "workers"]
