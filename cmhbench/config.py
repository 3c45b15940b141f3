"""Typed hyperparameters: frozen dataclasses with the papers' defaults, overridable by strings.

A method declares its hyperparameters as a frozen dataclass whose fields are made with
:func:`hp`, which records a help text and optional bounds or choices::

    @dataclass(frozen=True)
    class DCMHConfig:
        gamma: float = hp(1.0, "weight of the quantization term", ge=0)
        epochs: int = hp(100, "passes over the training pairs", ge=1)

:func:`resolve_config` builds an instance from ``--set key=value`` strings, casting each value to
the field's type and checking its bounds; any problem is a :class:`~cmhbench.errors.ConfigError`.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import typing
from typing import Any, Iterable, Mapping, Optional, Sequence

from cmhbench.errors import ConfigError


def hp(
    default: Any,
    help: str,
    *,
    ge: Optional[float] = None,
    gt: Optional[float] = None,
    le: Optional[float] = None,
    lt: Optional[float] = None,
    choices: Optional[Sequence[Any]] = None,
) -> Any:
    """A dataclass field for a hyperparameter with its default, a help text and optional bounds."""
    meta = {"help": help, "ge": ge, "gt": gt, "le": le, "lt": lt, "choices": tuple(choices) if choices else None}
    return dataclasses.field(default=default, metadata=meta)


def config_fields(config_cls: type) -> list[dataclasses.Field]:
    """The hyperparameter fields of a config dataclass, in declaration order."""
    if not dataclasses.is_dataclass(config_cls):
        raise TypeError(f"{config_cls!r} is not a dataclass")
    return list(dataclasses.fields(config_cls))


def _field_type(config_cls: type, f: dataclasses.Field) -> Any:
    hints = typing.get_type_hints(config_cls)
    return hints.get(f.name, f.type)


def type_text(typ: Any) -> str:
    """A field type as a user reads it: ``int``, ``float``, ``str | None``, ``tuple[int, ...]``."""
    origin = typing.get_origin(typ)
    if origin is typing.Union:
        return " | ".join(type_text(a) for a in typing.get_args(typ))
    if origin is typing.Literal:
        return "one of " + ", ".join(map(str, typing.get_args(typ)))
    if origin in (tuple, list):
        args = [a for a in typing.get_args(typ) if a is not Ellipsis]
        return f"{origin.__name__}[{', '.join(type_text(a) for a in args)}{', ...' if Ellipsis in typing.get_args(typ) else ''}]"
    if typ is type(None):
        return "None"
    return getattr(typ, "__name__", str(typ))


def describe_fields(config_cls: type) -> list[dict[str, Any]]:
    """One JSON-ready dict per hyperparameter: ``name``, ``type``, ``default``, ``bounds`` (e.g.
    ``">= 0, < 1"``, empty when unbounded), ``choices`` (list or None) and ``help``."""
    out = []
    for f in config_fields(config_cls):
        typ = _field_type(config_cls, f)
        meta = f.metadata
        bounds = ", ".join(f"{word} {meta[key]}" for key, word in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
                           if meta.get(key) is not None)
        choices = meta.get("choices") or (typing.get_args(typ) if typing.get_origin(typ) is typing.Literal else None)
        default = f.default if f.default is not dataclasses.MISSING else None
        out.append({
            "name": f.name, "type": type_text(typ), "default": list(default) if isinstance(default, tuple) else default,
            "bounds": bounds, "choices": list(choices) if choices else None, "help": meta.get("help", ""),
        })
    return out


def _cast(value: str, typ: Any, name: str) -> Any:
    origin = typing.get_origin(typ)
    if origin is typing.Union:
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if value.strip().lower() in ("none", "null"):
            return None
        if len(args) == 1:
            return _cast(value, args[0], name)
    if origin is typing.Literal:
        choices = typing.get_args(typ)
        for c in choices:
            if str(c) == value:
                return c
        raise ConfigError(f"{name}: {value!r} is not one of {', '.join(map(str, choices))}")
    if origin in (tuple, list):
        (item,) = typing.get_args(typ)[:1] or (str,)
        parts = [p for p in value.split(",") if p.strip()]
        return tuple(_cast(p.strip(), item, name) for p in parts)
    try:
        if typ is bool:
            low = value.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if typ is int:
            as_float = float(value)
            if not as_float.is_integer():
                raise ValueError(value)
            return int(as_float)
        if typ is float:
            out = float(value)
            if not math.isfinite(out):
                raise ValueError(value)
            return out
        if typ is str:
            return value
    except ValueError:
        raise ConfigError(f"{name}: {value!r} is not a valid {getattr(typ, '__name__', typ)}") from None
    raise ConfigError(f"{name}: values of type {typ!r} cannot be set from the command line")


def _check_bounds(f: dataclasses.Field, value: Any, owner: str) -> None:
    meta = f.metadata
    name = f"{owner}.{f.name}" if owner else f.name
    if value is None:
        return
    if meta.get("choices") and value not in meta["choices"]:
        raise ConfigError(f"{name}: {value!r} is not one of {', '.join(map(str, meta['choices']))}")
    values = value if isinstance(value, tuple) else (value,)
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        for key, ok, word in (
            ("ge", lambda a, b: a >= b, ">="),
            ("gt", lambda a, b: a > b, ">"),
            ("le", lambda a, b: a <= b, "<="),
            ("lt", lambda a, b: a < b, "<"),
        ):
            bound = meta.get(key)
            if bound is not None and not ok(v, bound):
                raise ConfigError(f"{name}: {v!r} must be {word} {bound}")


def validate_config(config: Any, owner: str = "") -> None:
    """Check every field of a config instance against its declared bounds and choices."""
    for f in config_fields(type(config)):
        _check_bounds(f, getattr(config, f.name), owner)


def resolve_config(
    config_cls: type, overrides: Mapping[str, str], owner: str = "", base: Optional[Mapping[str, Any]] = None
) -> Any:
    """Build ``config_cls`` from its defaults, typed ``base`` values (e.g. a method's settings for
    one dataset) and string ``overrides`` (field name -> value), in that order of precedence.

    Unknown names raise a :class:`ConfigError` naming the close matches; values are cast to the
    field's annotated type and checked against its bounds.
    """
    fields = {f.name: f for f in config_fields(config_cls)}
    unknown = sorted(set(base or {}) - set(fields))
    if unknown:
        raise ConfigError(f"{owner or config_cls.__name__}: dataset defaults name unknown fields {', '.join(unknown)}")
    kwargs: dict[str, Any] = dict(base or {})
    for key, raw in overrides.items():
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(fields) or '(none)'}"
            raise ConfigError(f"{owner or config_cls.__name__} has no hyperparameter {key!r}{hint}")
        kwargs[key] = _cast(raw, _field_type(config_cls, fields[key]), f"{owner}.{key}" if owner else key)
    try:
        config = config_cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{owner or config_cls.__name__}: {exc}") from None
    validate_config(config, owner)
    return config


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config instance (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=list))


def default_config(spec: Any, dataset: Optional[str]) -> dict[str, Any]:
    """A method's default hyperparameters on ``dataset`` (its ``dataset_defaults`` applied), as
    :func:`config_to_dict` writes them."""
    base = spec.dataset_defaults.get(dataset) if dataset is not None else None
    return config_to_dict(resolve_config(spec.config, {}, owner=spec.name, base=base))


def non_default_settings(configs: Mapping[str, Mapping[str, Any]], defaults: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """``role.field -> value`` for every hyperparameter of ``configs`` (role -> resolved config
    dict) that differs from ``defaults`` (role -> default config dict), in role and field order.

    A field the defaults do not have (a method's config that has since changed) counts as
    differing."""
    out: dict[str, Any] = {}
    for role, values in configs.items():
        reference = defaults.get(role, {})
        for key, value in values.items():
            if key not in reference or json.dumps(reference[key]) != json.dumps(value):
                out[f"{role}.{key}"] = value
    return out


def value_text(value: Any) -> str:
    """A hyperparameter value as ``--set`` takes it: ``true``/``false``, lists comma-joined."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(value_text(v) for v in value)
    return str(value)


def settings_tag(settings: Mapping[str, Any]) -> str:
    """``role.key=value, ...``: how tables and run titles show settings that are not the defaults."""
    return ", ".join(f"{key}={value_text(value)}" for key, value in settings.items())


def config_hash(payload: Any) -> str:
    """A short, stable hex digest of a JSON-serialisable payload (sorted keys)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def parse_assignments(items: Iterable[str]) -> list[tuple[str, str]]:
    """Split ``key=value`` strings (from ``--set``) into pairs, rejecting malformed ones."""
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        pairs.append((key, value.strip()))
    return pairs
