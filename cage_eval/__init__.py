"""cage-eval's foundation and command line.

The foundation (:mod:`cage_eval.errors`, :mod:`cage_eval.runs`, :mod:`cage_eval.files`) uses the
standard library only; every library package (``cage``, ``report``, ``hitgen``, ``mturk``,
``crowds``, ``analysis``) builds
on it. The command line (:mod:`cage_eval.cli`) sits on top of everything and nothing imports it.
Importing this package is cheap: nothing here imports torch, pandas or boto3.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "errors", "files", "progress", "runs"]
