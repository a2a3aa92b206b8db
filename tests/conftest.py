import os

import torch

if not torch.cuda.is_available():
    # Triton kernels run on the CPU only under the interpreter, which must be chosen
    # before triton is first imported in this process.
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    # Roofline peaks measured by tests go to a throwaway cache, not the user's.
    os.environ["PYDEEPBENCH_CACHE"] = str(tmp_path_factory.mktemp("pdb-cache"))
    yield


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
