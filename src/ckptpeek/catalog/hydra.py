"""The Hydra run directory of a checkpoint: ``.hydra/config.yaml`` + ``overrides.yaml``.

``find_hydra_dir`` walks up from the checkpoint to the catalog root for the nearest
``.hydra/config.yaml``. ``load_hydra_config`` reads it with ``yaml.safe_load``, applies
``overrides.yaml`` as dotted-key assignments (``a.b=1``, ``+a.b=1``, ``++a.b=1``,
``~a.b``; config-group selections such as ``model/encoder=resnet34`` or ``model=dbnet``
over a mapping are already reflected in the composed ``config.yaml`` and are skipped),
and resolves ``${...}`` node interpolations (resolver calls such as ``${oc.env:X}`` and
``${hydra:...}`` stay as written). ``hydra.yaml`` is ignored.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from ckptpeek.unpickle import resolve_interpolations

__all__ = (
    "apply_overrides",
    "find_hydra_dir",
    "load_hydra_config",
    "load_yaml_or_json",
    "parse_override",
)


def _yaml_load(text: str) -> Any:
    """yaml.safe_load, with libyaml's C loader when PyYAML has it (the same safe loader)."""
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def find_hydra_dir(start: Path, root: Path) -> Path | None:
    """The nearest ``.hydra`` directory holding ``config.yaml``, from ``start``'s directory
    up to ``root`` (inclusive); ``None`` if there is none."""
    here = start if start.is_dir() else start.parent
    root = root.resolve()
    while True:
        candidate = here / ".hydra"
        if (candidate / "config.yaml").is_file():
            return candidate
        if here == root or here.parent == here or root not in here.parents:
            return None
        here = here.parent


def load_yaml_or_json(path: Path) -> Any:
    """Parse a ``.json`` file with json, anything else with ``yaml.safe_load``.

    Raises ValueError (malformed) or OSError."""
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"malformed JSON: {exc}") from None
    try:
        return _yaml_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"malformed YAML: {' '.join(str(exc).split())}") from None


def parse_override(text: str) -> tuple[str, str, Any] | None:
    """``"+a.b=1"`` -> ``("+", "a.b", 1)``; ``"~a.b"`` -> ``("~", "a.b", None)``;
    None if unparseable."""
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
        value = _yaml_load(raw) if raw else ""
    except yaml.YAMLError:
        value = raw
    return op, key, value


def apply_overrides(cfg: dict[str, Any], overrides: list[Any]) -> list[str]:
    """Apply Hydra command-line overrides to ``cfg`` in place; return notes for skipped ones."""
    notes: list[str] = []
    for item in overrides:
        if not isinstance(item, str):
            notes.append(f"override {item!r} is not a string; skipped")
            continue
        parsed = parse_override(item)
        if parsed is None:
            notes.append(f"override {item!r} not understood; skipped")
            continue
        op, key, value = parsed
        if "/" in key or "@" in key or key.startswith("hydra."):
            continue  # config-group selection or Hydra's own settings: already composed
        parts = key.split(".")
        node: Any = cfg
        ok = True
        for part in parts[:-1]:
            nxt = node.get(part) if isinstance(node, dict) else None
            if nxt is None and op != "~":
                nxt = {}
                node[part] = nxt
            if not isinstance(nxt, dict):
                ok = False
                break
            node = nxt
        if not ok:
            notes.append(f"override {item!r}: {key} is not inside a mapping; skipped")
            continue
        last = parts[-1]
        if op == "~":
            node.pop(last, None)
            continue
        if isinstance(node.get(last), dict) and not isinstance(value, dict):
            continue  # a group selection (model=dbnet) over the composed mapping
        node[last] = value
    return notes


def load_hydra_config(hydra_dir: Path) -> tuple[dict[str, Any], list[str]]:
    """The composed config of a Hydra run, overrides applied, interpolations resolved.

    Raises ValueError (malformed config.yaml) or OSError; a malformed ``overrides.yaml``
    is only a note."""
    cfg = load_yaml_or_json(hydra_dir / "config.yaml")
    if cfg is None:
        cfg = {}
    if not isinstance(cfg, dict):
        raise ValueError(f"config.yaml holds a {type(cfg).__name__}, not a mapping")
    notes: list[str] = []
    overrides_path = hydra_dir / "overrides.yaml"
    if overrides_path.is_file():
        try:
            overrides = load_yaml_or_json(overrides_path)
        except (ValueError, OSError) as exc:
            notes.append(f"{overrides_path.name}: {exc}; overrides not applied")
            overrides = None
        if isinstance(overrides, list):
            notes += apply_overrides(cfg, overrides)
        elif overrides is not None:
            notes.append(f"{overrides_path.name} is not a list; overrides not applied")
    cfg.pop("hydra", None)
    resolve_interpolations(cfg)
    return cfg, notes


def stamp_of(path: Path) -> tuple[str, int, int] | None:
    """``(path, size, mtime_ns)`` of an existing file, else None (for cache validity)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (str(path), st.st_size, st.st_mtime_ns)
