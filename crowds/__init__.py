"""What every crowd backend shares (answer validation :mod:`answers`, a simulated crowd
:mod:`simulated`) and the backends other than Amazon Mechanical Turk (:mod:`crowds.turkle`,
:mod:`crowds.prolific`).
Backends never import each other; what several backends have published is read by the command
line (:mod:`cage_eval.cli.published`)."""

__all__ = ["answers", "simulated"]
