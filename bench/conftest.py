import numpy as np
import pytest

import fastrnn

SHAPES = [(1, 100, 64, 64), (8, 100, 128, 128), (64, 50, 512, 512)]


@pytest.fixture(params=[1, 2], ids=lambda n: f"threads{n}")
def threads(request):
    before = fastrnn.get_num_threads()
    fastrnn.set_num_threads(request.param)
    try:
        import torch
        torch.set_num_threads(request.param)
    except ImportError:
        pass
    yield request.param
    fastrnn.set_num_threads(before)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
