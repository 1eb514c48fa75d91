"""Crowd backends: where the realism judgements come from (shared code at this level)."""
