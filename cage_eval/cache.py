"""What cage-eval reads back from its cache directory must be the user's own.

A cache (``~/.cache/cage-eval``, ``$CAGE_EVAL_CACHE`` or ``--cache-dir``) holds datasets and
trained weights that shape every number of a run, so, as ssh's StrictModes does for
``~/.ssh``, a cache directory or entry that another user could have written is refused with one
``Error:`` line saying what to do: it must belong to the user running cage-eval and be writable
by nobody else. Group write is accepted only for the user's private group (a group named like the
user, with no other members); a directory with the sticky bit (``/tmp``) is accepted as the
parent of an entry, since nobody else can replace what is in it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cage_eval.errors import CacheError


def _private_group(gid: int, uid: int) -> bool:
    try:
        import grp
        import pwd

        group, user = grp.getgrgid(gid), pwd.getpwuid(uid)
    except (ImportError, KeyError):
        return False
    return group.gr_name == user.pw_name and user.pw_gid == gid \
        and set(group.gr_mem) <= {user.pw_name}


def _refuse(path: Path, parent: bool) -> None:
    try:
        st = path.stat()
    except OSError:
        return  # absent: nothing to trust yet
    if parent and stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX:
        return
    uid = os.geteuid()
    what = "the cache directory" if stat.S_ISDIR(st.st_mode) else "the cache file"
    if st.st_uid != uid:
        raise CacheError(f"{path}: {what} belongs to another user (uid {st.st_uid}), so its "
                         "contents cannot be trusted; point --cache-dir or CAGE_EVAL_CACHE at a "
                         "directory of your own")
    group_write = st.st_mode & stat.S_IWGRP and not _private_group(st.st_gid, uid)
    if st.st_mode & stat.S_IWOTH or group_write:
        raise CacheError(f"{path}: {what} is writable by other users (mode "
                         f"{stat.S_IMODE(st.st_mode):o}), so its contents cannot be trusted; "
                         f"run `chmod go-w {path}` (and check what is in it) or use another "
                         "cache directory")


def check_cache_path(path: str | os.PathLike[str]) -> None:
    """Raise :class:`~cage_eval.errors.CacheError` when ``path`` (a cache entry or directory),
    the directory holding it, or (for a directory) anything directly in it belongs to another
    user or is writable by another user."""
    path = Path(path).absolute()
    _refuse(path, parent=False)
    _refuse(path.parent, parent=True)
    if path.is_dir():
        for entry in sorted(path.iterdir()):
            _refuse(entry, parent=False)
