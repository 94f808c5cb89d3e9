"""Typed dataclasses from untrusted dicts: the engine under the run config and the study spec.

A field is declared with `knob(default, doc, ...)`: its docstring, its closed set of `choices`, its
bounds (`gt`, `ge`, `lt`, `le`), fields it `excludes`, and a `check`. `build(cls, data)` makes `cls`
from a nested dict strictly: unknown keys, wrong types and values out of bounds are a `ConfigError`
whose message starts with the dotted field name. A `Section` dataclass checks its fields on every
construction (also when made in Python), then `check_links()` for the rules that link fields.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import types
import typing
from dataclasses import field
from typing import Any, Callable

import yaml

from .errors import ConfigError, UserError, short_repr
from .jsonread import MAX_INT
from .yamlsafe import yaml_load

#: `knob(identity=...)`: how a field enters a run's identity (`vitlab.identity`). "always": as is;
#: "omit_unset": left out while None, [] or False (a field added after run IDs were first issued, so configs
#: written before it existed keep their IDs); "never": execution-only, it changes how a run executes,
#: not what it computes.
IDENTITY_ROLES = ("always", "omit_unset", "never")


def knob(default: Any, doc: str, *, choices: tuple | None = None, finite: bool = True,
         gt: float | None = None, ge: float | None = None, lt: float | None = None, le: float | None = None,
         excludes: tuple[str, ...] = (), check: Callable[[Any, str], Any] | None = None,
         identity: str = "always") -> Any:
    """A documented config field with its constraints. Mutable defaults (lists) are copied per instance.

    choices: the closed set of values (checked by `build`); finite: a float field (or list of floats)
    refuses NaN and ±inf unless this is False; gt/ge/lt/le: bounds of a number (None is always allowed
    where the type allows it); excludes: sibling fields that may not be set together with this one;
    check: `check(value, path)` raises ConfigError (see `require`); identity: see IDENTITY_ROLES.
    Bounds, exclusions and checks run whenever a `Section` is constructed."""
    if identity not in IDENTITY_ROLES:
        raise ValueError(f"identity must be one of {IDENTITY_ROLES}, got {identity!r}")
    meta = {"doc": doc, "choices": choices, "finite": finite, "gt": gt, "ge": ge, "lt": lt, "le": le,
            "excludes": tuple(excludes), "check": check, "identity": identity}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


def bounds_text(meta: typing.Mapping) -> str:
    """The bounds of a knob in words: '> 0', '>= 0', '[0, 30]', '(0.0, 0.9]', or '' when it has none."""
    lo, lo_open = (meta.get("gt"), True) if meta.get("gt") is not None else (meta.get("ge"), False)
    hi, hi_open = (meta.get("lt"), True) if meta.get("lt") is not None else (meta.get("le"), False)
    if lo is not None and hi is not None:
        return f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {hi}"
    return ""


def _in_bounds(v: Any, meta: typing.Mapping) -> bool:
    """Written as `not (v ok)` tests so that NaN, which fails every comparison, is out of any bound."""
    gt, ge, lt, le = (meta.get(k) for k in ("gt", "ge", "lt", "le"))
    return not ((gt is not None and not v > gt) or (ge is not None and not v >= ge)
                or (lt is not None and not v < lt) or (le is not None and not v <= le))


def _is_set(v: Any) -> bool:
    return v is not None and v != []


def check_fields(obj: Any, prefix: str = "") -> None:
    """Check each field of dataclass `obj` against its knob's choices, bounds, exclusions and check."""
    for fl in dataclasses.fields(obj):
        v = getattr(obj, fl.name)
        if v is None:
            continue
        meta, path = fl.metadata, f"{prefix}{fl.name}"
        if meta.get("choices") is not None:
            _check_choices(v, meta["choices"], path)
        if bounds_text(meta) and isinstance(v, (int, float)) and not isinstance(v, bool) and not _in_bounds(v, meta):
            raise ConfigError(path, f"must be {_bound_words(meta)}, got {v}")
        for other in meta.get("excludes", ()):
            if _is_set(v) and _is_set(getattr(obj, other, None)):
                raise ConfigError(path, f"set either {path} or {prefix}{other}, not both")
        if meta.get("check") is not None:
            meta["check"](v, path)


def _bound_words(meta: typing.Mapping) -> str:
    text = bounds_text(meta)
    return f"in {text}" if text[0] in "[(" else text


class Section:
    """Base of a config dataclass that checks itself on every construction (from YAML, a dict, or
    Python): each field's knob constraints, then `check_links()`, the rules that link fields.
    `SECTION` (e.g. "data") prefixes the field names in error messages."""

    SECTION = ""

    def __post_init__(self):
        check_fields(self, f"{self.SECTION}." if self.SECTION else "")
        self.check_links()

    def check_links(self) -> None:
        """Rules that link several fields (override; one ConfigError naming the first field)."""


def check_finite(name: str, v: Any) -> None:
    """Refuse NaN and ±inf in a float or a list of floats (a field opts out with knob(finite=False))."""
    values = v if isinstance(v, list) else [v]
    for x in values:
        if isinstance(x, float) and not math.isfinite(x):
            raise ConfigError(name, f"must be a finite number, got {x}")


# ----------------------------------------------------------------------------------------------
# dict <-> dataclass


def _strip_optional(tp):
    """(type without None, whether None is allowed); a union of several types stays a Union."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return (args[0] if len(args) == 1 else typing.Union[tuple(args)]), len(args) < len(typing.get_args(tp))
    return tp, False


def require(ok: Callable[[Any], bool], problem: str) -> Callable[[Any, str], Any]:
    """A check for `Annotated[T, ...]` fields: `require(lambda v: v >= 0, "must be >= 0")`."""
    def check(value: Any, path: str) -> Any:
        if not ok(value):
            raise ConfigError(path, f"{problem}, got {short_repr(value)}")
        return value
    return check


def _kind(tp: Any) -> str:
    """What a value of type `tp` looks like, in words, for "must be X or Y" messages."""
    if typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    if dataclasses.is_dataclass(tp) or typing.get_origin(tp) is dict:
        return "a mapping"
    return {list: "a list", bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        typing.get_origin(tp) or tp, str(tp))


def _fits(value: Any, tp: Any) -> bool:
    """Whether `value` has the shape of `tp` (picks the member of a union that coerces it)."""
    kind = _kind(tp)
    if kind == "a mapping":
        return isinstance(value, dict)
    if kind == "a list":
        return isinstance(value, (list, tuple))
    if isinstance(value, bool) or kind == "true or false":
        return isinstance(value, bool) and kind == "true or false"
    if kind == "an integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if kind == "a number":
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                float(value)
            except ValueError:
                return False
            return True
        return isinstance(value, (int, float))
    return kind == "a string" and isinstance(value, str)


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """`value` as type `tp`, strictly. Beyond scalars and lists: `dict[str, T]`, nested dataclasses,
    `Any` (taken as is), a union of a few types (the member whose shape the value has), and
    `Annotated[T, check, ...]`, where each `check(value, path)` returns the value or raises ConfigError."""
    tp, optional = _strip_optional(tp)
    if value is None:
        if optional or tp is Any:
            return None
        if dataclasses.is_dataclass(tp):
            return build(tp, None, f"{path}.")  # an empty section: its defaults
        raise ConfigError(path, "must not be null")
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        inner, *checks = typing.get_args(tp)
        value = _coerce(value, inner, path)
        for check in checks:
            value = check(value, path)
        return value
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return build(tp, value, f"{path}.")
    if origin in (typing.Union, types.UnionType):
        members = typing.get_args(tp)
        for member in members:
            if _fits(value, member):
                return _coerce(value, member, path)
        kinds = [_kind(m) for m in members]
        raise ConfigError(path, f"must be {', '.join(kinds[:-1])} or {kinds[-1]}, got {short_repr(value)}")
    if origin is dict:
        _, item_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(path, f"must be a mapping, got {short_repr(value)}")
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise ConfigError(path, f"keys must be strings, got {short_repr(bad[0])}")
        return {k: _coerce(v, item_tp, f"{path}.{k}") for k, v in value.items()}
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]  # `milestones=20` means [20]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(path, f"must be a list, got {short_repr(value)}")
        return [_coerce(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(path, f"must be true or false, got {short_repr(value)}")
    if tp is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            if abs(value) > MAX_INT:
                raise ConfigError(path, f"must be an integer within ±2**63, got {short_repr(value)}")
            return value
        raise ConfigError(path, f"must be an integer, got {short_repr(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads "1e-3" as a string
            except ValueError:
                pass
        raise ConfigError(path, f"must be a number, got {short_repr(value)}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(path, f"must be a string, got {short_repr(value)}")
    raise ConfigError(path, f"unsupported type {tp}")  # pragma: no cover


def _check_choices(value: Any, choices: tuple, path: str) -> None:
    """A value (or each item of a list value) must be one of `choices`."""
    if isinstance(value, list):
        for i, v in enumerate(value):
            _check_choices(v, choices, f"{path}[{i}]")
        return
    if value not in choices:
        shown = ", ".join(str(c) for c in choices if c is not None)
        raise ConfigError(path, f"must be one of {shown}; got {short_repr(value)}" + suggest(str(value), [c for c in choices if c]))


def suggest(word: str, options) -> str:
    """' (did you mean X?)' for the closest option, or ''."""
    if len(word) > 100:  # no option is that long; and difflib on a huge string is slow
        return ""
    options = [str(o) for o in options]
    by_shape = {_shape(o): o for o in options}  # FashionMNIST, fashion-mnist -> fashion_mnist
    if _shape(word) in by_shape:
        return f" (did you mean {by_shape[_shape(word)]!r}?)"
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if not close:
        close = [by_shape[c] for c in difflib.get_close_matches(_shape(word), list(by_shape), n=1, cutoff=0.6)]
    return f" (did you mean {close[0]!r}?)" if close else ""


def _shape(word: str) -> str:
    """A name without case, underscores, dashes and spaces: how `suggest` matches spellings of one name."""
    return "".join(ch for ch in word.lower() if ch.isalnum())


def build(cls, data: Any, prefix: str = ""):
    """Build dataclass `cls` from a nested dict, strictly: unknown keys, bad types and values are errors.

    Errors of `cls.__post_init__` that name a field relative to `cls` get `prefix` in front, so a
    dataclass used at several places (a dict of them, say) reports the full dotted path. A class with
    `schema_variant(data, prefix) -> (subclass, data)` is a tagged union: the data picks the subclass
    built (and `schema_variants()` lists them all, for key checks and docs)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(prefix.rstrip(".") or "config", f"must be a mapping, got {type(data).__name__}")
    if hasattr(cls, "schema_variant"):  # a tagged union: the data picks the dataclass (model.name -> family)
        cls, data = cls.schema_variant(data, prefix)
    fields = {fl.name: fl for fl in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls, include_extras=True)
    kwargs = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(path, "unknown key" + suggest(str(key), fields))
        v = _coerce(value, hints[key], path)
        if fields[key].metadata.get("finite", True):
            check_finite(path, v)
        choices = fields[key].metadata.get("choices")
        if choices is not None and v is not None:
            _check_choices(v, choices, path)
        kwargs[key] = v
    try:
        return cls(**kwargs)
    except ConfigError as e:
        if not prefix or e.field.startswith(prefix):
            raise  # already the full dotted name (RunConfig's sections spell theirs out)
        raise ConfigError((prefix + e.field).rstrip("."), e.problem) from None


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"model": {"dim": 64}} -> {"model.dim": 64}: a nested config dict with dotted keys."""
    out: dict = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def parse_value(text: str) -> Any:
    """Parse the right side of `key=value` as YAML, so `3`, `1e-3`, `[1,2]`, `true`, `null` work."""
    try:
        return yaml_load(text) if text != "" else ""
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict, overrides: list[str], cls=None) -> dict:
    """Apply dotted `a.b=value` overrides to a nested dict (copied). Checks the keys against `cls`."""
    out = copy.deepcopy(data) if data else {}
    for item in overrides:
        if "=" not in item:
            raise UserError(f"override {short_repr(item)}: expected key=value")
        key, text = item.split("=", 1)
        key = key.strip()
        if not key:
            raise UserError(f"override {short_repr(item)}: empty key")
        parts = key.split(".")
        if cls is not None:
            check_key_path(cls, parts)
        node = out
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[parts[-1]] = parse_value(text)
    return out


def check_key_path(cls, parts: list[str]) -> None:
    """Raise ConfigError unless the dotted key `parts` names a field of dataclass `cls`."""
    key_type(cls, parts)


def key_type(cls, parts: list[str] | str) -> Any:
    """The type hint of the field that the dotted key `parts` names in dataclass `cls` (within a tagged
    union, of the variant that has it); ConfigError naming the key when there is none."""
    parts = parts.split(".") if isinstance(parts, str) else parts
    tp = cls
    for i, p in enumerate(parts):
        if not dataclasses.is_dataclass(tp):
            raise ConfigError(".".join(parts[:i]), f"is not a section; cannot set {'.'.join(parts)}")
        owners = {fl.name: v for v in reversed(variants(tp)) for fl in dataclasses.fields(v)}
        if p not in owners:
            raise ConfigError(".".join(parts[: i + 1]), "unknown key" + suggest(p, owners))
        tp = typing.get_type_hints(owners[p])[p]
    return tp


def variants(cls) -> list:
    """The dataclasses a field of type `cls` may hold: `cls.schema_variants()` of a tagged union, else [cls]."""
    return list(cls.schema_variants()) if hasattr(cls, "schema_variants") else [cls]


def describe_keys(cls, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, doc) for every field of dataclass `cls`, sections expanded, for `vitlab
    config keys` and the docs. A tagged union lists its shared fields, then each variant's own. The
    doc ends with the knob's choices {a|b} and bounds (range [lo, hi], or (> 0))."""
    rows, seen = [], set()
    for v in variants(cls):
        hints = typing.get_type_hints(v)
        for fl in dataclasses.fields(v):
            if fl.name in seen:
                continue
            seen.add(fl.name)
            tp = hints[fl.name]
            if dataclasses.is_dataclass(tp):
                rows += describe_keys(tp, f"{prefix}{fl.name}.")
                continue
            default = fl.default if fl.default is not dataclasses.MISSING else fl.default_factory()
            doc = fl.metadata.get("doc", "")
            choices = fl.metadata.get("choices")
            if choices:
                doc += " {" + "|".join(str(c) for c in choices if c is not None) + "}"
            bounds = bounds_text(fl.metadata)
            if bounds:
                doc += f" range {bounds}" if bounds[0] in "[(" else f" ({bounds})"
            rows.append((prefix + fl.name, repr(default), doc))
    return rows

