"""Ops and their implementations, registered by decorator.

An op (``@register_op``) is a class that knows how to make seeded inputs for a shape,
compute the reference, and count FLOPs and bytes. An implementation (``@register_impl``)
is one function plus one decorator line that declares where it runs (devices, dtypes)
and why it may not (``available``: a callable returning a reason or None; ``supports``:
a per-case constraint returning a reason or None). The sweep turns every reason into a
"skipped: <reason>" row instead of an exception.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

_OPS: dict[str, Any] = {}
_IMPLS: dict[str, dict[str, Impl]] = {}
# Modules that register ops; imported lazily so `import pydeepbench` stays cheap.
_OP_MODULES = (
    "pydeepbench.ops.gemm",
    "pydeepbench.ops.linear",
    "pydeepbench.ops.embedding_bag",
    "pydeepbench.ops.embedding_bag_train",
    "pydeepbench.ops.interaction",
)


@dataclass(frozen=True)
class Impl:
    op: str
    name: str
    fn: Callable[..., Any]
    devices: tuple[str, ...]
    dtypes: dict[str, tuple[torch.dtype, ...]]  # device -> dtypes it supports there
    available: Callable[[str], str | None] = field(default=lambda device: None)
    supports: Callable[[dict, torch.dtype, str], str | None] = field(
        default=lambda shape, dtype, device: None
    )
    # Work done once, outside the timed region, to put the op's inputs into the form this
    # impl consumes (e.g. per-table index lists and nn.Module instances for OOTB).
    prepare: Callable[[list[dict]], list[dict]] | None = None
    doc: str = ""

    def why_not(self, device: str, dtype: torch.dtype | None = None) -> str | None:
        """The reason this impl cannot run on device/dtype, or None if it can."""
        if device not in self.devices:
            return f"{self.name} has no {device} implementation"
        if dtype is not None and dtype not in self.dtypes[device]:
            names = ", ".join(str(d).removeprefix("torch.") for d in self.dtypes[device])
            want = str(dtype).removeprefix("torch.")
            return f"{self.name} supports {names} on {device}, not {want}"
        return self.available(device)


def register_op(name: str):
    """Class decorator: registers an op spec instance under `name`."""

    def deco(cls):
        _OPS[name] = cls()
        _OPS[name].name = name
        _IMPLS.setdefault(name, {})
        return cls

    return deco


def register_impl(
    op: str,
    name: str,
    *,
    devices: tuple[str, ...],
    dtypes: tuple[torch.dtype, ...] | dict[str, tuple[torch.dtype, ...]],
    available: Callable[[str], str | None] | None = None,
    supports: Callable[[dict, torch.dtype, str], str | None] | None = None,
    prepare: Callable[[list[dict]], list[dict]] | None = None,
):
    """Function decorator: registers `fn` as implementation `name` of `op`. `dtypes` is one
    tuple for every device, or a dict device -> tuple where they differ."""
    by_device = dtypes if isinstance(dtypes, dict) else dict.fromkeys(devices, dtypes)

    def deco(fn):
        kwargs = {}
        if available is not None:
            kwargs["available"] = available
        if supports is not None:
            kwargs["supports"] = supports
        if prepare is not None:
            kwargs["prepare"] = prepare
        impls = _IMPLS.setdefault(op, {})
        if name in impls:
            raise ValueError(f"implementation {name!r} of op {op!r} is registered twice")
        impls[name] = Impl(
            op, name, fn, devices, by_device, doc=(fn.__doc__ or "").strip(), **kwargs
        )
        return fn

    return deco


@functools.cache  # once: the ops' entry points call it on every call
def _load() -> None:
    for mod in _OP_MODULES:
        importlib.import_module(mod)


def ops() -> dict[str, Any]:
    _load()
    return dict(_OPS)


def get_op(name: str):
    _load()
    if name not in _OPS:
        raise ValueError(f"unknown op {name!r}; known ops: {', '.join(sorted(_OPS))}")
    return _OPS[name]


def impls(op: str) -> dict[str, Impl]:
    get_op(op)
    return dict(_IMPLS[op])


def get_impl(op: str, name: str) -> Impl:
    get_op(op)
    table = _IMPLS[op]
    if name not in table:
        raise ValueError(
            f"unknown implementation {name!r} of {op}; known: {', '.join(sorted(table))}"
        )
    return table[name]
