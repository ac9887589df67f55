"""Thread control and thread-count independence of results."""
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import fastrnn
from fastrnn import _core


@pytest.fixture
def restore_threads():
    before = fastrnn.get_num_threads()
    yield
    fastrnn.set_num_threads(before)


SHAPES = [  # chosen to exercise the row split, the hidden split and the single-thread path
    ("lstm", True, 16, 9, 24, 64),
    ("lstm", True, 1, 12, 64, 160),
    ("gru", True, 2, 10, 32, 130),
    ("gru", False, 2, 10, 32, 130),
    ("gru", False, 24, 6, 20, 48),
    ("lstm", True, 3, 5, 4, 8),
]


@pytest.mark.parametrize("cell,reset_after,B,T,I,H", SHAPES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bitwise_identical_for_1_and_2_threads(isa, restore_threads, cell, reset_after, B, T,
                                                I, H, dtype):
    rng = np.random.default_rng(0)
    kw = dict(dtype=dtype, bidirectional=True, seed=3, init="torch")
    layer = fastrnn.LSTM(I, H, **kw) if cell == "lstm" else \
        fastrnn.GRU(I, H, reset_after=reset_after, **kw)
    x = rng.normal(size=(B, T, I))
    mask = rng.random((B, T)) < 0.8
    results = []
    for n in (1, 2, 3):
        fastrnn.set_num_threads(n)
        out, state = layer(x, mask=mask)
        results.append((out, state))
    for out, state in results[1:]:
        np.testing.assert_array_equal(out, results[0][0])
        for a, b in zip(state if isinstance(state, tuple) else (state,),
                        results[0][1] if isinstance(state, tuple) else (results[0][1],)):
            np.testing.assert_array_equal(a, b)


def test_set_get_num_threads(restore_threads):
    fastrnn.set_num_threads(1)
    assert fastrnn.get_num_threads() == 1
    fastrnn.set_num_threads(3)
    assert fastrnn.get_num_threads() == (3 if _core.openmp_enabled() else 1)
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(ValueError, match="num_threads"):
            fastrnn.set_num_threads(bad)


def _print_in_fresh_process(expr, **env):
    """Value of `expr` printed by a fresh interpreter that imported fastrnn under `env`."""
    code = f"import fastrnn; from fastrnn import _core; print({expr})"
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, **env),
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_omp_num_threads_respected():
    assert _print_in_fresh_process("fastrnn.get_num_threads()", OMP_NUM_THREADS="1") == "1"
    if _core.openmp_enabled():
        assert _print_in_fresh_process("fastrnn.get_num_threads()", OMP_NUM_THREADS="3") == "3"


def test_forced_baseline_env():
    assert _print_in_fresh_process("_core.get_isa()", FASTRNN_ISA="baseline") == "baseline"


def test_show_config_reports_everything(capsys):
    fastrnn.show_config()
    text = capsys.readouterr().out
    for word in ("fastrnn 0.1.0", "compiler", "openmp", "kernel variant", _core.get_isa(),
                 "threads"):
        assert word in text


def test_gil_released_during_kernel():
    """Another Python thread makes progress while a long forward call runs."""
    layer = fastrnn.LSTM(256, 256, seed=0)
    x = np.random.default_rng(0).normal(size=(16, 200, 256)).astype(np.float32)
    ticks = []
    done = threading.Event()

    def ticker():
        while not done.is_set():
            ticks.append(1)
            done.wait(0.001)

    t = threading.Thread(target=ticker)
    t.start()
    n0 = len(ticks)
    layer(x)
    n1 = len(ticks)
    done.set()
    t.join()
    assert n1 - n0 >= 5, "ticker thread starved: the GIL was held during the kernel"


def test_concurrent_calls_same_layer(restore_threads):
    """Many Python threads calling one layer get the sequential results."""
    layer = fastrnn.GRU(12, 40, seed=1, bidirectional=True)
    rng = np.random.default_rng(4)
    xs = [rng.normal(size=(5, 30, 12)) for _ in range(8)]
    expected = [layer(x)[0] for x in xs]
    results = [None] * len(xs)

    def work(i):
        for _ in range(5):
            results[i] = layer(xs[i])[0]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got, want)
