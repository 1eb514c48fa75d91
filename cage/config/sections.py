"""Reading one raw TOML section of an experiment: typed values, file paths and Python references.

Experiment kinds keep their own sections raw (``ExperimentConfig.kind_options``). A
:class:`Section` reads one of them with typed getters whose messages name the file, the section
and the key (``my.toml: [generator] batch_size = 'x': expected an integer``), resolves paths
(relative ones against the experiment file's folder, or the working directory for built-in
experiments) and imports ``"module:attribute"`` references. :meth:`Section.finish` refuses keys
that nobody read, so a typo is an error, not a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cage.config.experiment import ExperimentConfig
from cage_eval.errors import ConfigError, InputFileError, UserCodeError

_MISSING: Any = object()


def base_dir_of(source: str) -> Path:
    """Where relative paths of an experiment resolve: the TOML file's folder, else the working
    directory (built-in experiments, configs built in memory)."""
    if source.startswith(("built-in:", "<")):
        return Path.cwd()
    return Path(source).resolve().parent


class Section:
    """Typed, checked access to one raw section (``[generator]``, ``[labels]``, ...).

    Parameters
    ----------
    body : mapping
        The section as parsed from TOML.
    source : str
        Where the experiment came from (``ExperimentConfig.source``), for messages and paths.
    name : str
        The section's name; nested tables are named ``labels.inversion``.
    """

    def __init__(self, body: Mapping[str, Any] | None, *, source: str, name: str) -> None:
        self.body = dict(body or {})
        self.source = source
        self.name = name
        self.base_dir = base_dir_of(source)
        self._read: set[str] = set()

    # ------------------------------------------------------------------ plumbing

    def where(self, key: str | None = None) -> str:
        """``<source>: [name] key`` for messages."""
        return f"{self.source}: [{self.name}]" + (f" {key}" if key else "")

    def has(self, key: str) -> bool:
        return key in self.body

    def _get(self, key: str, default: Any) -> Any:
        self._read.add(key)
        if key not in self.body:
            if default is _MISSING:
                raise ConfigError(f"{self.where(key)}: missing; add it (see docs/generators.md)")
            return default
        return self.body[key]

    def raw(self, key: str, default: Any = _MISSING) -> Any:
        """The value as written (marked as read), for a caller that checks it itself."""
        return self._get(key, default)

    def _bad(self, key: str, value: Any, expected: str) -> ConfigError:
        return ConfigError(f"{self.where(key)} = {value!r}: expected {expected}")

    def accept(self, keys: Iterable[str]) -> None:
        """Mark ``keys`` as known without reading them (keys of another mode of this section)."""
        self._read.update(keys)

    def finish(self) -> None:
        """Refuse every key that was not read or accepted."""
        unknown = sorted(set(self.body) - self._read)
        if unknown:
            raise ConfigError(f"{self.where(unknown[0])}: unknown field; known fields here are "
                              f"{', '.join(sorted(self._read))}")

    # ------------------------------------------------------------------ typed values

    def text(self, key: str, default: Any = _MISSING, *,
             choices: Sequence[str] | None = None) -> Any:
        """A string (or ``default``, which may be None)."""
        value = self._get(key, default)
        if value is default and key not in self.body:
            return value
        if not isinstance(value, str) or not value:
            raise self._bad(key, value, "a non-empty string")
        if choices is not None and value not in choices:
            raise ConfigError(f"{self.where(key)} = {value!r}: choose one of "
                              f"{', '.join(repr(c) for c in choices)}")
        return value

    def integer(self, key: str, default: Any = _MISSING, *, minimum: int | None = None,
                maximum: int | None = None) -> Any:
        value = self._get(key, default)
        if value is default and key not in self.body:
            return value
        if not isinstance(value, int) or isinstance(value, bool):
            raise self._bad(key, value, "an integer")
        if minimum is not None and value < minimum:
            raise ConfigError(f"{self.where(key)} = {value}: must be at least {minimum}")
        if maximum is not None and value > maximum:
            raise ConfigError(f"{self.where(key)} = {value}: must be at most {maximum}")
        return value

    def number(self, key: str, default: Any = _MISSING, *, minimum: float | None = None,
               maximum: float | None = None, exclusive_minimum: bool = False) -> Any:
        value = self._get(key, default)
        if value is default and key not in self.body:
            return value
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
            raise self._bad(key, value, "a number")
        value = float(value)
        low_bad = minimum is not None and (value <= minimum if exclusive_minimum else value < minimum)
        if low_bad or (maximum is not None and value > maximum):
            low = "" if minimum is None else ("> " if exclusive_minimum else ">= ") + f"{minimum:g}"
            high = "" if maximum is None else f"<= {maximum:g}"
            raise ConfigError(f"{self.where(key)} = {value:g}: must be "
                              f"{' and '.join(p for p in (low, high) if p)}")
        return value

    def flag(self, key: str, default: Any = _MISSING) -> Any:
        value = self._get(key, default)
        if value is default and key not in self.body:
            return value
        if not isinstance(value, bool):
            raise self._bad(key, value, "true or false")
        return value

    def numbers(self, key: str, default: Any = _MISSING, *, length: int | None = None,
                integers: bool = False) -> Any:
        """A list of numbers (a tuple is returned), optionally of a fixed ``length``."""
        value = self._get(key, default)
        if value is default and key not in self.body:
            return value
        kind = (int,) if integers else (int, float)
        ok = isinstance(value, list) and all(isinstance(v, kind) and not isinstance(v, bool)
                                             for v in value)
        if not ok or (length is not None and len(value) != length) or not value:
            what = "integers" if integers else "numbers"
            raise self._bad(key, value, f"a list of {length or 'one or more'} {what}")
        return tuple(int(v) if integers else float(v) for v in value)

    def points(self, key: str, default: Any = _MISSING, *, count: int | None = None) -> Any:
        """A list of 2-D points ``[[x, y], ...]`` (lists of floats), optionally ``count`` of them."""
        value = self._get(key, default)
        if value is default and key not in self.body:
            return value
        ok = isinstance(value, list) and bool(value) and all(
            isinstance(pt, list) and len(pt) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in pt)
            for pt in value)
        if not ok or (count is not None and len(value) != count):
            raise self._bad(key, value, f"a list of {count or 'one or more'} points [x, y]")
        return [[float(v) for v in pt] for pt in value]

    def texts(self, key: str, default: Any = _MISSING) -> Any:
        """A list of non-empty strings (a tuple is returned)."""
        value = self._get(key, default)
        if value is default and key not in self.body:
            return value
        if not isinstance(value, list) or not value or not all(
                isinstance(v, str) and v for v in value):
            raise self._bad(key, value, "a list of non-empty strings")
        return tuple(value)

    def table(self, key: str) -> dict[str, Any]:
        """A nested table (``{}`` when absent)."""
        value = self._get(key, {})
        if not isinstance(value, dict):
            raise self._bad(key, value, "a table, e.g. { width = 64 }")
        return dict(value)

    def section(self, key: str) -> Section:
        """A nested table as its own :class:`Section` (``[labels.inversion]``)."""
        return Section(self.table(key), source=self.source, name=f"{self.name}.{key}")

    # ------------------------------------------------------------------ files and code

    def resolve(self, value: str) -> Path:
        """``value`` as a path: ``~`` expanded, relative to :attr:`base_dir`."""
        path = Path(os.path.expanduser(value))
        return path if path.is_absolute() else self.base_dir / path

    def path(self, key: str, default: Any = _MISSING, *, kind: str = "file",
             what: str = "") -> Any:
        """An existing file (``kind="file"``) or folder (``kind="dir"``).

        Raises
        ------
        InputFileError
            The path does not exist or is of the other kind; ``what`` says what belongs there.
        """
        value = self.text(key, default)
        if value is default and key not in self.body:
            return value
        path = self.resolve(value)
        ok = path.is_dir() if kind == "dir" else path.is_file()
        if not ok:
            state = "no such " + ("folder" if kind == "dir" else "file")
            if path.exists():
                state = "not a " + ("folder" if kind == "dir" else "file")
            shown = "" if str(path) == value else f" ({path})"
            raise InputFileError(f"{self.where(key)} = {value!r}{shown}: {state}"
                                 + (f"; {what}" if what else ""))
        return path

    def python_path(self, key: str = "python_path") -> tuple[Path, ...]:
        """Folders to put on ``sys.path`` so that ``"module:attribute"`` references import.

        They are prepended for the rest of the process (a factory's module may import more of its
        package later); a folder already on the path is not added twice.
        """
        value = self._get(key, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._bad(key, value, "a folder or a list of folders")
        folders = []
        for item in value:
            folder = self.resolve(item)
            if not folder.is_dir():
                raise InputFileError(f"{self.where(key)}: {item!r} ({folder}) is not a folder; "
                                     "list folders that hold your Python modules")
            if str(folder) not in sys.path:
                sys.path.insert(0, str(folder))
            folders.append(folder)
        return tuple(folders)

    def reference(self, key: str, default: Any = _MISSING) -> Any:
        """Import the object named by ``"package.module:attribute"`` (dotted attributes allowed)."""
        spec = self.text(key, default)
        if spec is default and key not in self.body:
            return spec
        return import_object(spec, self.where(key))


def import_object(spec: str, where: str) -> Any:
    """The object a ``"package.module:attribute"`` string names.

    Raises
    ------
    ConfigError
        Malformed reference, a module that cannot be imported (with the import's own reason), or
        a missing attribute.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{where} = {spec!r}: expected \"package.module:attribute\", e.g. "
                          "\"my_models.faces:make_generator\"")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = getattr(exc, "name", None)
        why = (f"no module named {missing!r}" if missing and isinstance(exc, ModuleNotFoundError)
               else str(exc))
        raise ConfigError(f"{where} = {spec!r}: cannot import module {module_name!r} ({why}); "
                          "install its package or list the folder that holds it in python_path") \
            from None
    except (ConfigError, InputFileError):
        raise
    except Exception as exc:  # the user's module itself fails: a syntax error, a raise at import
        raise UserCodeError(f"{where} = {spec!r}: cannot import module {module_name!r} "
                            f"({type(exc).__name__}: {exc}); fix the module") from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"{where} = {spec!r}: module {module_name!r} has no attribute "
                              f"{attr!r}") from None
    return obj


def call_with_options(func: Callable[..., Any], options: Mapping[str, Any], where: str,
                      extra: Mapping[str, Any] | None = None) -> Any:
    """Call ``func(**options, **extra)``, checking the keywords against its signature first.

    ``extra`` (e.g. ``device``) is passed only when ``func`` accepts it; ``options`` come from
    the user and each must be a parameter of ``func``.

    Raises
    ------
    ConfigError
        An option ``func`` does not take, a required parameter without a value, or an exception
        raised by ``func`` itself (its type and message are kept).
    """
    name = getattr(func, "__qualname__", None) or type(func).__name__
    kwargs = dict(options)
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        sig = None
    if sig is not None:
        params = sig.parameters
        var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
        for key in kwargs:
            if not var_kw and key not in params:
                accepted = ", ".join(p for p in params if params[p].kind not in
                                     (inspect.Parameter.VAR_POSITIONAL,)) or "none"
                raise ConfigError(f"{where}: {name} takes no option {key!r} (its parameters: "
                                  f"{accepted}); remove it or fix the name")
        for key, value in (extra or {}).items():
            if var_kw or key in params:
                kwargs.setdefault(key, value)
        try:
            sig.bind(**kwargs)
        except TypeError as exc:
            raise ConfigError(f"{where}: cannot call {name} with options "
                              f"{sorted(kwargs)} ({exc}); give its required parameters") from None
    try:
        return func(**kwargs)
    except (ConfigError, InputFileError):
        raise
    except Exception as exc:  # the user's factory failed: say where, keep its reason
        raise UserCodeError(f"{where}: {name}(...) raised {type(exc).__name__}: {exc}") from exc


def build_object(obj: Any, options: Mapping[str, Any], where: str,
                 extra: Mapping[str, Any] | None = None) -> Any:
    """A referenced object, used as is or built: a class is instantiated, and any other callable
    is called as a factory when ``options`` are given; otherwise ``obj`` itself is returned."""
    if inspect.isclass(obj) or options:
        return call_with_options(obj, options, where, extra)
    return obj


def dataclass_from_section(cls: type, config: ExperimentConfig, section: str, *,
                           exclude: tuple[str, ...] = (), only: tuple[str, ...] | None = None,
                           overrides: dict[str, Any] | None = None) -> Any:
    """A dataclass ``cls`` from section ``[section]`` of ``config``: each field present in the
    section (within ``only``, outside ``exclude``) is type-checked against the field's default
    (int, bool, float, tuple of ints, str) and replaces it; ``overrides`` are set as given.
    Unknown keys are the caller's to refuse.

    Raises
    ------
    ConfigError
        A value of the wrong type, naming the file, section and key.
    """
    raw = dict(config.kind_options.get(section, {}))
    fields = {f.name: f for f in dataclasses.fields(cls)}
    allowed = set(only) if only is not None else set(fields) - set(exclude)
    values: dict[str, Any] = dict(overrides or {})
    for key, value in raw.items():
        if key not in allowed:
            continue
        default = getattr(cls(), key)
        if key in ("n_digits", "max_steps") or (isinstance(default, int)
                                                 and not isinstance(default, bool)):
            expected = "an integer"
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, bool):
            expected, ok = "true or false", isinstance(value, bool)
        elif isinstance(default, float):
            expected = "a number"
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            value = float(value) if ok else value
        elif isinstance(default, tuple):
            expected = "a list of integers"
            ok = isinstance(value, list) and all(
                isinstance(v, int) and not isinstance(v, bool) for v in value)
            value = tuple(value) if ok else value
        else:
            expected, ok = "a string", isinstance(value, str)
        if not ok:
            raise ConfigError(f"{config.where(section, key)} = {value!r}: expected {expected}")
        values[key] = value
    return cls(**values)


def check_sections(config: ExperimentConfig, known: Mapping[str, Iterable[str]], kind: str) -> None:
    """Refuse a section of ``config`` outside ``known`` and a key outside its section's fields.

    Raises
    ------
    ConfigError
        Naming the file, the section or key, and what is known.
    """
    for section, body in config.kind_options.items():
        if section not in known:
            raise ConfigError(f"{config.source}: [{section}]: unknown section for kind {kind!r}; "
                              f"known sections are {', '.join(sorted(known))}")
        for key in body:
            if key not in known[section]:
                raise ConfigError(f"{config.where(section, key)}: unknown field; known fields are "
                                  f"{', '.join(sorted(known[section]))}")
