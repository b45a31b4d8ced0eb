import os

import pytest
import torch

# Two cores, several test processes on CI machines: one intra-op thread keeps tests predictable.
torch.set_num_threads(int(os.environ.get("GRADSCOPE_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
