"""DLRM, out of the box and optimized, with the same weights and the same math.

Configs are versioned TOML data files in `models/configs/` (schema `pydeepbench.model/1`),
each naming its public source and the row cap it uses on a 24 GiB machine.

OOTB (`DLRMOOTB`) is the model as facebookresearch/dlrm writes it: one nn.EmbeddingBag
(mode="sum") per table in a Python loop, bottom/top MLPs of nn.Linear + ReLU (sigmoid
after the last top layer), the "dot" interaction (cat, bmm, strict lower triangle by
tril_indices(offset=-1), cat with the bottom output), nn.BCELoss, torch.optim.SGD over
every parameter (so every embedding row gets a dense gradient and an update each step).

Optimized (`DLRMOptimized`, built from an OOTB model's state): one packed table in the KJT
layout looked up by `ops.embedding_bags` in one call, updated by a fused sparse SGD step on
the touched rows only (no dense embedding gradient), the tables in host-pool memory (huge
pages); MLP layers through `ops.linear` (bias and ReLU fused) wrapped in an autograd
Function whose backward runs `ops.gemm` for dX and dW and applies the ReLU mask; the fused
`ops.dot_interaction` (C++: each sample's rows read once, only the lower-triangle dot
products computed; a hand-written bmm backward); sigmoid + BCE fused as
BCE-with-logits; buffers reused across steps. The one place the two differ: once a logit
passes ~17, fp32 sigmoid rounds to 1.0, where nn.BCELoss clamps its log at -100 and
passes no gradient, while BCE-with-logits keeps the exact p - y; the models' updates part
only for such saturated outputs.

Embedding kernels: `emb_impl()` picks "native" when `ops.available("embedding_bags")`
says the C++ kernels are built, else the fallback: impl "functional" for the forward and
a torch index_add_ update of the touched rows for the step. Results name which one ran.

8-bit tables for inference (`quantize_embeddings`, `--emb-dtype uint8`): as the reference's
--quantize-emb-with-bit 8, every table becomes FBGEMM's fused 8-bit rowwise rows (D uint8
codes, fp32 scale and bias per row), looked up by OOTB through
torch.ops.quantized.embedding_bag_byte_rowwise_offsets per table and by the optimized model
as one packed uint8 table through `ops.embedding_bags`. Both read the same rows, so the
outputs match as the float ones do; training such tables is refused.

DCNv2 (interaction "dcn"): x_{l+1} = x0 * (U_l (V_l x_l) + b_l) + x_l, low rank, on
x0 = cat(bottom_out, pooled), then the top MLP (no dot interaction).
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from pydeepbench import _native, ops
from pydeepbench.ops.interaction import dlrm_dot, pairs

SCHEMA = "pydeepbench.model/1"
CONFIG_DIR = Path(__file__).resolve().parent / "configs"
INTERACTIONS = ("dot", "dcn")
MODES = ("train", "infer")
EMB_DTYPES = ("float32", "uint8")  # uint8: 8-bit rowwise tables, inference only
DISTRIBUTIONS = ("uniform",)

# ---- configs -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DLRMConfig:
    name: str
    version: int
    source: str
    emb_dim: int
    bottom_mlp: tuple[int, ...]  # widths, the first is the number of dense features
    top_mlp: tuple[int, ...]  # widths after the interaction, the last is 1
    interaction: str
    rows: tuple[int, ...]  # per table, uncapped (as the source gives them)
    pooling: tuple[int, ...]  # lookups per bag, per table
    weighted: bool
    row_cap: int
    batch_size: int
    modes: tuple[str, ...]
    lr: float
    seed: int
    steps: int
    warmup: int
    distribution: str = "uniform"
    rotations: int = 8
    dcn_layers: int = 0
    dcn_rank: int = 0
    latency_target_ms: float | None = None
    latency_percentile: int | None = None
    model: str = "dlrm"
    path: str = field(default="", compare=False)

    @property
    def tables(self) -> int:
        return len(self.rows)

    @property
    def capped_rows(self) -> tuple[int, ...]:
        return tuple(min(r, self.row_cap) for r in self.rows)

    @property
    def tables_capped(self) -> int:
        return sum(r > self.row_cap for r in self.rows)

    @property
    def dense_features(self) -> int:
        return self.bottom_mlp[0]

    @property
    def interaction_width(self) -> int:
        D, T = self.emb_dim, self.tables
        if self.interaction == "dot":
            return D + pairs(T + 1)
        return D + T * D

    def with_overrides(self, **kw) -> DLRMConfig:
        """A copy with some fields replaced (batch_size, row_cap, ...), validated again."""
        kw = {k: v for k, v in kw.items() if v is not None}
        cfg = replace(self, **kw)
        _validate_semantics(cfg, cfg.path or cfg.name)
        return cfg

    def table_bytes(self, emb_dtype: str = "float32") -> int:
        """One copy of the capped tables: fp32 rows, or uint8 rows of D codes + 8 bytes."""
        row = self.emb_dim + 8 if emb_dtype == "uint8" else self.emb_dim * 4
        return sum(self.capped_rows) * row


def _int(v, minimum=1):
    return isinstance(v, int) and not isinstance(v, bool) and v >= minimum


def _int_list(v, minimum=1):
    return isinstance(v, list) and len(v) > 0 and all(_int(x, minimum) for x in v)


def _number(v, minimum=0.0):
    return isinstance(v, int | float) and not isinstance(v, bool) and v > minimum


# key -> (required, check, what it must be)
_FIELDS = {
    "schema": (True, lambda v: v == SCHEMA, f'"{SCHEMA}"'),
    "name": (True, lambda v: isinstance(v, str) and v, "a non-empty string"),
    "model": (True, lambda v: v == "dlrm", '"dlrm"'),
    "version": (True, _int, "an integer >= 1"),
    "source": (True, lambda v: isinstance(v, str) and len(v) >= 10, "the public source"),
    "emb_dim": (True, _int, "an integer >= 1"),
    "bottom_mlp": (True, lambda v: _int_list(v) and len(v) >= 2, "a list of >= 2 widths"),
    "top_mlp": (True, lambda v: _int_list(v) and v[-1] == 1, "a list of widths ending in 1"),
    "interaction": (True, lambda v: v in INTERACTIONS, f"one of {INTERACTIONS}"),
    "dcn_layers": (False, lambda v: _int(v, 0), "an integer >= 0"),
    "dcn_rank": (False, lambda v: _int(v, 0), "an integer >= 0"),
    "rows": (True, lambda v: _int(v) or _int_list(v), "an integer or a list of integers >= 1"),
    "tables": (False, _int, "an integer >= 1"),
    "pooling": (True, lambda v: _int(v) or _int_list(v), "an integer or a list of integers >= 1"),
    "weighted": (True, lambda v: isinstance(v, bool), "true or false"),
    "row_cap": (True, _int, "an integer >= 1 (the rows a table keeps on this machine)"),
    "batch_size": (True, _int, "an integer >= 1"),
    "modes": (
        True,
        lambda v: isinstance(v, list) and v and all(m in MODES for m in v),
        f"a non-empty list of {MODES}",
    ),
    "lr": (True, _number, "a number > 0"),
    "seed": (True, lambda v: _int(v, 0), "an integer >= 0"),
    "steps": (True, _int, "an integer >= 1"),
    "warmup": (True, _int, "an integer >= 1"),
    "distribution": (True, lambda v: v in DISTRIBUTIONS, f"one of {DISTRIBUTIONS}"),
    "rotations": (True, lambda v: _int(v, 8), "an integer >= 8 (fresh batches per step)"),
    "latency_target_ms": (False, _number, "a number > 0"),
    "latency_percentile": (False, lambda v: _int(v) and v <= 100, "an integer in 1..100"),
}


def _fail(where: str, key: str, msg: str):
    raise ValueError(f"{where}: field {key!r} {msg}")


def parse_config(raw: dict, where: str) -> DLRMConfig:
    """Validate every field of a config table; errors name `where` (the file) and the field."""
    unknown = set(raw) - set(_FIELDS)
    if unknown:
        _fail(where, sorted(unknown)[0], f"is not a config field (fields: {', '.join(_FIELDS)})")
    for key, (required, ok, what) in _FIELDS.items():
        if key not in raw:
            if required:
                _fail(where, key, "is missing")
            continue
        if not ok(raw[key]):
            _fail(where, key, f"must be {what}, got {raw[key]!r}")
    rows, pooling = raw["rows"], raw["pooling"]
    if isinstance(rows, int):
        if "tables" not in raw:
            _fail(where, "tables", "is needed when 'rows' is one integer")
        rows = [rows] * raw["tables"]
    elif "tables" in raw and raw["tables"] != len(rows):
        _fail(where, "tables", f"is {raw['tables']} but 'rows' lists {len(rows)} tables")
    if isinstance(pooling, int):
        pooling = [pooling] * len(rows)
    elif len(pooling) != len(rows):
        _fail(where, "pooling", f"lists {len(pooling)} bag sizes for {len(rows)} tables")
    cfg = DLRMConfig(
        name=raw["name"],
        version=raw["version"],
        source=raw["source"],
        emb_dim=raw["emb_dim"],
        bottom_mlp=tuple(raw["bottom_mlp"]),
        top_mlp=tuple(raw["top_mlp"]),
        interaction=raw["interaction"],
        rows=tuple(rows),
        pooling=tuple(pooling),
        weighted=raw["weighted"],
        row_cap=raw["row_cap"],
        batch_size=raw["batch_size"],
        modes=tuple(raw["modes"]),
        lr=float(raw["lr"]),
        seed=raw["seed"],
        steps=raw["steps"],
        warmup=raw["warmup"],
        distribution=raw["distribution"],
        rotations=raw["rotations"],
        dcn_layers=raw.get("dcn_layers", 0),
        dcn_rank=raw.get("dcn_rank", 0),
        latency_target_ms=raw.get("latency_target_ms"),
        latency_percentile=raw.get("latency_percentile"),
        path=where,
    )
    _validate_semantics(cfg, where)
    return cfg


def _validate_semantics(cfg: DLRMConfig, where: str) -> None:
    if not _int(cfg.row_cap):
        _fail(where, "row_cap", f"must be an integer >= 1, got {cfg.row_cap!r}")
    if not _int(cfg.batch_size):
        _fail(where, "batch_size", f"must be an integer >= 1, got {cfg.batch_size!r}")
    if cfg.interaction == "dot" and cfg.bottom_mlp[-1] != cfg.emb_dim:
        _fail(
            where,
            "bottom_mlp",
            f"must end in emb_dim ({cfg.emb_dim}) for the dot interaction, "
            f"got {cfg.bottom_mlp[-1]}",
        )
    if cfg.interaction == "dcn":
        if cfg.dcn_layers < 1 or cfg.dcn_rank < 1:
            _fail(where, "dcn_layers", "and 'dcn_rank' must be >= 1 for interaction 'dcn'")
        if cfg.bottom_mlp[-1] != cfg.emb_dim:
            _fail(where, "bottom_mlp", f"must end in emb_dim ({cfg.emb_dim})")
    # An inference config without a target reports latency without a marker.
    if (cfg.latency_target_ms is None) != (cfg.latency_percentile is None):
        _fail(where, "latency_percentile", "and 'latency_target_ms' come together")


def builtin_configs() -> dict[str, Path]:
    return {p.stem: p for p in sorted(CONFIG_DIR.glob("*.toml"))}


def load_config(name_or_path: str) -> DLRMConfig:
    """A built-in config by name, or a .toml file by path; ValueError names file and field."""
    path = Path(name_or_path)
    if path.suffix == ".toml" and not path.exists():
        raise ValueError(f"model config file {name_or_path!r} does not exist")
    if path.suffix != ".toml":
        known = builtin_configs()
        if name_or_path not in known:
            raise ValueError(
                f"unknown model config {name_or_path!r}; built-in: {', '.join(known)} "
                "(or pass a path to a .toml file)"
            )
        path = known[name_or_path]
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: not valid TOML: {e}") from None
    return parse_config(raw, str(path))


# ---- synthetic data ----------------------------------------------------------------------


@dataclass
class Batch:
    """One batch in both layouts: per table (OOTB's loader) and KJT (the batched op)."""

    dense: torch.Tensor  # (B, dense_features) fp32
    labels: torch.Tensor  # (B, 1) fp32 in {0, 1}
    lS_i: list[torch.Tensor]  # per table, (B * pooling,) int64 local row ids
    lS_o: list[torch.Tensor]  # per table, (B,) int64 bag starts
    lS_w: list[torch.Tensor | None]  # per table per-sample weights (weighted configs)
    indices: torch.Tensor  # KJT: all tables' indices, table 0 first
    offsets: torch.Tensor  # KJT: (T*B + 1,)
    per_sample_weights: torch.Tensor | None


def make_batches(cfg: DLRMConfig) -> list[Batch]:
    """cfg.rotations batches seeded from cfg.seed, generated before any timing."""
    g = torch.Generator().manual_seed(cfg.seed + 1)
    B = cfg.batch_size
    out = []
    for _ in range(cfg.rotations):
        dense = torch.randn(B, cfg.dense_features, generator=g)
        labels = torch.bernoulli(torch.full((B, 1), 0.5), generator=g)
        lS_i, lS_o, lS_w = [], [], []
        for rows, pool in zip(cfg.capped_rows, cfg.pooling, strict=True):
            lS_i.append(torch.randint(rows, (B * pool,), generator=g))
            lS_o.append(torch.arange(B, dtype=torch.int64) * pool)
            lS_w.append(torch.rand(B * pool, generator=g) if cfg.weighted else None)
        lengths = torch.tensor(cfg.pooling, dtype=torch.int64).repeat_interleave(B)
        offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
        out.append(
            Batch(
                dense=dense,
                labels=labels,
                lS_i=lS_i,
                lS_o=lS_o,
                lS_w=lS_w,
                indices=torch.cat(lS_i),
                offsets=offsets,
                per_sample_weights=torch.cat(lS_w) if cfg.weighted else None,
            )
        )
    return out


# ---- OOTB ---------------------------------------------------------------------------------


def _mlp(widths, sigmoid_last: bool, g: torch.Generator) -> nn.Sequential:
    """dlrm_s_pytorch.create_mlp: Linear + ReLU, sigmoid after the last layer of the top MLP;
    weights ~ N(0, sqrt(2/(m+n))), biases ~ N(0, sqrt(1/m)) as the reference initializes."""
    layers = []
    for i, (n, m) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        lin = nn.Linear(n, m)
        with torch.no_grad():
            lin.weight.copy_(torch.randn(m, n, generator=g) * math.sqrt(2.0 / (m + n)))
            lin.bias.copy_(torch.randn(m, generator=g) * math.sqrt(1.0 / m))
        layers.append(lin)
        last = i == len(widths) - 2
        layers.append(nn.Sigmoid() if (last and sigmoid_last) else nn.ReLU())
    return nn.Sequential(*layers)


class LowRankCross(nn.Module):
    """DCNv2 low-rank cross layer: x0 * (U (V x) + b) + x."""

    def __init__(self, width: int, rank: int, g: torch.Generator):
        super().__init__()
        self.V = nn.Linear(width, rank, bias=False)
        self.U = nn.Linear(rank, width, bias=True)
        with torch.no_grad():
            self.V.weight.copy_(
                torch.randn(rank, width, generator=g) * math.sqrt(2 / (rank + width))
            )
            self.U.weight.copy_(
                torch.randn(width, rank, generator=g) * math.sqrt(2 / (rank + width))
            )
            self.U.bias.zero_()

    def forward(self, x0, x):
        return x0 * self.U(self.V(x)) + x


class DLRMOOTB(nn.Module):
    """facebookresearch/dlrm's DLRM_Net, as a researcher runs it."""

    def __init__(self, cfg: DLRMConfig, seed: int | None = None):
        super().__init__()
        self.cfg = cfg
        g = torch.Generator().manual_seed(cfg.seed if seed is None else seed)
        D = cfg.emb_dim
        tables = []
        for n in cfg.capped_rows:
            w = torch.empty(n, D).uniform_(-math.sqrt(1 / n), math.sqrt(1 / n), generator=g)
            tables.append(nn.EmbeddingBag(n, D, mode="sum", _weight=w))
        self.emb_l = nn.ModuleList(tables)
        self.bot_l = _mlp(cfg.bottom_mlp, sigmoid_last=False, g=g)
        if cfg.interaction == "dcn":
            width = cfg.interaction_width
            self.cross = nn.ModuleList(
                LowRankCross(width, cfg.dcn_rank, g) for _ in range(cfg.dcn_layers)
            )
        self.top_l = _mlp((cfg.interaction_width, *cfg.top_mlp), sigmoid_last=True, g=g)
        self.loss_fn = nn.BCELoss(reduction="mean")
        self.emb_q = None  # the 8-bit rowwise tables, once quantize_embeddings ran

    def quantize_embeddings(self) -> None:
        """Replace the tables by 8-bit rowwise ones for inference (the reference's
        quantize_embedding(8)); the float modules are dropped."""
        self.emb_q = [ops.quantize_rows(e.weight.detach()) for e in self.emb_l]
        self.emb_l = None

    def apply_emb(self, lS_o, lS_i, lS_w):
        if self.emb_q is not None:
            return [
                torch.ops.quantized.embedding_bag_byte_rowwise_offsets(
                    q, i, o, False, 0, False, w, None, False
                )
                for q, i, o, w in zip(self.emb_q, lS_i, lS_o, lS_w, strict=True)
            ]
        return [
            self.emb_l[k](lS_i[k], lS_o[k], per_sample_weights=lS_w[k])
            for k in range(len(self.emb_l))
        ]

    def interact_features(self, x, ly):
        if self.cfg.interaction == "dcn":
            x0 = torch.cat([x] + ly, dim=1)
            xl = x0
            for layer in self.cross:
                xl = layer(x0, xl)
            return xl
        return dlrm_dot(x, ly)

    def forward(self, dense_x, lS_o, lS_i, lS_w):
        x = self.bot_l(dense_x)
        ly = self.apply_emb(lS_o, lS_i, lS_w)
        z = self.interact_features(x, ly)
        return self.top_l(z)

    # The benchmark's step functions.
    def infer(self, b: Batch) -> torch.Tensor:
        with torch.no_grad():
            return self(b.dense, b.lS_o, b.lS_i, b.lS_w)

    def features(self, b: Batch) -> torch.Tensor:
        """The top MLP's input (the interaction's output), which the equivalence check
        compares too: a deep top MLP can map every input to nearly one output."""
        with torch.no_grad():
            x = self.bot_l(b.dense)
            return self.interact_features(x, self.apply_emb(b.lS_o, b.lS_i, b.lS_w))

    def make_optimizer(self) -> torch.optim.Optimizer:
        _refuse_quantized_training(self.emb_q is not None)
        return torch.optim.SGD(self.parameters(), lr=self.cfg.lr)

    def train_step(self, b: Batch, optimizer: torch.optim.Optimizer) -> torch.Tensor:
        p = self(b.dense, b.lS_o, b.lS_i, b.lS_w)
        loss = self.loss_fn(p, b.labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.detach()


def _refuse_quantized_training(quantized: bool) -> None:
    if quantized:
        raise ValueError("8-bit rowwise (uint8) embedding tables are for inference; train fp32")


# ---- optimized ----------------------------------------------------------------------------


def emb_impl() -> str:
    """ "native" when the C++ embedding kernels are built here, else "functional" (fallback)."""
    return "native" if ops.available("embedding_bags").get("native") is None else "functional"


class _Linear(torch.autograd.Function):
    """act(x W^T + b) through ops.linear; backward: dX = dY W, dW = dY^T X (ops.gemm),
    db = sum(dY), with the ReLU mask taken from the saved output."""

    @staticmethod
    def forward(ctx, x, w, b, relu: bool, impl: str):
        y = ops.linear(x, w, b, "relu" if relu else None, impl=impl)
        ctx.relu, ctx.impl = relu, impl
        ctx.save_for_backward(x, w, y if relu else None)
        return y

    @staticmethod
    @once_differentiable  # its gemms have no autograd: a double backward says so here
    def backward(ctx, gy):
        x, w, y = ctx.saved_tensors
        if ctx.relu:  # ReLU backward in one pass: gy where y > 0, else 0
            gy = torch.ops.aten.threshold_backward(gy, y, 0.0)
        dx = ops.gemm(gy, w, impl=ctx.impl) if ctx.needs_input_grad[0] else None
        dw = ops.gemm(gy.t(), x, impl=ctx.impl)
        db = gy.sum(0) if ctx.needs_input_grad[2] else None
        return dx, dw, db, None, None


class _DotInteraction(torch.autograd.Function):
    """out = [x, tril_{-1}(T T^T)] with T = [x; pooled] as (B, F, D): forward is the fused
    ops.dot_interaction; backward scatters the pair gradients into dZ and computes
    dT = (dZ + dZ^T) T with one bmm, in buffers kept across steps."""

    @staticmethod
    def forward(ctx, x, pooled, bufs, impl: str):
        ctx.bufs = bufs
        ctx.save_for_backward(x, pooled)
        return ops.dot_interaction(x, pooled, impl=impl)

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        x, pooled = ctx.saved_tensors
        bufs = ctx.bufs
        B, D = x.shape
        Fn = bufs["F"]
        Tb = bufs.get("T", (B, Fn, D))
        Tb[:, 0, :] = x
        Tb[:, 1:, :] = pooled.view(B, -1, D)
        dZ = bufs.get("dZ", (B, Fn * Fn))
        dZ.zero_()
        dZ.index_copy_(1, bufs["tri"], g[:, D:])
        dZ = dZ.view(B, Fn, Fn)
        dZs = dZ + dZ.transpose(1, 2)
        dT = torch.bmm(dZs, Tb)
        dx = g[:, :D] + dT[:, 0, :]
        dpooled = dT[:, 1:, :].reshape(B, -1)
        return dx, dpooled, None, None


class _Buffers:
    """Named buffers kept across steps, reallocated only when a shape changes."""

    def __init__(self, **fixed):
        self._b: dict[str, torch.Tensor] = {}
        self._fixed = fixed

    def __getitem__(self, k):
        return self._fixed[k]

    def get(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        t = self._b.get(name)
        if t is None or tuple(t.shape) != tuple(shape):
            t = torch.empty(shape)
            self._b[name] = t
        return t


class DLRMOptimized:
    """The same model assembled from pydeepbench ops (see the module docstring)."""

    def __init__(
        self,
        cfg: DLRMConfig,
        weight,
        table_offsets,
        bottom,
        cross,
        top,
        emb: str | None = None,
        dense_impl: str = "native",
    ):
        self.cfg = cfg
        self.weight = weight  # (R_total, D) packed fp32 tables, or (R_total, D + 8) uint8 rows
        self.table_offsets = table_offsets
        self.bottom = bottom  # [(w, b)] with requires_grad
        self.cross = cross  # [(V, U, b)]
        self.top = top
        self.emb_impl = emb or emb_impl()
        self.dense_impl = dense_impl
        Fn = cfg.tables + 1
        li, lj = torch.tril_indices(Fn, Fn, offset=-1)
        self._bufs = _Buffers(F=Fn, tri=(li * Fn + lj).contiguous())
        native = ops.available("dot_interaction").get("native") is None
        self.interaction_impl = "native" if native else "ootb"

    @property
    def fallback(self) -> str | None:
        if self.emb_impl == "native":
            return None
        if self.weight.dtype == torch.uint8:  # inference only: no update
            return (
                f"embedding forward impl '{self.emb_impl}' (native embedding kernels not "
                "built here)"
            )
        return (
            f"embedding forward impl '{self.emb_impl}' and a torch index_add_ sparse SGD "
            "update (native embedding kernels not built here)"
        )

    @classmethod
    def from_ootb(cls, m: DLRMOOTB, emb: str | None = None, dense_impl: str = "native"):
        def p(t):
            return t.detach().clone().contiguous().requires_grad_(True)

        tables = m.emb_q if m.emb_q is not None else [e.weight.detach() for e in m.emb_l]
        if m.emb_q is not None:  # only these take uint8 rows
            emb = emb or ("native" if emb_impl() == "native" else "ootb")
            if emb not in ("native", "ootb"):
                raise ValueError(f"uint8 tables need embedding impl native or ootb, not {emb!r}")
        if tables[0].device.type == "cpu" and _native.cpu_unavailable() is None:
            # one copy, made straight into host-pool memory (huge pages for the random
            # row gathers; see _native.host_copy)
            rows_total = sum(t.shape[0] for t in tables)
            weight = _native.empty((rows_total, tables[0].shape[1]), tables[0].dtype)
            torch.cat(tables, out=weight)
        else:
            weight = torch.cat(tables).contiguous()
        rows = [t.shape[0] for t in tables]
        table_offsets = torch.tensor([0, *rows], dtype=torch.int64).cumsum(0)
        lin = [mod for mod in m.bot_l if isinstance(mod, nn.Linear)]
        bottom = [(p(x.weight), p(x.bias)) for x in lin]
        lin = [mod for mod in m.top_l if isinstance(mod, nn.Linear)]
        top = [(p(x.weight), p(x.bias)) for x in lin]
        cross = []
        if m.cfg.interaction == "dcn":
            cross = [(p(c.V.weight), p(c.U.weight), p(c.U.bias)) for c in m.cross]
        return cls(m.cfg, weight, table_offsets, bottom, cross, top, emb, dense_impl)

    def dense_params(self) -> list[torch.Tensor]:
        ps = [t for wb in self.bottom + self.top for t in wb]
        return ps + [t for c in self.cross for t in c]

    # -- pieces
    def _mlp(self, x, layers, last_plain: bool):
        n = len(layers)
        for i, (w, b) in enumerate(layers):
            x = _Linear.apply(x, w, b, not (last_plain and i == n - 1), self.dense_impl)
        return x

    def _embed(self, b: Batch) -> torch.Tensor:
        return ops.embedding_bags(
            self.weight,
            self.table_offsets,
            b.indices,
            b.offsets,
            mode="sum",
            per_sample_weights=b.per_sample_weights,
            impl=self.emb_impl,
        )

    def _interact(self, x, pooled):
        if self.cfg.interaction == "dot":
            return _DotInteraction.apply(x, pooled, self._bufs, self.interaction_impl)
        x0 = torch.cat([x, pooled], dim=1)
        xl = x0
        for V, U, bias in self.cross:
            h = _Linear.apply(xl, V, None, False, self.dense_impl)
            u = _Linear.apply(h, U, bias, False, self.dense_impl)
            xl = torch.addcmul(xl, x0, u)
        return xl

    def logits(self, b: Batch, pooled: torch.Tensor) -> torch.Tensor:
        x = self._mlp(b.dense, self.bottom, last_plain=False)
        return self._mlp(self._interact(x, pooled), self.top, last_plain=True)

    # -- the benchmark's step functions
    def infer(self, b: Batch) -> torch.Tensor:
        with torch.no_grad():
            return torch.sigmoid(self.logits(b, self._embed(b)))

    def features(self, b: Batch) -> torch.Tensor:
        """The top MLP's input, laid out as DLRMOOTB.features."""
        with torch.no_grad():
            return self._interact(self._mlp(b.dense, self.bottom, last_plain=False), self._embed(b))

    def train_step(self, b: Batch, optimizer=None) -> torch.Tensor:
        pooled = self._embed(b).requires_grad_(True)
        z = self.logits(b, pooled)
        loss = F.binary_cross_entropy_with_logits(z, b.labels)
        params = self.dense_params()
        for t in params:
            t.grad = None
        loss.backward()
        with torch.no_grad():
            torch._foreach_add_(params, [t.grad for t in params], alpha=-self.cfg.lr)
        self._sparse_sgd(b, pooled.grad)
        return loss.detach()

    def make_optimizer(self):
        _refuse_quantized_training(self.weight.dtype == torch.uint8)
        return None  # SGD is applied in train_step (dense: foreach, tables: sparse)

    def _sparse_sgd(self, b: Batch, grad_out: torch.Tensor) -> None:
        """weight[row] -= lr * sum of the pooled gradients of the bags that read the row."""
        psw = b.per_sample_weights
        if self.emb_impl == "native":  # fused: aggregates duplicates, touched rows only
            ops.embedding_bags_sgd_step(
                self.weight,
                self.table_offsets,
                b.indices,
                b.offsets,
                grad_out,
                self.cfg.lr,
                per_sample_weights=psw,
            )
            return
        # Fallback: torch index_add_ over the touched rows (duplicates accumulate).
        T = self.cfg.tables
        B = (b.offsets.numel() - 1) // T
        D = self.weight.shape[1]
        lengths = b.offsets.diff()
        bag = torch.repeat_interleave(lengths)  # bag id t*B + b per lookup
        rows = self.table_offsets[bag // B] + b.indices
        g = grad_out.view(B, T, D).transpose(0, 1).reshape(T * B, D).index_select(0, bag)
        if psw is not None:
            g.mul_(psw.unsqueeze(1))
        self.weight.index_add_(0, rows, g, alpha=-self.cfg.lr)


def build(cfg: DLRMConfig, impl: str, seed: int | None = None, **kw):
    """The model `impl` ("ootb" or "optimized") for cfg, initialized from `seed`."""
    ootb = DLRMOOTB(cfg, seed)
    if impl == "ootb":
        return ootb
    if impl == "optimized":
        return DLRMOptimized.from_ootb(ootb, **kw)
    raise ValueError(f"unknown model implementation {impl!r}; use ootb or optimized")


IMPLS = ("ootb", "optimized")
