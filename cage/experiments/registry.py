"""Finding an experiment kind's module by name.

``[experiment] kind`` is a built-in kind (:data:`BUILTIN_KINDS`) or the name of an entry point in the
group :data:`ENTRY_POINT_GROUP`, so a package can add a kind without changing cage-eval::

    [project.entry-points."cage_eval.experiments"]
    my_kind = "my_package.my_kind"

A kind module provides ``setup`` and optionally ``finish`` (:mod:`cage.experiments.base`).
"""

from __future__ import annotations

import importlib
from importlib import metadata

from cage.experiments.base import ExperimentKind, Kind
from cage_eval.errors import ConfigError

__all__ = ["BUILTIN_KINDS", "ENTRY_POINT_GROUP", "kind_names", "load_kind"]

#: The kinds that ship with cage-eval, each a module of this package.
BUILTIN_KINDS: dict[str, str] = {
    "digits": "cage.experiments.digits.kind",
    "generator": "cage.experiments.generator",
    "mog": "cage.experiments.mog",
    "morphomnist": "cage.experiments.mnist.kind",
    "synthetic": "cage.experiments.synthetic",
}

#: Entry-point group through which other packages register experiment kinds.
ENTRY_POINT_GROUP = "cage_eval.experiments"


def kind_names() -> list[str]:
    """Every kind this installation knows: built-in, then entry points."""
    extra = [ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)]
    return sorted(BUILTIN_KINDS) + sorted(set(extra) - set(BUILTIN_KINDS))


def load_kind(kind: str) -> Kind:
    """The module implementing ``kind``, seen through the kind contract (:class:`Kind`).

    Raises
    ------
    ConfigError
        No built-in kind and no entry point has that name, or the entry point cannot be imported.
    """
    if kind in BUILTIN_KINDS:
        return Kind(kind, importlib.import_module(BUILTIN_KINDS[kind]))
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == kind:
            try:
                module = ep.load()
            except ImportError as exc:
                raise ConfigError(f"[experiment] kind = {kind!r}: its entry point {ep.value!r} "
                                  f"cannot be imported ({exc}); install the package that provides "
                                  "it") from None
            if not isinstance(module, ExperimentKind):
                raise ConfigError(f"[experiment] kind = {kind!r}: entry point {ep.value!r} has no "
                                  "setup(config, *, cache_dir) function")
            return Kind(kind, module)
    raise ConfigError(f"[experiment] kind = {kind!r}: no such experiment kind; choose one of "
                      f"{', '.join(kind_names())}")
