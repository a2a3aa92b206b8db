import torch

from pydeepbench.check import Tolerance, compare

TOL = Tolerance(atol=1e-3, rtol=1e-3)


def test_pass_and_fail_follow_assert_close_rule():
    ref = torch.tensor([1.0, 100.0], dtype=torch.float64)
    assert compare(ref + torch.tensor([1e-3, 0.1]), ref, TOL).ok  # 1e-3 + 1e-3*100 bounds
    r = compare(ref + torch.tensor([0.0, 0.2]), ref, TOL)
    assert not r.ok and r.mismatched == 1 and "(1,)" in r.message


def test_nan_output_fails_and_shape_mismatch_fails():
    ref = torch.ones(3, dtype=torch.float64)
    assert not compare(torch.tensor([1.0, float("nan"), 1.0]), ref, TOL).ok
    assert not compare(torch.tensor([1.0, float("inf"), 1.0]), ref, TOL).ok
    r = compare(torch.ones(4), ref, TOL)
    assert not r.ok and "shape" in r.message


def test_empty_outputs_pass():
    assert compare(torch.empty(0, 3), torch.empty(0, 3, dtype=torch.float64), TOL).ok
