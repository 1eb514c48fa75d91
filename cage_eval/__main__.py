"""``python -m cage_eval`` (and ``torchrun -m cage_eval``): the same as the ``cage-eval`` script."""

from cage_eval.cli import main

main()
