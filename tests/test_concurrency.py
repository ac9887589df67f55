"""Concurrent use and memory: many Python threads, training on separate layers and on one layer
(per-thread records), thread-count changes while calls run, and no growth over many calls."""
import gc
import threading
import tracemalloc

import numpy as np
import pytest

import fastrnn


def _run_threads(target, n):
    errors = []

    def wrap(i):
        try:
            target(i)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=wrap, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def _train_once(layer, x, lengths, g):
    out, _ = layer(x, lengths=lengths, training=True)
    gx, _ = layer.backward(g)
    return out, gx, layer.grads


def test_training_separate_layers_in_parallel_equals_sequential():
    rng = np.random.default_rng(0)
    n = 6
    layers = [(fastrnn.LSTM if i % 2 else fastrnn.GRU)(16, 24, seed=i, bidirectional=True,
                                                      recurrent_dropout=0.2) for i in range(n)]
    data = [(rng.normal(size=(5, 7, 16)), rng.integers(0, 8, size=5),
             rng.normal(size=(5, 7, 48))) for _ in range(n)]
    twins = [type(l)(16, 24, seed=i, bidirectional=True, recurrent_dropout=0.2)
             for i, l in enumerate(layers)]
    expected = [_train_once(t, *d) for t, d in zip(twins, data)]
    results = [None] * n

    def work(i):
        results[i] = _train_once(layers[i], *data[i])

    _run_threads(work, n)
    for (out, gx, grads), (eout, egx, egrads) in zip(results, expected):
        np.testing.assert_array_equal(out, eout)
        np.testing.assert_array_equal(gx, egx)
        for k in egrads:
            np.testing.assert_array_equal(grads[k], egrads[k])


def test_one_layer_trained_from_several_threads_keeps_per_thread_records():
    layer = fastrnn.LSTM(8, 12, seed=1)
    rng = np.random.default_rng(1)
    inputs = [rng.normal(size=(3, 6, 8)) for _ in range(4)]
    grads_out = [rng.normal(size=(3, 6, 12)) for _ in range(4)]
    expected = []
    for x, g in zip(inputs, grads_out):
        layer(x, training=True)
        expected.append(layer.backward(g)[0])
    barrier = threading.Barrier(4)
    got = [None] * 4

    def work(i):
        layer(inputs[i], training=True)
        barrier.wait()  # every thread has made its call before any runs backward
        got[i] = layer.backward(grads_out[i])[0]

    _run_threads(work, 4)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


def test_set_num_threads_while_other_threads_run():
    layer = fastrnn.GRU(32, 64, seed=2)
    x = np.random.default_rng(2).normal(size=(16, 20, 32))
    expected, _ = layer(x)
    before = fastrnn.get_num_threads()
    stop = threading.Event()

    def flip():
        k = 0
        while not stop.is_set():
            fastrnn.set_num_threads(1 + k % 3)
            k += 1

    flipper = threading.Thread(target=flip)
    flipper.start()
    try:
        outs = []
        _run_threads(lambda i: outs.extend(layer(x)[0] for _ in range(5)), 3)
    finally:
        stop.set()
        flipper.join()
        fastrnn.set_num_threads(before)
    for o in outs:
        np.testing.assert_array_equal(o, expected)  # results never depend on the thread count


def _rss_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@pytest.mark.skipif(not hasattr(tracemalloc, "start"), reason="tracemalloc unavailable")
def test_no_growth_over_many_forward_backward_calls():
    layer = fastrnn.LSTM(8, 16, seed=3, dropout=0.1, recurrent_dropout=0.1)
    x = np.random.default_rng(3).normal(size=(4, 10, 8))
    g = np.ones((4, 10, 16))

    def burst(n):
        for _ in range(n):
            layer(x, training=True)
            layer.backward(g)
            layer(x)  # inference releases the record

    burst(500)  # warm-up: workspaces reach their size
    gc.collect()
    tracemalloc.start()
    snap0 = tracemalloc.take_snapshot()
    rss0 = _rss_kb()
    burst(10_000)
    gc.collect()
    snap1 = tracemalloc.take_snapshot()
    rss1 = _rss_kb()
    tracemalloc.stop()
    growth = sum(s.size_diff for s in snap1.compare_to(snap0, "filename"))
    assert growth < 64 * 1024, f"Python heap grew by {growth} bytes over 10,000 calls"
    assert rss1 - rss0 < 8 * 1024, f"RSS grew by {rss1 - rss0} kB over 10,000 calls"
    assert layer._local.tape is None  # the last call was an inference call: nothing kept


def test_inference_calls_keep_no_large_workspace_alive():
    """Workspaces above 1 MB live for the call only (api.md: an inference call keeps nothing;
    small ones are reused per thread, where an allocation would cost as much as the call)."""
    layer = fastrnn.LSTM(64, 256, seed=4)
    x = np.random.default_rng(4).normal(size=(16, 100, 64)).astype(np.float32)
    layer(x)  # warm-up: imports, thread pools
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    out, _ = layer(x)
    need = layer._engines[0].workspace_size(16, 100, fastrnn.get_num_threads())
    del out
    gc.collect()
    kept = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert need > 4 << 20  # the call needed several MB of workspace...
    assert kept < 1 << 20, f"{kept} bytes kept after an inference call"  # ...and kept none
