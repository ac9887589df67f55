"""pytest-benchmark version of the `fastrnn bench` grid: `pytest bench/ --benchmark-only`
(`--bench-suite all` for every suite). Each benchmark group is one case at one thread count,
fastrnn and every installed peer side by side; a peer whose output differs from fastrnn's
fails. GFLOP/s (2*T*B*G*H*(I+H)) in extra_info. Not part of the test run."""
import contextlib

import numpy as np
import pytest

from fastrnn.bench import runner
from fastrnn.bench.peers import FastrnnImpl, Unsupported, all_peers

IMPLS = {impl.name: impl for impl in [FastrnnImpl(), *all_peers()]}


@pytest.mark.parametrize("impl_name", list(IMPLS))
def test_rnn(benchmark, impl_name, case, threads, dtype):
    impl = IMPLS[impl_name]
    note = impl.setup()
    if note:
        pytest.skip(note)
    layer = runner.make_layer(case, dtype)
    data = runner.make_data(case, dtype)
    fastrnn_impl = IMPLS["fastrnn"]
    with contextlib.ExitStack() as stack:
        stack.enter_context(fastrnn_impl.threads(threads))
        stack.enter_context(impl.threads(threads))
        try:
            reference = fastrnn_impl.prepare(case, layer, data)[1]()
            run, result = impl.prepare(case, layer, data)
        except Unsupported as e:
            pytest.skip(str(e))
        err = runner.max_abs_error(reference, result())
        assert err is not None and err <= runner.TOLERANCE[dtype], \
            f"{impl_name} output differs from fastrnn by {err}"
        flops = runner.case_flops(case, data.get("lengths"))
        benchmark.group = f"{case.label} threads={threads}"
        benchmark.extra_info.update(threads=threads, flops=flops, max_abs_err=err)
        benchmark.pedantic(run, rounds=5, warmup_rounds=1)
        per = case.T if case.kind == "step" else 1
        benchmark.extra_info["gflops_median"] = flops * per / benchmark.stats.stats.median / 1e9
        benchmark.extra_info["seconds_per_step" if per > 1 else "seconds"] = \
            float(np.median(benchmark.stats.stats.data)) / per
