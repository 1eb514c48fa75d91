"""cage-eval application shell: the CLI, the run-directory schema and the error classes.

Importing this package is cheap: nothing here imports torch, pandas or boto3.
"""

__version__ = "0.1.0"
