import pytest
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


def test_complex_outputs_are_refused():
    # Compared in float64, (1+1j) had passed against (1+0j): the imaginary part dropped.
    ref = torch.tensor([1 + 0j], dtype=torch.complex128)
    with pytest.raises(TypeError, match="complex"):
        compare(torch.tensor([1 + 1j]), ref, TOL)


def test_empty_outputs_pass():
    assert compare(torch.empty(0, 3), torch.empty(0, 3, dtype=torch.float64), TOL).ok


def test_infinities_and_nans_match_only_themselves():
    inf, nan = float("inf"), float("nan")

    def check(out, ref):
        o, r = torch.tensor([out]), torch.tensor([ref], dtype=torch.float64)
        return compare(o, r, TOL)

    assert check(inf, inf).ok and check(-inf, -inf).ok  # inf - inf is NaN: it had failed
    assert check(nan, nan).ok
    for out, ref in [(1.0, inf), (-inf, inf), (3e38, inf), (nan, inf), (inf, 1.0), (nan, 1.0)]:
        r = check(out, ref)  # rtol * inf had passed the first three
        assert not r.ok and r.mismatched == 1, (out, ref)
        assert r.max_abs_err == inf, (out, ref)  # not 1.8e308 (nan_to_num's default)
