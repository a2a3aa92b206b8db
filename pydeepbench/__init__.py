"""pydeepbench: DeepBench-style kernel benchmarks, OOTB vs optimized, against the roofline."""

from pathlib import Path as _Path

__version__ = "0.1.0"


def _checkout_paths(here: _Path) -> list[str]:
    """Where a source checkout's package finds the rest of itself. The wheel puts kernels/
    and models/ inside the package (pyproject's wheel.packages); in a checkout they sit
    beside it. Run from the checkout's root (`python -m pydeepbench`, `python -m pytest`),
    this directory shadows the installed package, whose copy holds the compiled _C and
    _C_cuda: reach those there. An editable install's finder adds the same paths."""
    root = here.parent
    if not ((root / "pyproject.toml").is_file() and (root / "models" / "__init__.py").is_file()):
        return []  # an installed copy
    paths = [str(root)]
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        installed = _Path(distribution("pydeepbench").locate_file("pydeepbench")).resolve()
    except PackageNotFoundError:  # never installed: _C is "not available", said per impl
        return paths
    return paths + ([str(installed)] if installed != here and installed.is_dir() else [])


__path__ += [p for p in _checkout_paths(_Path(__file__).resolve().parent) if p not in __path__]

from pydeepbench import ops  # noqa: E402  (public API: pydeepbench.ops.gemm, ...)

__all__ = ["ops", "__version__"]
