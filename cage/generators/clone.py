"""Running code from a user's clone of a generator's repository, without vendoring it.

NVIDIA's StyleGAN2-ADA / StyleGAN3 pickles name their classes' modules (``torch_utils``,
``dnnlib``) and carry their source, which imports more of the repository; rosinality's checkpoints
need its ``model.py``. cage-eval ships none of that code (NVIDIA's licence is non-commercial, and
rosinality's ``op`` package compiles CUDA code at import): the user points ``repo_path`` at their
own clone. :func:`modules_from_clone` puts the clone first on ``sys.path`` only while loading and
sets aside same-named modules already imported from elsewhere, so two clones (or a clone and an
unrelated ``model`` module) never mix; afterwards ``sys.path`` and ``sys.modules`` are as before.
The loaded objects keep working: their functions hold their own module globals.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path


def _top(name: str) -> str:
    return name.split(".", 1)[0]


@contextlib.contextmanager
def modules_from_clone(repo: Path, packages: Sequence[str]) -> Iterator[None]:
    """Make the top-level ``packages`` of the clone at ``repo`` importable inside the block.

    Parameters
    ----------
    repo : Path
        The clone's root folder (the one holding ``dnnlib/`` and ``torch_utils/``, or
        ``model.py`` and ``op/``).
    packages : sequence of str
        Top-level module names that must come from the clone.
    """
    root = str(Path(repo).resolve())
    wanted = set(packages)
    stash = {name: mod for name, mod in sys.modules.items() if _top(name) in wanted}
    for name in stash:
        del sys.modules[name]
    sys.path.insert(0, root)
    importlib.invalidate_caches()
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(root)
        for name in [n for n in sys.modules if _top(n) in wanted]:
            del sys.modules[name]
        sys.modules.update(stash)
        importlib.invalidate_caches()
