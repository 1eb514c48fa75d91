"""``python -m cage_eval.cli``: the same as the ``cage-eval`` console script."""

from cage_eval.cli import main

main()
