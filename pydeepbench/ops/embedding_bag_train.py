"""The EmbeddingBag training step as an op: pooled forward, the gradient of a loss whose
output gradient is `grad_out`, and an SGD update. Shape sets, inputs and the forward
reference come from the embedding_bags op (pydeepbench/ops/embedding_bag.py)."""

from __future__ import annotations

import torch

from pydeepbench.ops.embedding_bag import (
    EmbeddingBags,
    _native_forward,
    _native_unavailable,
    _own_tables,
    _per_table,
    capped_rows,
    embedding_bags_sgd_step,
)
from pydeepbench.registry import register_impl, register_op

LR = 0.05


@register_op("embedding_bags_train")
class EmbeddingBagsTrain(EmbeddingBags):
    """One training step of the tables: pooled forward, gradient of a loss whose output
    gradient is `grad_out`, and an SGD update with learning rate LR.

    FLOPs = forward + N*D (scatter gradients into rows) + N*D (the update; N lookups bound
    the unique rows touched). Bytes = forward + grad_out read (B*T*D*4) + the touched rows
    read and written (2*N*D*element size). Both count the logical work: an OOTB step that
    makes a dense gradient and updates every row does far more, which is what it costs.
    The check compares every row the step touched, and 64 rows it must not touch.
    """

    shape_op = "embedding_bags"

    def validate_shape(self, raw: dict) -> dict:
        s = super().validate_shape(raw)
        if s["mode"] == "max":
            raise ValueError("embedding_bags_train supports modes sum and mean")
        return s

    def flops(self, s: dict) -> float:
        return super().flops(s) + 2.0 * self.lookups(s) * s["dim"]

    def bytes(self, s: dict, dtype: torch.dtype) -> float:
        n, D = self.lookups(s), s["dim"]
        return (
            super().bytes(s, dtype) + s["batch"] * s["tables"] * D * 4 + 2 * n * D * dtype.itemsize
        )

    def footprint_bytes(self, s: dict, dtype: torch.dtype) -> int:
        # A private copy of the tables per impl, and OOTB's dense fp32 gradient.
        weights = sum(capped_rows(s)) * s["dim"]
        return super().footprint_bytes(s, dtype) + weights * (dtype.itemsize + 4)

    def make_inputs(self, s: dict, dtype: torch.dtype, device: str, seed: int) -> dict:
        inputs = super().make_inputs(s, dtype, device, seed)
        g = torch.Generator().manual_seed(seed + 1)
        B, T, D = s["batch"], s["tables"], s["dim"]
        for b in inputs["batches"]:
            b["grad_out"] = torch.randn(B, T * D, generator=g).to(device)
        v0 = inputs["batches"][0]
        touched = (
            inputs["table_offsets"][:-1].repeat_interleave(
                torch.diff(v0["offsets"].long()).view(T, B).sum(1)
            )
            + v0["indices"].long()
        ).unique()
        untouched = torch.ones(inputs["weight"].shape[0], dtype=torch.bool)
        untouched[touched] = False
        spare = untouched.nonzero().flatten()
        spare = spare[torch.randperm(spare.numel(), generator=g)[:64]]
        inputs["observe_rows"] = torch.cat([touched, spare]).sort().values
        inputs["lr"] = LR
        return inputs

    check_every_variant = False  # each step updates the tables the next one reads

    def variants(self, inputs: dict) -> list[dict]:
        return [
            {k: v for k, v in var.items() if k != "observe_rows"}
            for var in super().variants(inputs)
        ]

    def observe(self, out: torch.Tensor, inputs: dict) -> torch.Tensor:
        return out[inputs["observe_rows"]]

    def reference(
        self,
        weight,
        table_offsets,
        indices,
        offsets,
        mode,
        per_sample_weights,
        grad_out,
        lr,
        observe_rows,
    ):
        """Rows after one SGD step, in float64, from the initial weights."""
        T = table_offsets.numel() - 1
        B = (offsets.numel() - 1) // T
        lengths = torch.diff(offsets.cpu().long())
        bag = torch.arange(T * B).repeat_interleave(lengths)  # bag id (t*B + b) per lookup
        table = bag // B
        rows = table_offsets.cpu()[table] + indices.cpu().long()
        D = weight.shape[1]
        g = grad_out.cpu().double().view(B, T, D).permute(1, 0, 2).reshape(T * B, D)[bag]
        if mode == "mean":
            g = g / lengths[bag].unsqueeze(1).double()
        if per_sample_weights is not None:
            g = g * per_sample_weights.cpu().double().unsqueeze(1)
        grad = torch.zeros(observe_rows.numel(), D, dtype=torch.float64)
        pos = torch.searchsorted(observe_rows, rows)
        grad.index_add_(0, pos, g)
        return weight[observe_rows].cpu().double() - lr * grad


def _train_state(variants: list[dict], sparse: bool) -> list[dict]:
    """A private copy of the tables (the step mutates them), modules and an optimizer. The
    copy is detached: the modules then hold leaf Parameters for torch.optim.SGD even when
    the tables handed in require grad (a module over a table that requires grad reads that
    table, to route the gradient to it: see embedding_bag._module)."""
    weight = variants[0]["weight"].detach().clone()
    per = _per_table([{**v, "weight": weight} for v in variants])
    for m in per[0]["modules"]:
        m.sparse = sparse
    opt = torch.optim.SGD([m.weight for m in per[0]["modules"]], lr=variants[0]["lr"])
    return [
        {**p, "optimizer": opt, "grad_out": v["grad_out"]}
        for p, v in zip(per, variants, strict=True)
    ]


def _train_step_torch(modules, lS_i, lS_o, lS_w, optimizer, grad_out, weight, **_):
    out = torch.cat(
        [
            m(i, o, per_sample_weights=w)
            for m, i, o, w in zip(modules, lS_i, lS_o, lS_w, strict=True)
        ],
        dim=1,
    )
    optimizer.zero_grad()
    out.backward(grad_out)
    optimizer.step()
    return weight


@register_impl(
    "embedding_bags_train",
    "ootb",
    devices=("cpu", "cuda"),
    dtypes=(torch.float32,),
    prepare=lambda vs: _train_state(vs, sparse=False),
)
def train_ootb(**kw):
    """DLRM reference: nn.EmbeddingBag modules, dense gradients, torch.optim.SGD (every row)."""
    return _train_step_torch(**kw)


@register_impl(
    "embedding_bags_train",
    "sparse",
    devices=("cpu", "cuda"),
    dtypes=(torch.float32,),
    prepare=lambda vs: _train_state(vs, sparse=True),
)
def train_sparse(**kw):
    """The same modules with sparse=True gradients and torch.optim.SGD (a stronger baseline)."""
    return _train_step_torch(**kw)


@register_impl(
    "embedding_bags_train",
    "native",
    devices=("cpu",),
    dtypes=(torch.float32, torch.bfloat16),
    available=_native_unavailable,
    prepare=_own_tables,  # the copy its steps update in place
)
def train_native(weight, table_offsets, indices, offsets, mode, per_sample_weights, grad_out, lr):
    """C++ forward, then one fused pass that aggregates duplicate rows and applies SGD to
    the touched rows only."""
    _native_forward(weight, table_offsets, indices, offsets, mode, per_sample_weights)
    embedding_bags_sgd_step(
        weight,
        table_offsets,
        indices,
        offsets,
        grad_out,
        lr,
        mode=mode,
        per_sample_weights=per_sample_weights,
    )
    return weight
