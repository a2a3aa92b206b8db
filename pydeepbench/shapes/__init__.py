"""Shape sets: versioned data files (one per set) that name their public source.

File format (TOML): schema = "pydeepbench.shapes/1", name, op, version, seed, source, and
`cases`, a list of tables holding the op's shape keys (plus an optional `name`). Code never
hard-codes a benchmark shape; pytest ids and CLI sweeps both come from these files.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

SCHEMA = "pydeepbench.shapes/1"
_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Case:
    name: str
    shape: dict
    seed: int


@dataclass(frozen=True)
class ShapeSet:
    name: str
    op: str
    version: int
    source: str
    cases: list[Case] = field(default_factory=list)
    path: str = ""


def builtin_sets(op: str | None = None) -> dict[str, Path]:
    """Set name -> file for the sets shipped with pydeepbench (optionally for one op)."""
    sets = {}
    want = _set_op(op) if op is not None else None
    for p in sorted(_DIR.glob("*.toml")):
        if want is None or _peek_op(p) == want:
            sets[p.stem] = p
    return sets


def _set_op(op: str) -> str:
    """The op whose shape sets `op` uses (itself, unless its spec names another)."""
    from pydeepbench import registry

    return registry.get_op(op).shape_op or op


def _peek_op(path: Path) -> str | None:
    with path.open("rb") as f:
        return tomllib.load(f).get("op")


def load(name_or_path: str, op: str | None = None) -> ShapeSet:
    """Load a built-in set by name, or a file by path; validate it against the op."""
    path = Path(name_or_path)
    if path.suffix == ".toml" and not path.exists():
        raise ValueError(f"shape set file {name_or_path!r} does not exist")
    if path.suffix != ".toml":
        sets = builtin_sets()
        if name_or_path not in sets:
            mine = builtin_sets(op) if op is not None else sets
            raise ValueError(
                f"unknown shape set {name_or_path!r}; built-in sets"
                f"{f' for {op}' if op is not None else ''}: {', '.join(mine)} "
                "(or pass a path to a .toml file)"
            )
        path = sets[name_or_path]
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid TOML: {e}") from e
    for key in ("schema", "name", "op", "version", "source", "cases"):
        if key not in data:
            raise ValueError(f"{path}: missing field {key!r}")
    if data["schema"] != SCHEMA:
        raise ValueError(f"{path}: schema is {data['schema']!r}, expected {SCHEMA!r}")
    for key, kind, what in (
        ("name", str, "a string"),
        ("op", str, "a string"),
        ("source", str, "a string"),
        ("version", int, "an integer"),
    ):
        if not isinstance(data[key], kind) or isinstance(data[key], bool):
            raise ValueError(f"{path}: {key} must be {what}, got {data[key]!r}")
    seed = data.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"{path}: seed must be an integer, got {seed!r}")
    if not isinstance(data["cases"], list) or not all(isinstance(c, dict) for c in data["cases"]):
        raise ValueError(f"{path}: cases must be a list of tables ({{ M = 1, ... }})")
    if op is not None and data["op"] != _set_op(op):
        raise ValueError(f"shape set {data['name']!r} is for op {data['op']!r}, not {op!r}")
    base_seed = seed
    from pydeepbench import registry

    spec = registry.get_op(op or data["op"])
    cases = []
    for i, raw in enumerate(data["cases"]):
        raw = dict(raw)
        label = raw.pop("name", None)
        if label is not None and not isinstance(label, str):
            raise ValueError(f"{path}: case {i}: name must be a string, got {label!r}")
        try:
            shape = spec.validate_shape(raw)
        except ValueError as e:
            raise ValueError(f"{path}: case {i} ({label or raw}): {e}") from e
        cases.append(Case(label or spec.describe(shape), shape, base_seed + i))
    if not cases:
        raise ValueError(f"{path}: the set has no cases")
    names = [c.name for c in cases]
    if len(set(names)) < len(names):  # a case's name is its identity in reports
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"{path}: case names repeat: {', '.join(dup)} (give each a name)")
    return ShapeSet(data["name"], data["op"], data["version"], data["source"], cases, str(path))


def _scalar(v: str) -> int | float | str:
    """A --shape value: an int, else a float, else a name (distribution=zipf) as it is."""
    for parse in (int, float):
        try:
            return parse(v)
        except ValueError:
            pass
    return v


def parse_shape(text: str, op: str) -> Case:
    """`M=128,N=512,K=13,b_t=1` -> a one-case set for the CLI's --shape. A list value is
    written in brackets: `tables=2,rows=[5000,300],pooling=[4,1]`."""
    from pydeepbench import registry

    raw: dict = {}
    if text.count("[") != text.count("]"):
        raise ValueError(f"--shape: unbalanced brackets in {text!r}")
    # Commas inside brackets belong to a list value, not between fields.
    for part in filter(None, (p.strip() for p in re.split(r",(?![^\[]*\])", text))):
        if "=" not in part:
            raise ValueError(f"--shape: expected KEY=VALUE, got {part!r}")
        k, v = (s.strip() for s in part.split("=", 1))
        if k in raw:
            raise ValueError(f"--shape: field {k!r} is given more than once")
        if v.startswith("[") and v.endswith("]"):
            try:
                raw[k] = [int(x) for x in v[1:-1].split(",")]
            except ValueError:
                raise ValueError(f"--shape: {k}={v} must be a list of ints") from None
            continue
        low = v.lower()
        if low in ("true", "false"):
            raw[k] = low == "true"
        else:
            raw[k] = _scalar(v)
    spec = registry.get_op(op)
    shape = spec.validate_shape(raw)
    return Case(spec.describe(shape), shape, 0)
