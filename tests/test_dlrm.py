"""DLRM models: configs (loading, validation), OOTB vs optimized equivalence (forward and
three training steps from the same weights), and the synthetic data."""

import copy
import tomllib
from pathlib import Path

import pytest
import torch
from pydeepbench.models import dlrm

FIXTURES = Path(__file__).parent / "fixtures"
TINY = FIXTURES / "tiny-dot.toml"

VARIANTS = {
    "dot": {},
    "dot-weighted": {"weighted": True},
    "dcn": {"interaction": "dcn", "dcn_layers": 1, "dcn_rank": 4},
}


def tiny(**kw) -> dlrm.DLRMConfig:
    return dlrm.load_config(str(TINY)).with_overrides(**kw)


# ---- configs -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(dlrm.builtin_configs()))
def test_builtin_configs_load_and_name_source_and_cap(name):
    cfg = dlrm.load_config(name)
    assert cfg.name == name and cfg.version >= 1 and len(cfg.source) > 20
    assert cfg.row_cap >= 1 and all(r <= cfg.row_cap for r in cfg.capped_rows)
    assert cfg.rotations >= 8 and cfg.distribution == "uniform"
    # Every config fits one copy of its capped tables in a third of 24 GiB.
    assert cfg.table_bytes() < 8 * 2**30
    text = Path(cfg.path).read_text()
    assert "Row cap" in text  # the file says why it caps where it does


def test_config_facts_from_the_reference():
    assert dlrm.load_config("dlrm-kaggle").interaction_width == 367
    assert dlrm.load_config("dlrm-terabyte").interaction_width == 415
    mlperf = dlrm.load_config("dlrm-mlperf")
    assert mlperf.interaction_width == 479 and mlperf.latency_target_ms == 60.0
    assert mlperf.latency_percentile == 99 and mlperf.tables == 26
    dcn = dlrm.load_config("dlrm-dcnv2")
    assert dcn.interaction_width == 3456 and sum(dcn.pooling) == 214
    assert (dcn.dcn_layers, dcn.dcn_rank) == (3, 512)
    e32 = dlrm.load_config("A.1dev-embed32-fp32")
    assert (e32.tables, e32.emb_dim, e32.weighted, e32.modes) == (233, 192, True, ("train",))
    assert e32.pooling == (55,) * 233 and e32.top_mlp == (4000,) * 9 + (1,)
    e4 = dlrm.load_config("A.1dev-embed4-fp32")
    assert (e4.tables, e4.emb_dim, e4.modes) == (61, 96, ("infer",))
    assert len(e4.top_mlp) == 37 and e4.bottom_mlp == (1414,) + (1750,) * 8 + (96,)


def _write(tmp_path, raw: dict) -> Path:
    lines = []
    for k, v in raw.items():
        if isinstance(v, str):
            lines.append(f'{k} = "{v}"')
        elif isinstance(v, bool):
            lines.append(f"{k} = {'true' if v else 'false'}")
        elif isinstance(v, list | tuple):
            items = ", ".join(f'"{x}"' if isinstance(x, str) else str(x) for x in v)
            lines.append(f"{k} = [{items}]")
        else:
            lines.append(f"{k} = {v}")
    p = tmp_path / "bad.toml"
    p.write_text("\n".join(lines) + "\n")
    return p


@pytest.mark.parametrize(
    "field,value",
    [
        ("emb_dim", 0),
        ("emb_dim", "eight"),
        ("row_cap", -5),
        ("top_mlp", [32, 16, 2]),
        ("interaction", "cat"),
        ("modes", ["serve"]),
        ("rotations", 1),
        ("pooling", [1, 2]),
        ("weighted", 1),
        ("distribution", "zipf"),
        ("schema", "other/1"),
        ("latency_percentile", 101),
        ("bottom_mlp", [13, 32, 7]),
        ("steps", 0),
        ("colour", "red"),
    ],
)
def test_bad_field_is_named_with_the_file(tmp_path, field, value):
    raw = tomllib.loads(TINY.read_text())
    raw[field] = value
    path = _write(tmp_path, raw)
    with pytest.raises(ValueError, match=rf"bad\.toml: field '{field}'"):
        dlrm.load_config(str(path))


@pytest.mark.parametrize("field", ["source", "row_cap", "rows", "batch_size"])
def test_missing_field_is_named(tmp_path, field):
    raw = tomllib.loads(TINY.read_text())
    del raw[field]
    with pytest.raises(ValueError, match=rf"bad\.toml: field '{field}' is missing"):
        dlrm.load_config(str(_write(tmp_path, raw)))


def test_unknown_config_and_bad_toml(tmp_path):
    with pytest.raises(ValueError, match="unknown model config 'nope'"):
        dlrm.load_config("nope")
    with pytest.raises(ValueError, match="'/no/such.toml' does not exist"):
        dlrm.load_config("/no/such.toml")
    p = tmp_path / "x.toml"
    p.write_text("name = [unclosed")
    with pytest.raises(ValueError, match="x.toml: not valid TOML"):
        dlrm.load_config(str(p))


def test_overrides_are_validated():
    assert tiny(row_cap=10).capped_rows == (10, 7, 10, 10)
    assert tiny(row_cap=10).tables_capped == 3
    with pytest.raises(ValueError, match="field 'row_cap'"):
        tiny(row_cap=0)
    with pytest.raises(ValueError, match="field 'batch_size'"):
        tiny(batch_size=-1)


# ---- data ---------------------------------------------------------------------------------


def test_batches_are_fresh_seeded_and_in_both_layouts():
    cfg = tiny(weighted=True)
    bs = dlrm.make_batches(cfg)
    assert len(bs) == cfg.rotations >= 8
    assert not torch.equal(bs[0].indices, bs[1].indices)
    assert not torch.equal(bs[0].dense, bs[1].dense)
    again = dlrm.make_batches(cfg)
    assert torch.equal(bs[3].indices, again[3].indices)
    b = bs[0]
    B = cfg.batch_size
    assert set(b.labels.unique().tolist()) <= {0.0, 1.0}
    assert b.offsets.numel() == cfg.tables * B + 1 and int(b.offsets[-1]) == b.indices.numel()
    assert torch.equal(torch.cat(b.lS_i), b.indices)
    assert torch.equal(torch.cat(b.lS_w), b.per_sample_weights)
    for t, (rows, pool) in enumerate(zip(cfg.capped_rows, cfg.pooling, strict=True)):
        assert b.lS_i[t].numel() == B * pool and int(b.lS_i[t].max()) < rows
        assert torch.equal(b.lS_o[t], torch.arange(B) * pool)


# ---- equivalence --------------------------------------------------------------------------


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_optimized_forward_matches_ootb(variant):
    cfg = tiny(**VARIANTS[variant])
    ootb = dlrm.DLRMOOTB(cfg)
    opt = dlrm.DLRMOptimized.from_ootb(ootb)
    for b in dlrm.make_batches(cfg)[:1]:
        ref = ootb.infer(b)
        out = opt.infer(b)
        assert out.shape == (cfg.batch_size, 1)
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_three_training_steps_keep_losses_and_weights_together(variant):
    cfg = tiny(**VARIANTS[variant])
    ootb = dlrm.DLRMOOTB(cfg)
    opt = dlrm.DLRMOptimized.from_ootb(ootb)
    start = opt.weight.clone()
    sgd = ootb.make_optimizer()
    batches = dlrm.make_batches(cfg)
    for b in batches[:3]:
        l_ref = ootb.train_step(b, sgd)
        l_opt = opt.train_step(b, opt.make_optimizer())
        torch.testing.assert_close(l_opt, l_ref, atol=1e-5, rtol=1e-5)
    tables = torch.cat([e.weight.detach() for e in ootb.emb_l])
    torch.testing.assert_close(opt.weight, tables, atol=1e-5, rtol=1e-5)
    assert not torch.equal(opt.weight, start)  # the sparse update did run
    lin = [m for m in list(ootb.bot_l) + list(ootb.top_l) if isinstance(m, torch.nn.Linear)]
    mine = opt.bottom + opt.top
    for m, (w, bias) in zip(lin, mine, strict=True):
        torch.testing.assert_close(w.detach(), m.weight.detach(), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(bias.detach(), m.bias.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(opt.infer(batches[4]), ootb.infer(batches[4]), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_uint8_tables_infer_alike_and_refuse_training(variant):
    """8-bit rowwise tables: OOTB (FBGEMM's op per table) and optimized (one packed uint8
    table) give the same outputs, near the float model's; neither trains them."""
    cfg = tiny(**VARIANTS[variant])
    ootb = dlrm.DLRMOOTB(cfg)
    b = dlrm.make_batches(cfg)[0]
    fp32 = ootb.infer(b)
    ootb.quantize_embeddings()
    opt = dlrm.DLRMOptimized.from_ootb(ootb)
    assert opt.weight.dtype == torch.uint8 and opt.weight.shape[1] == cfg.emb_dim + 8
    ref = ootb.infer(b)
    torch.testing.assert_close(opt.infer(b), ref, atol=1e-5, rtol=1e-5)
    assert not torch.equal(ref, fp32)  # the tables did change ...
    torch.testing.assert_close(ref, fp32, atol=2e-2, rtol=0)  # ... by their rounding
    for m in (ootb, opt):
        with pytest.raises(ValueError, match="for inference"):
            m.make_optimizer()
    with pytest.raises(ValueError, match="need embedding impl native or ootb"):
        dlrm.DLRMOptimized.from_ootb(ootb, emb="functional")
    rows = sum(cfg.capped_rows)
    assert cfg.table_bytes("uint8") == rows * (cfg.emb_dim + 8)
    assert cfg.table_bytes() == rows * cfg.emb_dim * 4


def test_sparse_update_touches_only_looked_up_rows():
    cfg = tiny()
    opt = dlrm.build(cfg, "optimized")
    b = dlrm.make_batches(cfg)[0]
    before = opt.weight.clone()
    opt.train_step(b)
    changed = (opt.weight != before).any(1)
    to = opt.table_offsets
    touched = torch.zeros_like(changed)
    for t, idx in enumerate(b.lS_i):
        touched[to[t] + idx] = True
    assert not changed[~touched].any()
    assert changed.any()


def test_dense_impl_ootb_gives_the_same_model():
    cfg = tiny()
    ootb = dlrm.DLRMOOTB(cfg)
    a = dlrm.DLRMOptimized.from_ootb(ootb, dense_impl="native")
    c = dlrm.DLRMOptimized.from_ootb(copy.deepcopy(ootb), dense_impl="ootb")
    b = dlrm.make_batches(cfg)[0]
    torch.testing.assert_close(a.infer(b), c.infer(b), atol=1e-5, rtol=1e-5)


def test_fallback_is_labeled():
    opt = dlrm.build(tiny(), "optimized")
    assert opt.emb_impl == dlrm.emb_impl()
    assert (opt.fallback is None) == (opt.emb_impl == "native")
    with pytest.raises(ValueError, match="unknown model implementation"):
        dlrm.build(tiny(), "fast")
