"""An autouse fixture for test modules that import it: torch runs on one thread inside each test.

Many tiny ops (finite differences, small networks) run far slower with several OpenMP
threads on a busy machine than with one; results do not depend on the thread count.
"""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
