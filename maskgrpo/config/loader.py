"""Typed YAML configs: YAML files (with ``base:`` inheritance) + dotted command-line overrides -> frozen dataclasses.

Every error names the key, the file and the line (or the command-line override) and, for typos, the closest valid
key. Field documentation is the attribute docstring under each dataclass field (CleanRL style); ``field_docs``
reads it back from the source so ``--help`` and the docs are generated from one place.

Range checks live in the field's metadata: ``field(default=0.2, metadata=rng(ge=0.0, lt=1.0))``; a name that must be
registered (a sampler, a backbone) declares ``metadata=one_of("sampler", names)``. Every float (also inside ``Any``
values such as ``rollout.options``) must be finite: ``.inf`` / ``.nan`` fail at load. A check across fields lives in
the dataclass's ``__post_init__`` and raises :class:`FieldError` naming the key, so the error points at its line.
Errors show plain values (what the YAML said), never the loader's internal objects.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import math
import re
import textwrap
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from maskgrpo.errors import RunError

T = TypeVar("T")
_SCI = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


class ConfigError(RunError, ValueError):
    """A config value that cannot be accepted; the message names key, file and line (one line, exit status 2)."""


class FieldError(ValueError):
    """Raised by a config dataclass's ``__post_init__`` for a bad combination of values: ``key`` (dotted, relative to
    that dataclass, e.g. ``"rl.micro_batch_prompts"``) names the field whose file and line the error shows."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


@dataclasses.dataclass(frozen=True)
class _Src:
    """Where a value came from: file and 1-based line, or a command-line override."""

    where: str

    def __str__(self) -> str:
        return self.where


@dataclasses.dataclass
class _Val:
    value: Any  # scalar, list of _Val, or dict[str, _Val]
    src: _Src


class RawSection:
    """A config section kept as parsed YAML (with file and line of every value) and typed later by its owner.

    Used for the options of a patch package (``patch_options:``): the baseline cannot import the patch's
    dataclass, so the patch calls ``section.build(ItsConfig, "patch_options.")`` and gets the same checks and
    file:line errors as any other section.
    """

    def __init__(self, tree: _Val | None = None) -> None:
        self._tree = tree if tree is not None else _Val({}, _Src("<defaults>"))

    def build(self, cls: type[T], prefix: str) -> T:
        return _build(cls, self._tree, prefix)

    def to_plain(self) -> dict:
        return _plain(self._tree)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RawSection) and self.to_plain() == other.to_plain()

    def __repr__(self) -> str:
        return f"RawSection({self.to_plain()!r})"


def rng(ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None) -> dict:
    """Field metadata declaring the allowed range of a number: ``field(default=..., metadata=rng(ge=0))``."""
    return {"range": (ge, gt, le, lt)}


def one_of(kind: str, names: Callable[[], Iterable[str]]) -> dict:
    """Field metadata: the value must be one of ``names()`` (called at load, so a registry can fill lazily), e.g.
    ``field(default="emerge", metadata=one_of("sampler", sampler_names))``."""
    return {"one_of": (kind, names)}


# ---------------------------------------------------------------------------------------------------------------
# YAML -> tree of _Val with sources


def _from_node(node: yaml.Node, file: str) -> _Val:
    src = _Src(f"{file}:{node.start_mark.line + 1}")
    if isinstance(node, yaml.MappingNode):
        out: dict[str, _Val] = {}
        for k, v in node.value:
            key = yaml.safe_load(yaml.serialize(k)) if not isinstance(k, yaml.ScalarNode) else k.value
            if str(key) in out:
                raise ConfigError(f"{file}:{k.start_mark.line + 1}: duplicate key {key!r}")
            out[str(key)] = _from_node(v, file)
        return _Val(out, src)
    if isinstance(node, yaml.SequenceNode):
        return _Val([_from_node(v, file) for v in node.value], src)
    return _Val(yaml.safe_load(yaml.serialize(node)), src)


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> _Val:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: circular 'base:' chain {' -> '.join(map(str, seen + (path,)))}")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        node = yaml.compose(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        line = e.object[: e.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text (byte {e.object[e.start]:#04x}); save it as UTF-8") from e
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from e
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: invalid YAML: {getattr(e, 'problem', None) or e}") from e
    if node is None:
        return _Val({}, _Src(f"{path}:1"))
    tree = _from_node(node, str(path))
    if not isinstance(tree.value, dict):
        raise ConfigError(f"{tree.src}: the top level of a config must be a mapping")
    base = tree.value.pop("base", None)
    if base is None:
        return tree
    if not isinstance(base.value, str):
        raise ConfigError(f"{base.src}: 'base' must be a path to another YAML file")
    parent = _read_yaml(path.parent / base.value, seen + (path,))
    return _merge(parent, tree)


def _merge(a: _Val, b: _Val) -> _Val:
    """Deep merge: mappings merge key by key, anything else in b replaces a."""
    if isinstance(a.value, dict) and isinstance(b.value, dict):
        out = dict(a.value)
        for k, v in b.value.items():
            out[k] = _merge(out[k], v) if k in out else v
        return _Val(out, b.src)
    return b


def _override_tree(override: str) -> _Val:
    """``train.lr=1e-5`` -> a nested one-leaf tree; the value is parsed as YAML (so 1e-5 is a float, [1,2] a list)."""
    src = _Src(f"command-line override {override!r}")
    if "=" not in override:
        raise ConfigError(f"{src}: expected KEY=VALUE with a dotted key, e.g. train.lr=1e-5")
    key, raw = override.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"{src}: empty key component in {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"{src}: cannot parse value {raw!r}: {e}") from e

    def wrap(v: Any) -> _Val:
        if isinstance(v, dict):
            return _Val({str(k): wrap(x) for k, x in v.items()}, src)
        if isinstance(v, list):
            return _Val([wrap(x) for x in v], src)
        return _Val(v, src)

    tree = wrap(value)
    for part in reversed(key.split(".")):
        tree = _Val({part: tree}, src)
    return tree


# ---------------------------------------------------------------------------------------------------------------
# tree -> dataclass, with type and range checks


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _check_finite(val: _Val, key: str) -> None:
    """Every float in a value (also nested in lists and mappings) must be finite; the error names the item."""
    v = val.value
    if isinstance(v, float) and not math.isfinite(v):
        raise ConfigError(f"{val.src}: {key}={v!r} is not a finite number (inf and nan are not accepted)")
    if isinstance(v, list):
        for i, x in enumerate(v):
            _check_finite(x, f"{key}[{i}]")
    if isinstance(v, dict):
        for k, x in v.items():
            _check_finite(x, f"{key}.{k}")


def _convert(tp: Any, val: _Val, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    v = val.value
    shown = _plain(val)  # what the YAML said, for messages
    if tp is Any:
        _check_finite(val, key)
        return shown
    if tp is RawSection:
        if not isinstance(v, dict):
            raise ConfigError(f"{val.src}: {key} must be a mapping, got {shown!r}")
        return RawSection(val)
    if dataclasses.is_dataclass(tp):
        if not isinstance(v, dict):
            raise ConfigError(f"{val.src}: {key} must be a mapping (section {_type_name(tp)}), got {shown!r}")
        return _build(tp, val, key + ".")
    if origin in (Union, types.UnionType):
        if v is None and type(None) in args:
            return None
        errors = []
        for a in (a for a in args if a is not type(None)):
            try:
                return _convert(a, val, key)
            except ConfigError as e:
                errors.append(str(e))
                if isinstance(v, dict) and typing.get_origin(a) is dict:  # a mapping: its own error says most
                    raise
        raise ConfigError(errors[0] if len(errors) == 1 else f"{val.src}: {key}={shown!r} matches none of {tp}")
    if origin is Literal:
        if isinstance(v, (dict, list)) or v not in args:
            close = difflib.get_close_matches(str(shown), [str(a) for a in args], n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{val.src}: {key}={shown!r} is not one of {list(args)}.{hint}")
        return v
    if origin in (list, tuple):
        if not isinstance(v, list):
            raise ConfigError(f"{val.src}: {key} must be a list, got {shown!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(v):
                raise ConfigError(f"{val.src}: {key} must have {len(args)} items, got {len(v)}")
            return tuple(_convert(a, x, f"{key}[{i}]") for i, (a, x) in enumerate(zip(args, v)))
        item = args[0] if args else Any
        items = [_convert(item, x, f"{key}[{i}]") for i, x in enumerate(v)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(v, dict):
            raise ConfigError(f"{val.src}: {key} must be a mapping, got {shown!r}")
        kt, vt = args if args else (Any, Any)
        for k, x in v.items():  # a Literal key type names the valid keys (e.g. per-stage values)
            if typing.get_origin(kt) is Literal and k not in typing.get_args(kt):
                close = difflib.get_close_matches(str(k), [str(a) for a in typing.get_args(kt)], n=1)
                hint = f" Did you mean '{key}.{close[0]}'?" if close else f" Valid keys: {list(typing.get_args(kt))}"
                raise ConfigError(f"{x.src}: unknown key '{key}.{k}'.{hint}")
        return {k: _convert(vt, x, f"{key}.{k}") for k, x in v.items()}
    if tp is bool:
        if not isinstance(v, bool):
            raise ConfigError(f"{val.src}: {key} must be true or false, got {shown!r}")
        return v
    if tp is int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"{val.src}: {key} must be an integer, got {shown!r}")
        return v
    if tp is float:
        if isinstance(v, str) and _SCI.match(v):  # YAML 1.1 reads 1e-5 (no dot) as a string
            v = float(v)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"{val.src}: {key} must be a number, got {shown!r}")
        if not math.isfinite(v):
            raise ConfigError(f"{val.src}: {key}={v!r} is not a finite number (inf and nan are not accepted)")
        return float(v)
    if tp is str:
        if not isinstance(v, str):
            raise ConfigError(f"{val.src}: {key} must be a string, got {shown!r}")
        return v
    raise ConfigError(f"{val.src}: {key}: unsupported field type {_type_name(tp)}")


def _plain(val: _Val) -> Any:
    v = val.value
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def _check_range(f: dataclasses.Field, value: Any, key: str, val: _Val) -> None:
    bounds = f.metadata.get("range")
    if bounds is None or value is None:
        return
    if isinstance(value, dict):  # a mapping of numbers (e.g. per stage): every entry must be in the range
        for k, x in value.items():
            _check_range(f, x, f"{key}.{k}", val.value[k])
        return
    if isinstance(value, (list, tuple)):  # a sequence of numbers (e.g. AdamW betas): every entry too
        for i, x in enumerate(value):
            _check_range(f, x, f"{key}[{i}]", val.value[i])
        return
    src = val.src
    ge, gt, le, lt = bounds
    bad = (
        (ge is not None and value < ge)
        or (gt is not None and value <= gt)
        or (le is not None and value > le)
        or (lt is not None and value >= lt)
    )
    if bad:
        parts = [f">= {ge}" if ge is not None else "", f"> {gt}" if gt is not None else "",
                 f"<= {le}" if le is not None else "", f"< {lt}" if lt is not None else ""]  # fmt: skip
        raise ConfigError(f"{src}: {key}={value!r} is out of range (must be {' and '.join(p for p in parts if p)})")


def _check_one_of(f: dataclasses.Field, value: Any, key: str, src: _Src) -> None:
    choice = f.metadata.get("one_of")
    if choice is None or value is None:
        return
    kind, names = choice
    valid = sorted(names())
    if value not in valid:
        close = difflib.get_close_matches(str(value), valid, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{src}: {key}={value!r} is not a registered {kind}; valid names: {valid}.{hint}")


def _find_src(tree: _Val, dotted: str) -> _Src | None:
    """Source of the value at ``a.b.c`` inside ``tree`` (None where it was not given)."""
    node = tree
    for part in dotted.split("."):
        if not isinstance(node.value, dict) or part not in node.value:
            return None
        node = node.value[part]
    return node.src


def _build(cls: type[T], tree: _Val, prefix: str = "") -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    given: dict[str, _Val] = tree.value
    for k, v in given.items():
        if k not in fields:
            close = difflib.get_close_matches(k, list(fields), n=1, cutoff=0.5)
            hint = f" Did you mean '{prefix}{close[0]}'?" if close else f" Valid keys: {sorted(fields)}"
            raise ConfigError(f"{v.src}: unknown key '{prefix}{k}'.{hint}")
    kwargs = {}
    for name, f in fields.items():
        if name in given:
            kwargs[name] = _convert(hints[name], given[name], prefix + name)
            _check_range(f, kwargs[name], prefix + name, given[name])
            _check_one_of(f, kwargs[name], prefix + name, given[name].src)
        elif dataclasses.is_dataclass(hints[name]) and f.default is dataclasses.MISSING:
            kwargs[name] = _build(hints[name], _Val({}, tree.src), prefix + name + ".")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{tree.src}: missing required key '{prefix}{name}'")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except FieldError as e:
        src = _find_src(tree, e.key) or tree.src
        raise ConfigError(f"{src}: {prefix}{e.key}: {e}") from e
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{tree.src}: in section '{prefix.rstrip('.') or cls.__name__}': {e}") from e


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> T:
    """Build ``cls`` from a YAML file (optional) plus ``a.b=value`` overrides, checking keys, types and ranges."""
    tree = _read_yaml(Path(path)) if path is not None else _Val({}, _Src("<defaults>"))
    for o in overrides:
        tree = _merge(tree, _override_tree(o))
    return _build(cls, tree)


def config_from_dict(cls: type[T], data: dict, where: str = "<dict>") -> T:
    """Same checks as load_config for an in-memory mapping (e.g. a config stored in a checkpoint)."""
    node = yaml.compose(yaml.safe_dump(data, sort_keys=False))  # keep the order (rewards combine in it)
    return _build(cls, _from_node(node, where) if node is not None else _Val({}, _Src(where)))


def to_dict(cfg: Any) -> dict:
    """Plain-Python view of a config (tuples become lists) for YAML/JSON dumps."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, RawSection):
            return v.to_plain()
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(cfg)


def dump_config(cfg: Any, path: str | Path) -> None:
    """Write the fully resolved config as YAML (every run directory gets one)."""
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")


def field_docs(cls: type) -> dict[str, str]:
    """The attribute docstring under each field of a dataclass, read from its source."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for a, b in zip(body, body[1:]):
        if isinstance(a, ast.AnnAssign) and isinstance(a.target, ast.Name):
            if isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant) and isinstance(b.value.value, str):
                docs[a.target.id] = inspect.cleandoc(b.value.value)
    return docs


def describe(cls: type, prefix: str = "") -> list[str]:
    """``key (type, default): doc`` lines for every field, nested sections flattened (for --help)."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    lines = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            lines += describe(tp, prefix + f.name + ".")
            continue
        default = f.default if f.default is not dataclasses.MISSING else "(required)"
        if f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        lines.append(f"{prefix}{f.name} ({_type_name(tp)}, default {default!r}): {docs.get(f.name, '')}")
    return lines
