"""The host memory pool behind native outputs and tables (csrc/cpu/host_pool.h)."""

import gc

import pytest
import torch

from pydeepbench import _native

C = pytest.importorskip("pydeepbench._C")

MB = 1 << 20


@pytest.fixture
def pool():
    yield C
    gc.collect()


def test_small_tensors_come_from_torch(pool):
    before = pool.host_pool_stats()
    t = _native.empty((4, 5), torch.float32)
    assert t.shape == (4, 5) and t.dtype == torch.float32 and t.is_contiguous()
    assert pool.host_pool_stats() == before  # no pool block was taken or cached


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int64])
def test_pooled_tensor_is_aligned_writable_and_exact(dtype):
    shape = (3 * MB // dtype.itemsize + 7,)
    t = _native.empty(shape, dtype)
    assert t.shape == shape and t.dtype == dtype
    assert t.data_ptr() % (2 * MB) == 0
    t.fill_(3)
    assert int(t[-1]) == 3 and int(t.double().sum()) == 3 * shape[0]


def test_a_view_keeps_the_block_and_a_freed_block_is_reused(pool):
    pool.host_pool_set_limit(64 * MB)
    gc.collect()
    before = pool.host_pool_stats()
    t = _native.empty((MB,), torch.float32)  # 4 MiB
    ptr = t.data_ptr()
    view = t[10:].view(-1, 2)
    del t
    gc.collect()
    assert pool.host_pool_stats()["live_bytes"] >= before["live_bytes"] + 4 * MB
    view.fill_(1)  # still mapped and ours
    del view
    gc.collect()
    after = pool.host_pool_stats()
    assert after["live_bytes"] == before["live_bytes"]
    assert after["cached_bytes"] >= 4 * MB
    u = _native.empty((MB,), torch.float32)
    assert u.data_ptr() == ptr
    assert pool.host_pool_stats()["hits"] == after["hits"] + 1


def test_the_block_freed_last_is_reused_first(pool):
    # LIFO among equal sizes: repeated calls keep reusing the (cache-warm) block freed
    # last instead of cycling through every cached one.
    pool.host_pool_set_limit(64 * MB)
    gc.collect()  # now, so that no cycle frees a block between the deletes and the checks
    a, b, c = (_native.empty((MB,), torch.float32) for _ in range(3))
    last = c.data_ptr()
    del a, b, c  # freed in this order (reference counting)
    hits = pool.host_pool_stats()["hits"]
    for _ in range(3):
        u = _native.empty((MB,), torch.float32)
        assert u.data_ptr() == last
        del u
    assert pool.host_pool_stats()["hits"] == hits + 3


def test_live_blocks_never_overlap():
    ts = [_native.empty((MB + i,), torch.float32) for i in range(6)]
    spans = sorted((t.data_ptr(), t.data_ptr() + t.numel() * 4) for t in ts)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:], strict=False))


def test_limit_zero_keeps_nothing(pool):
    pool.host_pool_set_limit(0)
    try:
        t = _native.empty((MB,), torch.float32)
        del t
        gc.collect()
        assert pool.host_pool_stats()["cached_bytes"] == 0
    finally:
        pool.host_pool_set_limit(64 * MB)


def test_host_copy_is_an_equal_contiguous_copy():
    src = torch.randn(600, 512).t()  # non-contiguous, 1.2 MB
    dst = _native.host_copy(src)
    assert dst.is_contiguous() and torch.equal(dst, src)
    assert dst.data_ptr() != src.data_ptr()


def test_bad_size_is_a_clear_error():
    with pytest.raises(ValueError, match="size must be positive"):
        C.HostBlock(0)


def test_native_ops_write_pooled_outputs_correctly():
    # Outputs of 1 MiB and more come from the pool; reused blocks hold stale data, so
    # every element must be written (twice in a row: the second gets the first's block).
    from pydeepbench import ops

    g = torch.Generator().manual_seed(0)
    x, w, b = (torch.randn(s, generator=g) for s in ((700, 64), (513, 64), (513,)))
    ref = torch.relu(x.double() @ w.double().t() + b.double())
    for _ in range(2):
        y = ops.linear(x, w, b, "relu", impl="native")
        assert y.numel() * 4 >= MB
        torch.testing.assert_close(y.double(), ref, atol=1e-4, rtol=1e-4)
        del y
        gc.collect()
    weight = torch.randn(1000, 64, generator=g)
    idx = torch.randint(0, 1000, (3 * 4096,), generator=g)
    off = torch.arange(0, 3 * 4096 + 1, 3)
    ref = torch.nn.functional.embedding_bag(idx, weight, off[:-1], mode="sum")
    for _ in range(2):
        out = ops.embedding_bags(
            _native.host_copy(weight), torch.tensor([0, 1000]), idx, off, impl="native"
        )
        assert out.numel() * 4 >= MB
        torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
        del out
        gc.collect()


def test_release_cached_unmaps_what_the_pool_holds(pool):
    pool.host_pool_set_limit(64 * MB)
    t = _native.empty((MB,), torch.float32)
    del t
    gc.collect()
    assert pool.host_pool_stats()["cached_bytes"] >= 4 * MB
    _native.release_pool_cache()
    s = pool.host_pool_stats()
    assert s["cached_bytes"] == 0 and s["limit_bytes"] == 64 * MB
