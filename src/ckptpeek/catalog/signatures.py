"""Name a checkpoint's encoder / decoder / head from its state-dict key names and shapes alone.

The knowledge is DATA: ``rules.yaml`` beside this module (shipped as package data), extended or
overridden by a user YAML file (``SignatureRules.load(path)``). This module only interprets it:

* find each component under its root (``encoder.model.``, ``decoder.``, ``head.`` ...) wherever a
  Lightning / DataParallel / compile wrapper put it (``model.``, ``net.``, ``module.`` ...);
* try the component's rules in order: ``detect`` regexes over the keys relative to the root, then
  ``measures`` read from specific weight shapes (channel widths, blocks per stage, block type),
  then ``variants`` (``when`` the measures equal given values -> a name, e.g. resnet50);
* always add ``generic``: top-level module -> parameter count (BatchNorm statistics left out).

Nothing here imports torch or reads tensor data: the input is ``{key: shape}``.

    >>> import ckptpeek
    >>> from ckptpeek.catalog.signatures import infer_signatures
    >>> with ckptpeek.open("epoch=3-step=1200.ckpt") as ckpt:
    ...     shapes = {k: tuple(t.shape) for k, t in ckpt["state_dict"].items()}
    >>> sigs = infer_signatures(shapes)
    >>> sigs.encoder.name, sigs.decoder.params["in_channels"]
    ('resnet18', [64, 128, 256, 512])
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import math
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .models import Signature, Signatures
from .text import load_text_file

__all__ = ("COMPONENTS", "MAX_KEY_CHARS", "RULES_PATH", "SignatureRules", "infer_signatures")

RULES_PATH = Path(__file__).with_name("rules.yaml")
COMPONENTS: tuple[str, ...] = ("encoder", "decoder", "head")
_RULE_LISTS = {"encoder": "encoders", "decoder": "decoders", "head": "heads"}
_MAX_CHILDREN = 32  # children listed in an unnamed component's params
#: State-dict keys longer than this are left out of the inference: real keys are under
#: ~250 characters (the longest of timm's and torchvision's models: 76), and every regex
#: of the rules then runs over short text, whatever the file holds.
MAX_KEY_CHARS = 1000


# --- the rule schema (validated: typos in a user file are errors, not silent no-ops) -------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


def _as_list(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


class Detect(_Strict):
    all_: list[str] = Field(default_factory=list, alias="all")
    any_: list[str] = Field(default_factory=list, alias="any")
    none: list[str] = Field(default_factory=list)


class Measure(_Strict):
    key: str | list[str] | None = None
    each: str | list[str] | None = None
    per_stage: str | list[str] | None = None
    cases: dict[str, str] | None = None
    exists: str | None = None
    count: str | None = None
    dim: int = 0
    parts: list[str] = Field(default_factory=list)
    reduce: Literal["list", "sum", "first", "last", "count"] = "list"
    divide_by: int | str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Measure:
        kinds = [
            k
            for k in ("key", "each", "per_stage", "cases", "exists", "count")
            if getattr(self, k) is not None
        ]
        if len(kinds) != 1:
            raise ValueError(
                "a measure needs exactly one of key/each/per_stage/cases/exists/count, "
                f"got {kinds or 'none'}"
            )
        if (
            self.per_stage is not None
            and "{part}" in "".join(_as_list(self.per_stage))
            and not self.parts
        ):
            raise ValueError("per_stage with {part} needs parts: [...]")
        return self


class Variant(_Strict):
    name: str
    when: dict[str, Any] = Field(default_factory=dict)
    info: dict[str, Any] = Field(default_factory=dict)


class ComponentRule(_Strict):
    name: str  # identifies the rule (a user file overrides / extends the rule of the same name)
    label: str | None = None  # the name reported, when not ``name`` (two layouts of one thing)
    aliases: list[str] = Field(default_factory=list)
    detect: Detect = Field(default_factory=Detect)
    stages: str | None = None
    measures: dict[str, Measure] = Field(default_factory=dict)
    variants: list[Variant] = Field(default_factory=list)
    disabled: bool = False


class ComponentRoots(_Strict):
    roots: list[str] = Field(default_factory=list)


class RulesDocument(_Strict):
    version: int = 1
    inherit: bool = (
        True  # only meaningful in a user file: false = do not start from the shipped rules
    )
    buffers: list[str] = Field(default_factory=list)
    strip_prefixes: list[str] = Field(default_factory=list)
    components: dict[Literal["encoder", "decoder", "head"], ComponentRoots] = Field(
        default_factory=dict
    )
    encoders: list[ComponentRule] = Field(default_factory=list)
    decoders: list[ComponentRule] = Field(default_factory=list)
    heads: list[ComponentRule] = Field(default_factory=list)


# --- compiled rules -------------------------------------------------------------------------------


class _Compiled:
    """A ComponentRule with its regexes compiled once."""

    __slots__ = ("rule", "all_", "any_", "none", "stages", "regex")

    def __init__(self, rule: ComponentRule, where: str):
        self.rule = rule
        self.regex: dict[str, re.Pattern[str]] = {}
        self.all_ = [self._re(p, f"{where}.detect.all") for p in rule.detect.all_]
        self.any_ = [self._re(p, f"{where}.detect.any") for p in rule.detect.any_]
        self.none = [self._re(p, f"{where}.detect.none") for p in rule.detect.none]
        self.stages = self._re(rule.stages, f"{where}.stages") if rule.stages else None
        if self.stages is not None and not {"stage", "block"} <= set(self.stages.groupindex):
            raise ValueError(
                f"{where}.stages: the regex needs named groups (?P<stage>...) and (?P<block>...)"
            )
        for mname, m in rule.measures.items():
            for pattern in (m.cases or {}).values():
                self._re(pattern, f"{where}.measures.{mname}")
            if m.exists:
                self._re(m.exists, f"{where}.measures.{mname}")
            if m.count:
                self._re(m.count, f"{where}.measures.{mname}")

    def _re(self, pattern: str, where: str) -> re.Pattern[str]:
        compiled = self.regex.get(pattern)
        if compiled is None:
            try:
                compiled = self.regex[pattern] = re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{where}: bad regex {pattern!r}: {exc}") from None
        return compiled


class SignatureRules:
    """The signature rules: the shipped ``rules.yaml``, optionally extended by user YAML files.

    ``SignatureRules()`` / ``SignatureRules.default()``: the shipped rules.
    ``SignatureRules.load(path, ...)``: the shipped rules extended/overridden by each file in turn.
    ``SignatureRules.from_dict(data)``: the same from already-parsed dicts.

    Merging a user document into the rules so far:

    * ``buffers``, ``strip_prefixes``, ``components.<c>.roots``: the user's entries go first;
    * ``encoders`` / ``decoders`` / ``heads``: matched by ``name``; a known name is updated field
      by field (``variants`` merged by variant name, the user's tried first; ``aliases`` united;
      ``disabled: true`` switches a shipped rule off); a new name is tried BEFORE the shipped rules;
    * ``inherit: false`` starts from nothing instead of the shipped rules.
    """

    def __init__(
        self, document: Mapping[str, Any] | None = None, *, _sources: tuple[str, ...] = ()
    ):
        raw = copy.deepcopy(dict(document)) if document is not None else _shipped_raw()
        try:
            self.document = RulesDocument.model_validate(raw)
        except ValidationError as exc:
            where = " + ".join(_sources) or "signature rules"
            raise ValueError(f"{where}: invalid signature rules:\n{exc}") from None
        self.sources: tuple[str, ...] = _sources or (str(RULES_PATH),)
        doc = self.document
        self.digest = hashlib.sha256(
            json.dumps(doc.model_dump(mode="json", by_alias=True), sort_keys=True).encode()
        ).hexdigest()
        self.strip_prefixes: tuple[str, ...] = tuple(p for p in doc.strip_prefixes if p)
        self.roots: dict[str, tuple[str, ...]] = {
            c: tuple(doc.components[c].roots) if c in doc.components else () for c in COMPONENTS
        }
        try:
            self._buffers = (
                re.compile("|".join(f"(?:{p})" for p in doc.buffers)) if doc.buffers else None
            )
            self.rules: dict[str, tuple[_Compiled, ...]] = {
                c: tuple(
                    _Compiled(r, f"{_RULE_LISTS[c]}[{r.name}]")
                    for r in getattr(doc, _RULE_LISTS[c])
                    if not r.disabled
                )
                for c in COMPONENTS
            }
        except (ValueError, re.error) as exc:
            where = " + ".join(_sources) or "signature rules"
            raise ValueError(f"{where}: {exc}") from None

    # -- construction --

    @classmethod
    def default(cls) -> SignatureRules:
        return _default_rules()

    @classmethod
    def load(cls, *paths: str | os.PathLike[str] | None) -> SignatureRules:
        """The shipped rules extended by the YAML (or JSON) files ``paths`` (None skipped)."""
        docs, names = [], []
        for path in paths:
            if path is None:
                continue
            p = Path(path)
            try:  # the catalog's one guarded text loader, as for every file it reads
                data = load_text_file(p)
            except (OSError, ValueError) as exc:
                raise ValueError(f"{p}: cannot read signature rules: {exc}") from None
            if data is None:
                data = {}
            if not isinstance(data, dict):
                raise ValueError(
                    f"{p}: signature rules must be a mapping, got {type(data).__name__}"
                )
            docs.append(data)
            names.append(str(p))
        if not docs:
            return cls.default()
        return cls.from_dict(*docs, _names=tuple(names))

    @classmethod
    def from_dict(
        cls, *documents: Mapping[str, Any], _names: tuple[str, ...] = ()
    ) -> SignatureRules:
        merged = _shipped_raw()
        for i, doc in enumerate(documents):
            if not isinstance(doc, Mapping):
                raise ValueError(f"signature rules must be a mapping, got {type(doc).__name__}")
            name = _names[i] if i < len(_names) else f"rules[{i}]"
            try:
                merged = _merge(merged, doc)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{name}: {exc}") from None
        return cls(merged, _sources=(str(RULES_PATH), *(_names or ())))

    @classmethod
    def coerce(
        cls, rules: SignatureRules | str | Path | Mapping[str, Any] | None
    ) -> SignatureRules:
        """``build_catalog(rules=...)`` accepts a SignatureRules, a path, a dict or None."""
        if rules is None:
            return cls.default()
        if isinstance(rules, SignatureRules):
            return rules
        if isinstance(rules, (str, Path)):
            return cls.load(rules)
        if isinstance(rules, Mapping):
            return cls.from_dict(rules)
        raise TypeError(
            f"rules: expected SignatureRules, a path or a dict, got {type(rules).__name__}"
        )

    # -- queries --

    def is_buffer(self, key: str) -> bool:
        """A BatchNorm statistic or another non-parameter (``buffers:``), left out of the counts."""
        return self._buffers is not None and self._buffers.search(key) is not None

    def canonical_name(self, component: str, name: str | None) -> str | None:
        """Map a config's spelling ("pan_decoder", "DB_Head") to the rule name ("pan", "db")."""
        if not name:
            return name
        low = str(name).lower()
        for compiled in self.rules.get(component, ()):
            r = compiled.rule
            if low in (r.name.lower(), (r.label or "").lower(), *(a.lower() for a in r.aliases)):
                return r.label or r.name
            for v in r.variants:
                if low == v.name.lower():
                    return v.name
        return name

    def names(self, component: str) -> list[str]:
        """Every name the rules can give a component (rule names, or their variants' names)."""
        out: list[str] = []
        for compiled in self.rules.get(component, ()):
            r = compiled.rule
            out.extend(v.name for v in r.variants) if r.variants else out.append(r.label or r.name)
        return _unique(out)

    def __repr__(self) -> str:
        counts = ", ".join(f"{len(self.rules[c])} {_RULE_LISTS[c]}" for c in COMPONENTS)
        return f"SignatureRules({counts}; from {', '.join(self.sources)})"


@functools.lru_cache(maxsize=1)
def _shipped_text() -> str:
    return RULES_PATH.read_text(encoding="utf-8")


def _shipped_raw() -> dict[str, Any]:
    data = yaml.safe_load(_shipped_text())
    return data if isinstance(data, dict) else {}


@functools.lru_cache(maxsize=1)
def _default_rules() -> SignatureRules:
    return SignatureRules(_shipped_raw())


def _merge(base: dict[str, Any], user: Mapping[str, Any]) -> dict[str, Any]:
    own = copy.deepcopy(dict(user))
    if own.pop("inherit", True) is False:
        return own
    out = copy.deepcopy(base)
    for key, value in own.items():
        if key in ("buffers", "strip_prefixes"):
            out[key] = _unique(_as_list(value) + list(out.get(key) or []))
        elif key == "components":
            if not isinstance(value, Mapping):
                raise TypeError("components must be a mapping")
            comps = out.setdefault("components", {})
            for comp, spec in value.items():
                if not isinstance(spec, Mapping):
                    raise TypeError(f"components.{comp} must be a mapping")
                old = comps.setdefault(comp, {})
                old["roots"] = _unique(_as_list(spec.get("roots")) + list(old.get("roots") or []))
                for extra, v in spec.items():
                    if extra != "roots":
                        old[extra] = v  # rejected by validation with a clear message
        elif key in _RULE_LISTS.values():
            if not isinstance(value, list):
                raise TypeError(f"{key} must be a list of rules")
            out[key] = _merge_rule_list(list(out.get(key) or []), value, key)
        else:
            out[key] = value
    return out


def _merge_rule_list(base: list[Any], user: list[Any], where: str) -> list[Any]:
    index = {r.get("name"): i for i, r in enumerate(base) if isinstance(r, Mapping)}
    new: list[Any] = []
    for rule in user:
        if not isinstance(rule, Mapping) or "name" not in rule:
            raise TypeError(f"every entry of {where} needs a name")
        i = index.get(rule["name"])
        if i is None:
            new.append(dict(rule))
            continue
        merged = dict(base[i])
        for field, value in rule.items():
            if field == "variants":
                vnames = {v.get("name") for v in value if isinstance(v, Mapping)}
                merged["variants"] = list(value) + [
                    v
                    for v in merged.get("variants") or []
                    if not (isinstance(v, Mapping) and v.get("name") in vnames)
                ]
            elif field == "aliases":
                merged["aliases"] = _unique(_as_list(value) + list(merged.get("aliases") or []))
            elif field == "measures" and isinstance(value, Mapping):
                merged["measures"] = {**(merged.get("measures") or {}), **value}
            else:
                merged[field] = value
        base[i] = merged
    return new + base


def _unique(items: Iterable[Any]) -> list[Any]:
    seen: list[Any] = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return seen


# --- inference ------------------------------------------------------------------------------------


def _clean(shapes: Mapping[Any, Any]) -> dict[str, tuple[int, ...] | None]:
    """Keys as str; shapes as tuples of non-negative ints, or None when not a usable shape."""
    out: dict[str, tuple[int, ...] | None] = {}
    try:
        items = list(shapes.items())
    except (AttributeError, TypeError):
        return out
    for key, shape in items:
        if not isinstance(key, str) or not key or len(key) > MAX_KEY_CHARS:
            continue
        out[key] = _shape(shape)
    return out


def _shape(shape: Any) -> tuple[int, ...] | None:
    if isinstance(shape, tuple):  # the common case (TensorRef.shape): checked in one pass
        for d in shape:
            if type(d) is not int or d < 0:
                break
        else:
            return tuple(shape)
    if shape is None or isinstance(shape, (str, bytes)):
        return None
    if hasattr(shape, "shape") and not isinstance(
        shape, (tuple, list)
    ):  # an array / tensor / TensorInfo
        shape = shape.shape
    try:
        dims = tuple(shape)
    except TypeError:
        return None
    result = []
    for d in dims:
        if isinstance(d, bool):
            return None
        try:
            i = int(d)
        except (TypeError, ValueError, OverflowError):
            return None
        if i != d or i < 0:
            return None
        result.append(i)
    return tuple(result)


def _numel(shape: tuple[int, ...] | None) -> int:
    return math.prod(shape) if shape is not None else 0


def _is_wrapper(prefix: str, wrappers: tuple[str, ...]) -> bool:
    pos = 0
    while pos < len(prefix):
        for w in wrappers:
            if w and prefix.startswith(w, pos):
                pos += len(w)
                break
        else:
            return False
    return True


def _find_root(
    keys: Iterable[str], root: str, wrappers: tuple[str, ...] = ()
) -> tuple[str, list[str]] | None:
    """The prefix most keys have before ``root`` (at a dotted boundary) and their keys after it."""
    if not root:
        return None
    by_prefix: dict[str, list[str]] = defaultdict(list)
    for key in keys:
        start = 0
        while True:
            pos = key.find(root, start)
            if pos < 0:
                break
            if pos == 0 or key[pos - 1] == ".":
                rest = key[pos + len(root) :]
                if rest:
                    by_prefix[key[:pos]].append(rest)
                break
            start = pos + 1
    if not by_prefix:
        return None
    # a prefix made of known wrappers ("model.", "net.module.") first, then most keys, shortest
    prefix = min(
        by_prefix, key=lambda p: (not _is_wrapper(p, wrappers), -len(by_prefix[p]), len(p), p)
    )
    return prefix, by_prefix[prefix]


def _strip_common(keys: list[str], prefixes: tuple[str, ...]) -> str:
    """The wrapper prefix (a chain of ``prefixes``) that every key has, longer than none.

    Linear: the common prefix of all keys is that of the smallest and the largest."""
    if not keys or not prefixes:
        return ""
    common = os.path.commonprefix([min(keys), max(keys)])
    shortest = min(map(len, keys))
    pos = 0
    while True:
        for p in prefixes:
            if p and common.startswith(p, pos) and pos + len(p) < shortest:
                pos += len(p)
                break
        else:
            return common[:pos]


class _Keys:
    """The keys of one component (relative to its root) with their shapes."""

    def __init__(self, local: dict[str, tuple[int, ...] | None], counts: dict[str, int]):
        self.shapes = local
        self.names = list(local)
        self.counts = counts  # local key -> parameters (0 for buffers and unusable shapes)
        self._search: dict[str, bool] = {}

    def matches(self, pattern: re.Pattern[str]) -> bool:
        hit = self._search.get(pattern.pattern)
        if hit is None:
            hit = self._search[pattern.pattern] = any(pattern.search(k) for k in self.names)
        return hit

    def dim(self, key: str, dim: int) -> int | None:
        shape = self.shapes.get(key)
        if shape is None:
            return None
        try:
            return shape[dim]
        except IndexError:
            return None


def _measure(
    m: Measure,
    keys: _Keys,
    compiled: _Compiled,
    stages: dict[int, list[int]] | None,
    measured: dict[str, Any],
) -> Any:
    if m.key is not None:
        value = next((v for k in _as_list(m.key) if (v := keys.dim(k, m.dim)) is not None), None)
        return _divide(value, m.divide_by, measured)
    if m.each is not None:
        values: list[int] = []
        templates = _as_list(m.each)
        for i in range(10_000):
            value = next(
                (
                    v
                    for t in templates
                    if (v := keys.dim(t.replace("{i}", str(i)), m.dim)) is not None
                ),
                None,
            )
            if value is None:
                break
            values.append(value)
        if not values:
            return None
        divided = [_divide(v, m.divide_by, measured) for v in values]
        if any(v is None for v in divided):
            return None
        values = [v for v in divided if v is not None]
        return {
            "list": values,
            "sum": sum(values),
            "first": values[0],
            "last": values[-1],
            "count": len(values),
        }[m.reduce]
    if m.per_stage is not None:
        if not stages:
            return None
        out = []
        for stage, blocks in stages.items():
            last = blocks[-1]
            value = None
            for template in _as_list(m.per_stage):
                for part in m.parts or [""]:
                    key = (
                        template.replace("{stage}", str(stage))
                        .replace("{block}", str(last))
                        .replace("{part}", part)
                    )
                    value = keys.dim(key, m.dim)
                    if value is not None:
                        break
                if value is not None:
                    break
            if value is None:
                return None
            out.append(value)
        return out
    if m.cases is not None:
        return next(
            (case for case, pattern in m.cases.items() if keys.matches(compiled.regex[pattern])),
            None,
        )
    if m.exists is not None:
        return keys.matches(compiled.regex[m.exists])
    if m.count is not None:
        pattern = compiled.regex[m.count]
        seen = set()
        for k in keys.names:
            hit = pattern.search(k)
            if hit:
                seen.add(hit.group(1) if pattern.groups else k)
        return len(seen)
    return None  # pragma: no cover - the validator allows nothing else


def _divide(value: int | None, by: int | str | None, measured: Mapping[str, Any]) -> int | None:
    if value is None or by is None:
        return value
    if isinstance(by, str):
        ref = measured.get(by)
        by = len(ref) if isinstance(ref, list) else ref
    if not isinstance(by, int) or isinstance(by, bool) or by <= 0:
        return None
    return value // by


def _stages(pattern: re.Pattern[str], keys: _Keys) -> dict[int, list[int]]:
    found: dict[int, set[int]] = defaultdict(set)
    for k in keys.names:
        hit = pattern.search(k)
        if hit:
            try:
                found[int(hit.group("stage"))].add(int(hit.group("block")))
            except (TypeError, ValueError):
                continue
    return {s: sorted(found[s]) for s in sorted(found)}


def _detects(compiled: _Compiled, keys: _Keys) -> bool:
    if not (compiled.all_ or compiled.any_):
        return False  # a rule that detects nothing never claims a component
    return (
        all(keys.matches(p) for p in compiled.all_)
        and (not compiled.any_ or any(keys.matches(p) for p in compiled.any_))
        and not any(keys.matches(p) for p in compiled.none)
    )


def _apply(compiled: _Compiled, keys: _Keys) -> Signature:
    rule = compiled.rule
    params: dict[str, Any] = {}
    stages = None
    if compiled.stages is not None:
        stages = _stages(compiled.stages, keys)
        if stages:
            params["blocks_per_stage"] = [len(b) for b in stages.values()]
            params["num_stages"] = len(stages)
            params["num_blocks"] = sum(len(b) for b in stages.values())
    name: str | None
    for name, m in rule.measures.items():
        value = _measure(m, keys, compiled, stages, params)
        if value is not None:
            params[name] = value
    name = rule.label or rule.name
    if rule.variants:
        params["family"] = rule.name
        name = None
        for variant in rule.variants:
            if all(_equal(params.get(k), v) for k, v in variant.when.items()):
                name = variant.name
                for k, v in variant.info.items():
                    params.setdefault(k, v)
                break
    params.update(_counts(keys))
    return Signature(name=name, params=params)


def _equal(measured: Any, expected: Any) -> bool:
    if isinstance(expected, (list, tuple)):
        return isinstance(measured, (list, tuple)) and list(measured) == list(expected)
    return measured is not None and measured == expected


def _counts(keys: _Keys) -> dict[str, int]:
    return {"num_params": sum(keys.counts.values()), "num_tensors": len(keys.names)}


def _unnamed(keys: _Keys) -> Signature:
    children = _unique(k.split(".", 1)[0] for k in keys.names)
    params: dict[str, Any] = dict(_counts(keys))
    params["children"] = children[:_MAX_CHILDREN]
    return Signature(name=None, params=params)


def infer_signatures(
    shapes: Mapping[str, tuple[int, ...]],
    rules: SignatureRules | str | Path | Mapping[str, Any] | None = None,
) -> Signatures:
    """Encoder / decoder / head signatures and a generic summary from ``{state-dict key: shape}``.

    Keys may carry any wrapper prefix (``model.``, ``net.``, ``module.``, ``state_dict.`` ...).
    A component found under its root but recognised by no rule is ``Signature(name=None, params=
    {num_params, num_tensors, children})``; one not present at all is None. ``generic`` (top-level
    module -> parameter count, BatchNorm statistics excluded) is always filled. Never raises on odd
    input: unusable shapes count as no parameters and are never measured.
    """
    rules = SignatureRules.coerce(rules)
    table = _clean(shapes)
    if not table:
        return Signatures()
    return _infer(table, rules)


def _infer(table: dict[str, tuple[int, ...] | None], rules: SignatureRules) -> Signatures:
    keys = list(table)
    counts = {k: 0 if rules.is_buffer(k) else _numel(s) for k, s in table.items()}
    bare_prefix = _strip_common(keys, rules.strip_prefixes)
    found: dict[str, Signature | None] = {}
    prefixes: Counter[str] = Counter()
    for component in COMPONENTS:
        first_unnamed: tuple[str, _Keys] | None = None
        result: Signature | None = None
        for root in rules.roots[component]:
            if root == "":
                cut = len(bare_prefix)
                local = _Keys({k[cut:]: table[k] for k in keys}, {k[cut:]: counts[k] for k in keys})
                prefix = bare_prefix
            else:
                hit = _find_root(keys, root, rules.strip_prefixes)
                if hit is None:
                    continue
                prefix, rest = hit
                base = prefix + root
                local = _Keys(
                    {r: table[base + r] for r in rest}, {r: counts[base + r] for r in rest}
                )
            compiled = next((c for c in rules.rules[component] if _detects(c, local)), None)
            if compiled is not None:
                result = _apply(compiled, local)
                prefixes[prefix] += 1
                break
            if root and first_unnamed is None:
                first_unnamed = (prefix, local)
        if result is None and first_unnamed is not None:
            prefixes[first_unnamed[0]] += 1
            result = _unnamed(first_unnamed[1])
        found[component] = result

    # generic: top-level module (below the model prefix the components live under) -> parameters
    model_prefix = min(prefixes, key=lambda p: (-prefixes[p], len(p))) if prefixes else bare_prefix
    generic: dict[str, int] = {}
    for key in keys:
        name = key[len(model_prefix) :] if model_prefix and key.startswith(model_prefix) else key
        top = name.split(".", 1)[0] or name
        generic[top] = generic.get(top, 0) + counts[key]
    return Signatures(
        encoder=found["encoder"], decoder=found["decoder"], head=found["head"], generic=generic
    )
