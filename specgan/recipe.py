"""Typed, frozen configuration: dataclass fields with help text and ranges, loaded from TOML tables.

A field is declared with :func:`param`, which records its help text and allowed range in the field metadata;
:func:`from_mapping` builds a frozen dataclass from a plain dict (a TOML table) and rejects unknown keys,
wrong types and out-of-range values with a one-line :class:`~specgan.errors.ConfigError` that names the
source file, the dotted key and the value.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar

from specgan.errors import ConfigError

T = TypeVar("T")

#: The largest seed a recipe or a command takes: torch's and numpy's generators take any below 2**64, and runs add
#: small offsets to theirs.
MAX_SEED = 2**63 - 1


def param(default: Any, help: str, *, min: float | None = None, max: float | None = None,
          above: float | None = None, choices: tuple[Any, ...] | None = None) -> Any:
    """A dataclass field with its help text (used for the README's recipe reference) and its allowed values
    (``above``: a bound the value must exceed, as a learning rate must exceed 0)."""
    return dataclasses.field(default=default, metadata={"help": help, "min": min, "max": max, "above": above,
                                                        "choices": choices})


#: The largest recipe file read: recipes are a few kB, and a device given as one (``/dev/zero``) had been read until
#: memory ran out.
MAX_RECIPE_BYTES = 1 << 20
#: The UTF-8 byte-order mark some editors (Windows Notepad) start a file with, which TOML does not allow.
UTF8_BOM = b"\xef\xbb\xbf"


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file (a UTF-8 byte-order mark at its start is passed over); a missing, malformed or oversized
    file is a one-line ConfigError naming it."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_RECIPE_BYTES + 1)
        if len(data) > MAX_RECIPE_BYTES:
            raise ConfigError(f"{path}: larger than {MAX_RECIPE_BYTES >> 20} MB, not a recipe")
        bom = len(UTF8_BOM) if data.startswith(UTF8_BOM) else 0
        try:
            text = data[bom:].decode("utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML (not UTF-8 text: byte {e.start + bom})") from None
        return tomllib.loads(text)
    except FileNotFoundError:
        raise ConfigError(f"{path}: recipe file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the recipe ({e.strerror or e})") from None


def _describe(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value)


def _check_type(value: Any, hint: Any, where: str) -> Any:
    """Return ``value`` converted to ``hint`` (int → float is allowed), or raise ConfigError."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _check_type(value, option, where)
            except ConfigError as e:
                errors.append(e)
        raise errors[0]
    if origin is tuple:
        (item_hint, _ellipsis) = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} = {_describe(value)}: expected a list")
        return tuple(_check_type(v, item_hint, f"{where}[{i}]") for i, v in enumerate(value))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, float) and not math.isfinite(value):
        # TOML has nan and inf; every range check passes nan (comparisons with it are false), and no key means either
        raise ConfigError(f"{where} = {_describe(value)}: expected a finite number")
    if hint is int and isinstance(value, bool) or not isinstance(value, hint):
        raise ConfigError(f"{where} = {_describe(value)}: expected {hint.__name__}, got {type(value).__name__}")
    return value


def from_mapping(cls: type[T], data: Mapping[str, Any], *, source: str, prefix: str = "") -> T:
    """Build the frozen dataclass ``cls`` from ``data``.

    ``source`` (a file name, or e.g. ``"--set"``) and ``prefix`` (the dotted path of this table) appear in every
    error message, so a user sees exactly which key of which file is wrong.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    required = [f.name for f in fields.values()
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [name for name in required if name not in data]
    values = checked_fields(cls, data, source=source, prefix=prefix)
    if missing:
        raise ConfigError(f"{source}: missing key '{prefix}{missing[0]}'")
    try:
        return cls(**values)
    except ValueError as e:  # cross-field checks in __post_init__
        # A check that starts with its key ("betas = [0.5]: ...") gets the section's prefix on that key; others are
        # placed under the section. The top table's checks name their keys themselves.
        message = str(e)
        if prefix and re.match(r"[a-z_]+ = ", message):
            raise ConfigError(f"{source}: {prefix}{message}") from None
        where = f"{prefix.rstrip('.')}: " if prefix else ""
        raise ConfigError(f"{source}: {where}{message}") from None


def checked_fields(cls: type, data: Mapping[str, Any], *, source: str, prefix: str = "") -> dict[str, Any]:
    """``data``'s values for fields of the dataclass ``cls``, each checked alone (its key, type, range and choices;
    nested tables built with :func:`from_mapping`), as one-line ConfigErrors like :func:`from_mapping`'s: for values
    that a later layer of settings may replace before the whole is built."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{source}: unknown key '{prefix}{unknown[0]}' (valid keys: {', '.join(fields)})")
    values = {}
    for name, value in data.items():
        where = f"{source}: {prefix}{name}"
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where} must be a table")
            values[name] = from_mapping(hint, value, source=source, prefix=f"{prefix}{name}.")
            continue
        value = _check_type(value, hint, where)
        meta = fields[name].metadata
        if value is not None and not isinstance(value, (tuple, bool, str)):
            if meta.get("min") is not None and value < meta["min"]:
                raise ConfigError(f"{where} = {_describe(value)}: must be >= {meta['min']}")
            if meta.get("above") is not None and value <= meta["above"]:
                raise ConfigError(f"{where} = {_describe(value)}: must be > {meta['above']:g}")
            if meta.get("max") is not None and value > meta["max"]:
                raise ConfigError(f"{where} = {_describe(value)}: must be <= {meta['max']}")
        if meta.get("choices") and value not in meta["choices"]:
            choices = ', '.join(_describe(c) if c in ('', True, False) else str(c) for c in meta['choices'])
            raise ConfigError(f"{where} = {_describe(value)}: must be one of {choices}")
        values[name] = value
    return values


def to_mapping(obj: Any) -> dict[str, Any]:
    """The plain-dict (JSON/TOML-ready) form of a config dataclass; tuples become lists."""
    def plain(v: Any) -> Any:
        return list(v) if isinstance(v, tuple) else v
    return {k: plain(v) for k, v in dataclasses.asdict(obj).items()}


def parse_overrides(items: list[str] | tuple[str, ...], *, source: str = "--set") -> dict[str, Any]:
    """``["train.steps=100", "audio.n_mels=64"]`` → ``{"train": {"steps": 100}, "audio": {"n_mels": 64}}``.

    Values are read as TOML (``64``, ``1e-4``, ``true``, ``[1, 2]``, ``"text"``); a value that is not valid TOML is
    taken as a plain string, so ``--set model.name=dcgan`` needs no quotes; one that starts as a list, table or
    quoted string and is broken (``[0.5``) is refused.
    """
    tree: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            example = f"{key}=VALUE" if key and not sep and "." in key else "train.steps=200"
            raise ConfigError(f"{source} {item!r}: expected KEY=VALUE, e.g. {example}")
        try:
            value = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError as e:
            if text.strip()[:1] in ("[", "{", '"', "'"):  # meant as a list, table or quoted string, but broken
                reason = re.sub(r"\s*\(at .*\)$", "", str(e))
                raise ConfigError(f"{source} {item!r}: not a TOML value ({reason}); a list is written [1, 2], "
                                  f"a string \"text\"") from None
            value = text.strip()
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{source} {item!r}: '{part}' was already given a value")
        node[leaf] = value
    return tree


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Nested dict merge: tables merge key by key, anything else in ``over`` replaces ``base``."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def reference_table(cls: type, *, table: str) -> str:
    """A Markdown table of ``cls``'s keys, defaults and help text, for the README (a test keeps them in sync)."""
    def shown(value: Any) -> str:
        if value is None:
            return "unset"
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, str):
            return f'"{value}"'
        if isinstance(value, tuple):
            return "[" + ", ".join(map(shown, value)) + "]"
        return str(value)

    rows = [f"| key (`[{table}]`) | default | meaning |", "|---|---|---|"]
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if dataclasses.is_dataclass(default):
            continue
        rows.append(f"| `{f.name}` | {shown(default)} | {f.metadata.get('help', '')} |")
    return "\n".join(rows)


def toml_value(v: Any) -> str:
    """A recipe value as TOML writes it (``true``, ``"text"``, ``[1, 2]``): in recipes, and in messages that name a
    key and its value as the user wrote them. Strings, numbers, booleans or lists of those."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, int):
        return str(v)
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def as_written(value: Any) -> str:
    """A recipe value in a message, as the recipe writes it (:func:`toml_value`; a whole section as TOML's inline
    table), or ``(not set)`` for a key the recipe leaves unset or did not have yet."""
    if value is None:
        return "(not set)"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k} = {as_written(v)}" for k, v in value.items()) + "}"
    return toml_value(value)


def dump_toml(table: Mapping[str, Any]) -> str:
    """TOML text for a recipe-shaped mapping: top-level scalars, then one ``[section]`` per nested table.

    Values are strings, numbers, booleans or lists of those (all a recipe holds); ``None`` values are left out,
    which TOML expresses by absence.
    """
    lines = [f"{k} = {toml_value(v)}" for k, v in table.items() if not isinstance(v, Mapping) and v is not None]
    for section, inner in table.items():
        if isinstance(inner, Mapping):
            lines += ["", f"[{section}]"]
            lines += [f"{k} = {toml_value(v)}" for k, v in inner.items() if v is not None]
    return "\n".join(lines) + "\n"
