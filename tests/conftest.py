import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread in every test: on 2 shared cores, thread spin-waits make tiny models slower, not faster."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
