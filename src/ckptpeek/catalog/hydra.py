"""The Hydra run directory of a checkpoint: ``.hydra/config.yaml`` + ``overrides.yaml``.

``find_hydra_dir`` walks up from the checkpoint to the catalog root for the nearest
``.hydra/config.yaml``. ``load_hydra_config`` reads it with the catalog's guarded loader
(``text.py``: size, nodes with aliases expanded, depth and integer digits capped; one
node budget for the config, its overrides, their values and the mappings they create or
copy), applies ``overrides.yaml`` as dotted-key assignments (``a.b=1``, ``+a.b=1``, ``++a.b=1``,
``~a.b``; config-group selections such as ``model/encoder=resnet34`` or ``model=dbnet``
over a mapping are already reflected in the composed ``config.yaml`` and are skipped;
a mapping YAML aliases share is copied before an override writes into it, as OmegaConf
holds one copy per place),
and resolves ``${...}`` node interpolations (resolver calls such as ``${oc.env:X}`` and
``${hydra:...}`` stay as written; interpolations that would exceed ckptpeek's limits are
left unresolved with a note). ``hydra.yaml`` is ignored.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ckptpeek
from ckptpeek import DEFAULT_LIMITS, Limits
from ckptpeek.unpickle import resolve_interpolations

from .text import TextBudget, TextError, check_depth, load_text_file, parse_text

__all__ = (
    "apply_overrides",
    "find_hydra_dir",
    "load_hydra_config",
    "load_yaml_or_json",
    "parse_override",
    "resolve_config",
)


def find_hydra_dir(start: Path, root: Path) -> Path | None:
    """The nearest ``.hydra`` directory holding ``config.yaml``, from ``start``'s directory
    up to ``root`` (inclusive); ``None`` if there is none."""
    here = start if start.is_dir() else start.parent
    root = root.resolve()
    while True:
        candidate = here / ".hydra"
        # lexists, not is_file: a FIFO or a dangling link is found, and refused with a
        # note by the loader, instead of silently ignored
        if os.path.lexists(candidate / "config.yaml"):
            return candidate
        if here == root or here.parent == here or root not in here.parents:
            return None
        here = here.parent


def load_yaml_or_json(
    path: Path,
    limits: Limits = DEFAULT_LIMITS,
    root: Path | None = None,
    budget: TextBudget | None = None,
) -> Any:
    """Parse a ``.json`` file as JSON, anything else as YAML (safe), with every text guard.

    Raises ValueError (``TextError``: malformed, over a limit, not a regular file, a
    symlink out of ``root``) or OSError."""
    return load_text_file(path, limits, root, budget)


def parse_override(text: str, budget: TextBudget | None = None) -> tuple[str, str, Any] | None:
    """``"+a.b=1"`` -> ``("+", "a.b", 1)``; ``"~a.b"`` -> ``("~", "a.b", None)``;
    None if unparseable. A value over a limit raises TextError."""
    text = text.strip()
    if text.startswith("~"):
        key, _, _ = text[1:].partition("=")
        return ("~", key.strip(), None) if key.strip() else None
    op = ""
    for prefix in ("++", "+"):
        if text.startswith(prefix):
            op, text = prefix, text[len(prefix) :]
            break
    key, eq, raw = text.partition("=")
    key = key.strip()
    if not eq or not key:
        return None
    raw = raw.strip()
    try:
        value = parse_text(raw, "yaml", budget) if raw else ""
    except TextError as exc:
        if exc.limit is not None:
            raise
        value = raw  # not YAML: Hydra takes it as a string
    return op, key, value


def _show(item: Any) -> str:
    text = ckptpeek.printable(item if isinstance(item, str) else type(item).__name__)
    return repr(text if len(text) <= 80 else text[:77] + "...")


#: notes ``apply_overrides`` gives one by one; past them, one note counts the rest
MAX_OVERRIDE_NOTES = 20


def apply_overrides(
    cfg: dict[str, Any], overrides: list[Any], budget: TextBudget | None = None
) -> list[str]:
    """Apply Hydra command-line overrides to ``cfg`` in place; return notes for skipped ones.

    An override key deeper than ``max_depth`` parts, or a value over a limit, is skipped
    with a note. ``budget`` (shared with the config) counts every node the overrides
    add: their values' nodes, each mapping a dotted key creates (``+a.b.c=1`` over an
    empty config makes two) and each entry of a mapping they copy (``_Shared``), counted
    before they are made; once it is spent the rest are not applied (one note says how
    many). At most ``MAX_OVERRIDE_NOTES`` notes, then one that counts the others."""
    budget = budget if budget is not None else TextBudget()
    shared = _Shared(cfg)
    notes: list[str] = []
    skipped = 0

    def note(text: str) -> None:
        nonlocal skipped
        if len(notes) < MAX_OVERRIDE_NOTES:
            notes.append(text)
        else:
            skipped += 1

    for done, item in enumerate(overrides):
        if not isinstance(item, str):
            note(f"override {_show(item)} is not a string; skipped")
            continue
        try:
            parsed = parse_override(item, budget)
            if parsed is None:
                note(f"override {_show(item)} not understood; skipped")
                continue
            if not _apply(cfg, item, *parsed, budget, shared, note):
                continue
        except TextError as exc:
            if exc.limit != "max_text_nodes":
                note(f"override {_show(item)}: {exc}; skipped")
                continue
            # the budget is spent: every later override would fail the same way
            notes.append(f"overrides: {exc}; {len(overrides) - done} not applied")
            break
    if skipped:
        notes.append(f"{skipped} more override(s) skipped")
    return notes


class _Shared:
    """Copy-on-write for the mappings a YAML alias shares (``b: *a``).

    The loader builds an aliased mapping once and puts it in every place that names
    it (its nodes counted once per place); Hydra (OmegaConf) holds a copy in each
    place, so an override of ``a.x`` changes ``a`` only. Writing through the shared
    mapping would change every place, and make one override's nodes count once but
    appear (and be walked, resolved, summarised) once per place: 2,000 aliases and
    100 overrides of 190 parts were 38 million nodes from a 50 KB config. So an
    override walks only through mappings of one place: a shared one on its path is
    copied first (shallow: its entries count against the budget; what they hold
    gains a parent).

    ``refs`` counts the parents of each mapping in the config, from one walk that
    visits each mapping once; a mapping on the path whose parent is in one place and
    that has one parent is in one place itself."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.refs: dict[int, int] = {}
        seen = {id(cfg)}
        todo: list[Any] = [cfg]
        while todo:
            node = todo.pop()
            for child in node.values() if isinstance(node, dict) else node:
                if isinstance(child, (dict, list)):
                    self.refs[id(child)] = self.refs.get(id(child), 0) + 1
                    if id(child) not in seen:
                        seen.add(id(child))
                        todo.append(child)

    def own(
        self, parent: dict[Any, Any], key: Any, child: dict[Any, Any], budget: TextBudget
    ) -> Any:
        """``parent[key]`` (``child``, a mapping), copied into place first if shared."""
        if self.refs.get(id(child), 1) <= 1:
            return child
        budget.add(len(child))  # before the copy is made
        copy = dict(child)
        self.refs[id(child)] -= 1
        self.refs[id(copy)] = 1
        for value in copy.values():
            if isinstance(value, (dict, list)):
                self.refs[id(value)] = self.refs.get(id(value), 0) + 1
        parent[key] = copy
        return copy


def _apply(
    cfg: dict[str, Any],
    item: str,
    op: str,
    key: str,
    value: Any,
    budget: TextBudget,
    shared: _Shared,
    note: Callable[[str], None],
) -> bool:
    """One parsed override; False (with a note, or silently for what Hydra has composed
    already) when it is skipped. Raises TextError when ``budget`` is spent."""
    if "/" in key or "@" in key or key.startswith("hydra."):
        return False  # config-group selection or Hydra's own settings: already composed
    if key.count(".") >= budget.limits.max_depth:
        note(
            f"override {_show(item)}: a key of more than {budget.limits.max_depth} "
            "parts (Limits.max_depth); skipped"
        )
        return False
    parts = key.split(".")
    node: Any = cfg
    depth = 0
    for part in parts[:-1]:  # the part of the path that exists
        nxt = dict.get(node, part)
        if nxt is None:
            break
        if not isinstance(nxt, dict):
            note(f"override {_show(item)}: the key is not inside a mapping; skipped")
            return False
        node, depth = shared.own(node, part, nxt, budget), depth + 1
    missing = parts[depth:-1]
    if op == "~":
        if missing:
            note(f"override {_show(item)}: the key is not inside a mapping; skipped")
        else:
            node.pop(parts[-1], None)
        return not missing
    budget.add(len(missing))  # the mappings this override creates, before they are made
    for part in missing:
        budget.key(part, node)
        child: dict[str, Any] = {}
        node[part] = child
        node = child
    last = parts[-1]
    if isinstance(node.get(last), dict) and not isinstance(value, dict):
        return False  # a group selection (model=dbnet) over the composed mapping
    budget.key(last, node)
    node[last] = value
    return True


def resolve_config(cfg: dict[str, Any], limits: Limits = DEFAULT_LIMITS) -> list[str]:
    """Resolve ``cfg``'s interpolations in place, producing at most
    ``limits.max_interpolated_bytes`` of text; a note if that limit stopped it."""
    try:
        resolve_interpolations(cfg, max_bytes=limits.max_interpolated_bytes)
    except ckptpeek.CheckpointError as exc:
        return [f"interpolations not resolved: {exc}"]
    return []


def load_hydra_config(
    hydra_dir: Path, limits: Limits = DEFAULT_LIMITS, root: Path | None = None
) -> tuple[dict[str, Any], list[str]]:
    """The composed config of a Hydra run, overrides applied, interpolations resolved.

    Raises ValueError (malformed or over a limit: config.yaml) or OSError; a malformed
    ``overrides.yaml`` is only a note."""
    budget = TextBudget(limits)
    cfg = load_yaml_or_json(hydra_dir / "config.yaml", limits, root, budget)
    if cfg is None:
        cfg = {}
    if not isinstance(cfg, dict):
        raise TextError(f"config.yaml holds a {type(cfg).__name__}, not a mapping")
    notes: list[str] = []
    overrides_path = hydra_dir / "overrides.yaml"
    if os.path.lexists(overrides_path):
        try:
            overrides = load_yaml_or_json(overrides_path, limits, root, budget)
        except (ValueError, OSError) as exc:
            notes.append(f"{overrides_path.name}: {exc}; overrides not applied")
            overrides = None
        if isinstance(overrides, list):
            notes += apply_overrides(cfg, overrides, budget)
        elif overrides is not None:
            notes.append(f"{overrides_path.name} is not a list; overrides not applied")
    cfg.pop("hydra", None)
    check_depth(cfg, budget)  # overrides may have nested it further
    notes += resolve_config(cfg, limits)
    return cfg, notes


def stamp_of(path: Path) -> tuple[str, int, int] | None:
    """``(path, size, mtime_ns)`` of an existing file, else None (for cache validity)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (str(path), st.st_size, st.st_mtime_ns)
