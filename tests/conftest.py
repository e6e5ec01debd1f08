import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Test tensors are tiny: on a busy 2-core machine a second intra-op thread mostly
    spin-waits at OpenMP barriers (measured 3-30x slower), so the suite runs on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
