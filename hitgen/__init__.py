"""HIT rendering: jinja2 templates for each target (MTurk HTMLQuestion, Turkle fragment, requester
batch), blinded image assets, counterbalanced placement and attention checks."""

__all__ = ["batch", "hosting", "items", "preview", "render", "texts"]
