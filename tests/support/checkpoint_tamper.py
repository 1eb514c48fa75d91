"""Editing checkpoint files as an attacker (or an accident) would (docs/distributed.md)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from cage.compute import checkpoints


def rewrite(path: Path, change, *, forge: bool) -> None:
    """Apply ``change(name, array) -> array`` to every unit array of a checkpoint file and save
    it again; with ``forge`` the unit digests are recomputed as a forger who read the code would
    (so only the checks on the values themselves can catch it)."""
    with np.load(path, allow_pickle=False) as z:
        entries = {k: z[k] for k in z.files}
    meta = json.loads(bytes(entries[checkpoints.META]).decode())
    units: dict[str, dict[str, np.ndarray]] = {}
    for entry, array in entries.items():
        if entry == checkpoints.META:
            continue
        key, _, name = entry.partition("__")
        if name != checkpoints.DIGEST:
            entries[entry] = change(name, array)
            units.setdefault(key, {})[name] = entries[entry]
    if forge:
        for key, arrays in units.items():
            digest = checkpoints.unit_digest(meta["binding"], key, arrays)
            entries[f"{key}__{checkpoints.DIGEST}"] = np.frombuffer(digest.encode(), np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **entries)
    path.write_bytes(buf.getvalue())
