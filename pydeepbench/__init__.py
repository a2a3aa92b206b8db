"""pydeepbench: DeepBench-style kernel benchmarks, OOTB vs optimized, against the roofline."""

__version__ = "0.1.0"

from pydeepbench import ops  # noqa: E402  (public API: pydeepbench.ops.gemm, ...)

__all__ = ["ops", "__version__"]
