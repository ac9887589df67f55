"""pytest-benchmark grid: `pytest bench/ --benchmark-only`. fastrnn and its peers on the same
work; GFLOP/s (2*T*B*G*H*(I+H)) in extra_info. Not part of the test run."""
import numpy as np
import pytest

import fastrnn
from fastrnn.bench.numpy_peer import NumpyRNN
from fastrnn.bench.timing import lstm_gru_flops

from conftest import SHAPES


def _layer(cell, I, H):
    return (fastrnn.LSTM if cell == "lstm" else fastrnn.GRU)(I, H, seed=0, init="torch")


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("impl", ["fastrnn", "numpy", "torch"])
def test_forward(benchmark, impl, cell, shape, threads, rng):
    B, T, I, H = shape
    layer = _layer(cell, I, H)
    x = rng.normal(size=(B, T, I)).astype(np.float32)
    if impl == "fastrnn":
        fn = lambda: layer(x)  # noqa: E731
    elif impl == "numpy":
        threadpoolctl = pytest.importorskip("threadpoolctl")
        ref = NumpyRNN(cell, layer.state_dict())
        limits = threadpoolctl.threadpool_limits(threads)
        fn = lambda: ref(x)  # noqa: E731
    else:
        from fastrnn.bench.demo import _torch_peer
        pytest.importorskip("torch")
        run, to_t = _torch_peer(cell, layer, threads)
        xt = to_t(x)
        fn = lambda: run(xt)  # noqa: E731
    benchmark.extra_info.update(threads=threads, flops=lstm_gru_flops(cell, B, T, I, H))
    benchmark.pedantic(fn, rounds=5, warmup_rounds=1)
    benchmark.extra_info["gflops_median"] = \
        benchmark.extra_info["flops"] / benchmark.stats.stats.median / 1e9
    if impl == "numpy":
        limits.restore_original_limits()
