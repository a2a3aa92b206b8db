"""What every op spec shares: shape validation from a field table, and the gate's
tolerance lookup. Op-specific math (inputs, reference, FLOPs, bytes) lives in each op's file."""

from __future__ import annotations

import torch

from pydeepbench.check import Tolerance, tolerance_for

DTYPE_NAMES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}


def parse_dtype(name: str) -> torch.dtype:
    if name not in DTYPE_NAMES:
        raise ValueError(f"unknown dtype {name!r}; use one of fp32, bf16, fp16")
    return DTYPE_NAMES[name]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


class OpSpec:
    name: str
    # key -> (type, default or None when required, minimum for ints)
    fields: dict[str, tuple[type, object, int]] = {}
    tolerances: dict[torch.dtype, Tolerance] = {}

    def validate_shape(self, raw: dict) -> dict:
        unknown = set(raw) - set(self.fields)
        if unknown:
            raise ValueError(
                f"unknown shape field(s) {sorted(unknown)} for {self.name}; "
                f"fields: {', '.join(self.fields)}"
            )
        shape = {}
        for key, (typ, default, minimum) in self.fields.items():
            if key not in raw:
                if default is None:
                    raise ValueError(f"{self.name} shape needs field {key!r}")
                shape[key] = default
                continue
            v = raw[key]
            if typ is bool:
                if isinstance(v, int) and v in (0, 1):
                    v = bool(v)
                if not isinstance(v, bool):
                    raise ValueError(f"shape field {key!r} must be true/false, got {v!r}")
            elif typ is int:
                if isinstance(v, bool) or not isinstance(v, int):
                    raise ValueError(f"shape field {key!r} must be an integer, got {v!r}")
                if v < minimum:
                    raise ValueError(f"shape field {key!r} must be >= {minimum}, got {v}")
            shape[key] = v
        return shape

    def tolerance(self, dtype: torch.dtype) -> Tolerance:
        return tolerance_for(self.tolerances, dtype)
