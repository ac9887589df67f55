"""The machine's limits, measured on the spot: FP32 FMA peak (a register-only C loop) and GEMM
throughput (numpy's BLAS, on a large square and on a benchmark case's own GEMM shapes)."""
import contextlib

import numpy as np

from fastrnn import _core
from fastrnn.bench.timing import interleaved


def fma_peak_gflops(nthreads, seconds=0.2):
    """FP32 FMA peak of `nthreads` threads in GFLOP/s (2 flops per FMA), best of three runs."""
    return max(_core.fma_peak_gflops(nthreads, seconds / 3) for _ in range(3))


def blas_thread_control():
    """None when numpy's BLAS thread count can be set here, else why not (a sentence).

    Without threadpoolctl, numpy's BLAS runs at its own default thread count (OpenBLAS and MKL:
    usually every core), whatever thread count a benchmark row is labelled with."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return ("threadpoolctl is not installed (pip install threadpoolctl, or "
                "pip install fastrnn[bench])")
    if not any(lib.get("user_api") == "blas" for lib in threadpool_info()):
        return "threadpoolctl finds no BLAS library it can control in this process"
    return None


@contextlib.contextmanager
def blas_threads(n):
    """numpy's BLAS limited to `n` threads for the block; yields whether the limit applies
    (False: BLAS keeps its default thread count, see `blas_thread_control`)."""
    if blas_thread_control() is not None:
        yield False
        return
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=n):
        yield True


def _gemm_seconds(m, k, n, dtype, repeats, rng):
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    out = np.empty((m, n), dtype)
    t = interleaved({"gemm": lambda: np.matmul(a, b, out=out)}, repeats=repeats, min_time=0.01)
    return float(np.min(t["gemm"]))  # a limit: the best the machine did, not the typical


def gemm_gflops(m, k, n, dtype=np.float32, repeats=5, seed=0):
    """numpy matmul (m, k) @ (k, n) throughput in GFLOP/s (BLAS threads as currently limited)."""
    t = _gemm_seconds(m, k, n, dtype, repeats, np.random.default_rng(seed))
    return 2.0 * m * k * n / t / 1e9


def rnn_gemm_gflops(case, dtype=np.float32, repeats=3, seed=0):
    """Throughput of BLAS doing the case's own GEMMs: the input projection (B*T, I) @ (I, G*H)
    once plus the recurrent (B, H) @ (H, G*H) T times, i.e. the case's FLOPs at BLAS speed."""
    G = 4 if case.cell == "lstm" else 3
    rng = np.random.default_rng(seed)
    t_in = _gemm_seconds(case.B * case.T, case.I, G * case.H, dtype, repeats, rng)
    t_rec = _gemm_seconds(case.B, case.H, G * case.H, dtype, repeats, rng)
    flops = 2.0 * case.B * case.T * G * case.H * (case.I + case.H)
    return flops / (t_in + case.T * t_rec) / 1e9
