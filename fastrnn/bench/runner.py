"""Runs benchmark cases on fastrnn and its peers, and renders the results (table, JSON, plot).

Conventions (also printed with every table):
- FLOPs of a forward pass = 2*T*B*G*H*(I+H), G = 4 (LSTM) or 3 (GRU): the multiply-adds of the
  input and recurrent matmuls counted twice; activations and element-wise work are not counted.
  Ragged batches count the valid steps only (sum of lengths instead of B*T); training counts
  3x the forward FLOPs (backward = two matmuls per forward matmul); a streaming step is T=1.
- ratio vs a peer = peer time / fastrnn time (above 1: fastrnn is faster).
- Limits: the FP32 FMA peak from a register-only C loop, and numpy's BLAS on a large square and
  on the case's own GEMM shapes (same thread count). float64 limits are the FP32 peak / 2.
- B=1 weight streaming = G*H*(I+H)*itemsize bytes per step / time per step.
"""
import contextlib
import datetime
import json
import os
import platform
import sys
import time

import numpy as np

import fastrnn
from fastrnn import _core
from fastrnn.bench import limits
from fastrnn.bench.record import cpu_label
from fastrnn.bench.peers import FastrnnImpl, PeerFailed, Unsupported, all_peers
from fastrnn.bench.timing import interleaved, lstm_gru_flops

SCHEMA = "fastrnn-bench/1"
FLOP_CONVENTION = ("FLOPs = 2*T*B*G*H*(I+H), G=4 LSTM, G=3 GRU (matmul multiply-adds x2; "
                   "ragged batches: valid steps only; training: 3x forward; step: T=1; "
                   "projection proj_size=P: 2*T*B*(G*H*(I+P) + H*P))")
TOLERANCE = {"float32": 1e-3, "float64": 1e-9}
SQUARE_N = 1024
# Pause after each timed block, at > 1 thread. OpenBLAS (numpy) and ONNX Runtime's intra-op
# pool keep spinning for tens of ms after a call (measured: a 2-thread fastrnn call right after
# onnxruntime took 15 ms instead of 3.5 ms, until 50-100 ms had passed); OpenMP pools less, but
# a sub-microsecond step still showed their noise at 20 ms. Every implementation gets the same.
COOLDOWN_S = {None: 0.1}
# %GEMM beyond 999% says only that the GEMM reference was slow (see the legend), not by how much
GEMM_SHOWN_MAX = 9.99


class Progress:
    """A one-line progress bar on `stream` (default stderr; plain lines when it is not a
    terminal): `update(label)` redraws, `advance(label)` counts one finished item of `total`."""

    def __init__(self, total, stream=None, width=30):
        self.total, self.done, self.width = max(total, 1), 0, width
        self.stream = sys.stderr if stream is None else stream
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0 = time.perf_counter()

    def update(self, label):
        frac = self.done / self.total
        bar = "#" * int(frac * self.width) + "." * (self.width - int(frac * self.width))
        line = (f"[{bar}] {self.done}/{self.total} {time.perf_counter() - self.t0:5.0f}s "
                f"{label}")
        if self.tty:
            self.stream.write("\r\033[K" + line[:150])
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def advance(self, label=""):
        self.done += 1
        self.update(label)

    def close(self):
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _proj_flops(case, steps_x_batch):
    """A projection's extra multiply-adds (H x P per step), counted twice; its recurrent
    matmul has P rows instead of H."""
    if case.P == case.H:
        return 0.0
    G = 4 if case.cell == "lstm" else 3
    return 2.0 * steps_x_batch * (case.H * case.P + G * case.H * (case.P - case.H))


def case_flops(case, lengths=None):
    if case.kind == "step":
        return lstm_gru_flops(case.cell, case.B, 1, case.I, case.H) + _proj_flops(case, case.B)
    steps_x_batch = int(np.sum(lengths)) if case.kind == "masked" else case.B * case.T
    flops = lstm_gru_flops(case.cell, 1, steps_x_batch, case.I, case.H)
    flops += _proj_flops(case, steps_x_batch)
    return 3 * flops if case.kind == "training" else flops


def _weight_bytes(case, itemsize):
    G = 4 if case.cell == "lstm" else 3
    proj = case.H * case.P if case.P != case.H else 0
    return (G * case.H * (case.I + case.P) + proj) * itemsize


def make_layer(case, dtype, seed=0):
    cls = fastrnn.LSTM if case.cell == "lstm" else fastrnn.GRU
    kw = {} if case.cell == "lstm" else {"reset_after": case.reset_after}
    layer = cls(case.I, case.H, seed=seed, init="torch", dtype=dtype, **kw, **case.kwargs)
    if getattr(layer, "peepholes", False):  # real work, not zeros
        rng = np.random.default_rng(seed + 1)
        for gate in ("input", "forget", "output"):
            layer.gate(gate).peephole[...] = rng.uniform(-0.3, 0.3, case.H)
    return layer


def make_data(case, dtype, seed=0):
    rng = np.random.default_rng(seed)
    data = {"x": rng.standard_normal((case.B, case.T, case.I)).astype(dtype)}
    if case.kind == "masked":
        data["lengths"] = rng.integers(1, case.T + 1, size=case.B)
    if case.kind == "training":
        data["grad"] = rng.standard_normal((case.B, case.T, case.P)).astype(dtype)
    return data


def max_abs_error(ref, other):
    """Largest |difference| over the outputs both sides produced; None if none in common."""
    keys = [k for k in ref if k in other]
    if not keys:
        return None
    return max(float(np.max(np.abs(np.asarray(ref[k], np.float64)
                                   - np.asarray(other[k], np.float64)))) for k in keys)


def _c_step_latency():
    try:
        from fastrnn.bench.c_latency import c_step_latency
    except ImportError:
        return None
    return c_step_latency


def _stats(seconds, per):
    s = np.asarray(seconds) / per
    return {"median_s": float(np.median(s)), "min_s": float(s.min()), "max_s": float(s.max())}


def machine_info():
    cpu = platform.processor() or platform.machine()
    family = model = None
    flags = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "model name":
                    cpu = value
                elif key == "cpu family" and family is None:
                    family = int(value)
                elif key == "model" and model is None:
                    model = int(value)
                elif key == "flags":
                    flags = set(value.split())
                    break  # the first processor's block is enough
    except (OSError, ValueError):
        pass
    # what decides the kernels: the widest vector ISA and the int8 / bf16 extensions
    isa = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni",
                       "amx_tile") if f in flags]
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return {"cpu": cpu, "cpu_family": family, "cpu_model": model, "cpu_isa": isa,
            "usable_cores": cores, "platform": platform.platform(),
            "python": platform.python_version(), "numpy": np.__version__,
            "fastrnn": fastrnn.__version__, "kernel_variant": _core.get_isa(),
            "openmp": _core.openmp_enabled(), "compiler": _core.compiler()}


def run_case(case, nthreads, impl_fastrnn, peers, *, dtype, repeats, min_time,
             budget=None):
    """Time one case at one thread count (threads already applied). Returns a result dict."""
    layer = make_layer(case, dtype)
    if case.kind != "training":
        # Inference servers freeze their layers (weights packed once, read-only), as ONNX
        # Runtime and OpenVINO sessions pack theirs once; training updates the weights.
        layer.freeze()
    data = make_data(case, dtype)
    flops = case_flops(case, data.get("lengths"))
    per = case.T if case.kind == "step" else 1       # step: time per step
    itemsize = np.dtype(dtype).itemsize
    res = {**case.as_dict(), "label": case.label, "threads": nthreads, "dtype": dtype,
           "flops": flops, "fastrnn": None, "peers": {}, "best_peer": None,
           "vs_best_peer": None, "notes": []}
    try:
        run_f, result_f = impl_fastrnn.prepare(case, layer, data)
    except Unsupported as e:
        res["notes"].append(f"fastrnn: {e}")
        return res
    ref = result_f()
    funcs = {"fastrnn": run_f}
    if case.kind == "masked":   # same batch at full length: the proportionality check
        x = data["x"]
        funcs["fastrnn_full_length"] = lambda: layer(x)
    for peer in peers:
        # a peer computing in reduced precision (OpenVINO's bf16 default) states its own
        tol = getattr(peer, "tolerance", None) or TOLERANCE[dtype]
        entry = {"ok": False, "max_abs_err": None, "note": ""}
        res["peers"][peer.name] = entry
        try:
            run_p, result_p = peer.prepare(case, layer, data)
            err = max_abs_error(ref, result_p())
        except Unsupported as e:
            entry["note"] = f"skipped: {e}"
            continue
        except Exception as e:  # noqa: BLE001 - a peer's own failure must not end the run
            msg = str(e).strip().splitlines()[-1] if str(e).strip() else ""
            entry["note"] = f"skipped: {type(e).__name__}: {msg[:200]}"
            continue
        entry["max_abs_err"] = err
        if err is None or not err <= tol:
            entry["note"] = (f"FAILED: output differs from fastrnn by {err:.3g} > {tol:g}"
                             if err is not None else "FAILED: no comparable output")
            res["notes"].append(f"{peer.name}: {entry['note']}")
            continue  # never time a different computation
        entry["ok"] = True
        entry["reduced_precision"] = bool(getattr(peer, "reduced_precision", False))
        funcs[peer.name] = run_p
    # Pools of BLAS/OpenMP threads spin after a call; let them sleep before the next one runs.
    pause = {name: (COOLDOWN_S.get(name, COOLDOWN_S[None]) if nthreads > 1 else 0.0)
             for name in funcs}
    t_case = time.perf_counter()
    while True:
        try:
            times = interleaved(funcs, repeats=repeats, warmup=1, min_time=min_time,
                                cooldown=pause, budget=budget)
            break
        except PeerFailed as e:  # drop that peer from this case, time the rest again
            res["peers"][e.peer].update(ok=False, note=f"skipped: failed while timed: {e}")
            funcs.pop(e.peer, None)
    res["repeats_done"] = len(times["fastrnn"])
    f = _stats(times["fastrnn"], per)
    f["gflops"] = flops / f["median_s"] / 1e9
    res["fastrnn"] = f
    if case.kind == "masked":
        full = _stats(times["fastrnn_full_length"], per)
        res["fastrnn_full_length"] = full
        res["masked_over_full"] = f["median_s"] / full["median_s"]
        res["mean_length_over_T"] = float(np.mean(data["lengths"]) / case.T)
    best = None
    for name, entry in res["peers"].items():
        if entry["ok"]:
            entry.update(_stats(times[name], per))
            entry["gflops"] = flops / entry["median_s"] / 1e9
            entry["ratio"] = entry["median_s"] / f["median_s"]
            if entry["reduced_precision"]:
                continue  # not the same computation: never the best peer
            if best is None or entry["median_s"] < res["peers"][best]["median_s"]:
                best = name
    res["best_peer"] = best
    res["vs_best_peer"] = res["peers"][best]["ratio"] if best else None
    if case.kind != "step" and case.P == case.H:  # the BLAS model has no projection
        with limits.blas_threads(nthreads) as pinned:
            g = limits.rnn_gemm_gflops(case, dtype)
        res["gemm_own_shapes_gflops"] = g
        res["gemm_blas_threads"] = nthreads if pinned else None  # None: BLAS's default
        res["fraction_gemm_own_shapes"] = f["gflops"] / g
    if case.B == 1 and case.kind in ("forward", "step"):
        seconds_per_step = f["median_s"] / (1 if case.kind == "step" else case.T)
        res["weight_gbytes_per_s"] = _weight_bytes(case, itemsize) / seconds_per_step / 1e9
    res["timing_wall_s"] = time.perf_counter() - t_case
    if case.kind == "step":
        c_lat = _c_step_latency()
        if c_lat is None:
            res["notes"].append("C-timed step latency not available in this build")
        else:
            res["c_step_latency"] = {k: _jsonable(v) for k, v in c_lat(layer).items()}
    return res


def _jsonable(v):
    """numpy scalars / arrays as plain JSON values (numbers, lists); strings unchanged."""
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (np.integer, np.floating)):
        return v.item()
    return v


def _add_thread_speedups(results):
    """fastrnn time at 1 thread / time at n threads, for every case also run at 1 thread."""
    one = {r["case_index"]: r["fastrnn"]["median_s"] for r in results
           if r["threads"] == 1 and r["fastrnn"]}
    for r in results:
        if r["threads"] != 1 and r["fastrnn"] and r["case_index"] in one:
            r["speedup_vs_1_thread"] = one[r["case_index"]] / r["fastrnn"]["median_s"]


def summarize(results):
    """Per suite and thread count: geometric mean and minimum of the ratio vs the best peer."""
    groups = {}
    for r in results:
        if r.get("vs_best_peer"):
            groups.setdefault((r["suite"], r["threads"]), []).append(r)
    out = []
    for (suite, nt), rows in groups.items():
        ratios = np.array([r["vs_best_peer"] for r in rows])
        worst = rows[int(np.argmin(ratios))]
        out.append({"suite": suite, "threads": nt, "cases": len(rows),
                    "geomean_vs_best_peer": float(np.exp(np.mean(np.log(ratios)))),
                    "min_vs_best_peer": float(ratios.min()), "min_case": worst["label"]})
    return out


def measure_limits(nthreads, dtype, square_n=SQUARE_N, before=None):
    """The limits at one thread count; with `before` (an earlier measurement), the better of
    both: a limit is what the machine can do, and a busy moment only hides it."""
    with limits.blas_threads(nthreads) as pinned:
        lim = {"fma_peak_gflops": limits.fma_peak_gflops(nthreads),
               "gemm_square_n": square_n,
               "gemm_square_gflops": limits.gemm_gflops(square_n, square_n, square_n, dtype),
               # None: BLAS ran at its own default thread count, not at `nthreads`
               "gemm_blas_threads": nthreads if pinned else None}
    if before:
        for k in ("fma_peak_gflops", "gemm_square_gflops"):
            lim[k] = max(lim[k], before[k])
    return lim


def _apply_limits(res, limit, dtype):
    if res["fastrnn"] is None:
        return
    gflops = res["fastrnn"]["gflops"]
    peak = limit["fma_peak_gflops"] / (2 if dtype == "float64" else 1)
    res["fraction_fma_peak"] = gflops / peak
    res["fraction_gemm_square"] = gflops / limit["gemm_square_gflops"]


def run_benchmark(cases, threads, *, dtype="float32", repeats=7, min_time=0.02, peers=None,
                  progress=True, square_n=SQUARE_N, budget=None, settings=None):
    """Run every case at every thread count. Returns the JSON-ready result document.
    budget: seconds per case after which no new round of repeats starts (at least 3 run).
    progress: True (a bar on stderr), False, or a text stream to draw the bar on."""
    dtype = np.dtype(dtype).name
    if dtype not in TOLERANCE:
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    peers = all_peers() if peers is None else peers
    available, peer_info, notes = [], {}, []
    for p in peers:
        note = p.setup()
        peer_info[p.name] = {"available": note is None, "version": getattr(p, "version", None),
                             "note": note}
        if note is None:
            available.append(p)
        else:
            notes.append(f"{p.name} skipped: {note}")
    if progress is True:
        bar = Progress(len(cases) * len(threads))
    elif progress:  # a stream to draw on
        bar = Progress(len(cases) * len(threads), stream=progress)
    else:
        bar = None
    blas_unpinned = limits.blas_thread_control()
    if blas_unpinned:
        notes.append(f"numpy BLAS thread count unpinned: {blas_unpinned}. The numpy GEMM limits "
                     "(%GEMM, the square GEMM) and the numpy peer ran at BLAS's own default "
                     "thread count (often every core), not at each row's thread count")
    impl = FastrnnImpl()
    results, lims = [], {}
    t0 = time.perf_counter()
    from fastrnn.bench.tf_peers import close_workers
    try:
        for nt in threads:
            with contextlib.ExitStack() as stack:
                for p in [impl, *available]:
                    stack.enter_context(p.threads(nt))
                if bar:
                    bar.update(f"measuring the machine limit, {nt} thread(s)")
                lims[str(nt)] = measure_limits(nt, dtype, square_n)
                for index, case in enumerate(cases):
                    if bar:
                        bar.update(f"{case.label} threads={nt}")
                    results.append(run_case(case, nt, impl, available, dtype=dtype,
                                            repeats=repeats, min_time=min_time, budget=budget))
                    results[-1]["case_index"] = index
                    if bar:
                        bar.advance(f"{case.label} threads={nt}")
                lims[str(nt)] = measure_limits(nt, dtype, square_n, before=lims[str(nt)])
                for r in results:
                    if r["threads"] == nt:
                        _apply_limits(r, lims[str(nt)], dtype)
        if bar:
            bar.close()
    finally:
        close_workers()  # no child process outlives the run, even one cut short
    _add_thread_speedups(results)
    failures = [f"{r['label']} threads={r['threads']}: {n}" for r in results for n in r["notes"]
                if "FAILED" in n]
    return {"schema": SCHEMA,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine_info(), "settings": {"dtype": dtype, "repeats": repeats,
                                                    "threads": list(threads),
                                                    "min_time_s": min_time,
                                                    "budget_s_per_case": budget,
                                                    "numpy_blas_threads_pinned":
                                                        blas_unpinned is None,
                                                    **(settings or {})},
            "flop_convention": FLOP_CONVENTION, "limits": lims, "peers": peer_info,
            "notes": notes, "failures": failures, "results": results,
            "summary": summarize(results),
            "elapsed_s": time.perf_counter() - t0}


# ---- rendering ----

def _fmt_time(s):
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.3g} us"
    if s < 1:
        return f"{s * 1e3:.3g} ms"
    return f"{s:.3g} s"


def _fmt_gemm_fraction(fraction):
    """%GEMM as shown: past GEMM_SHOWN_MAX only '>999%' (the JSON keeps the exact fraction)."""
    if fraction is None:
        return "-"
    return f"{100 * fraction:.0f}%" if fraction <= GEMM_SHOWN_MAX else ">999%"


def _peer_cell(entry):
    if entry["ok"]:
        return f"{entry['ratio']:.2f}x ({entry['max_abs_err']:.0e})"
    return "FAIL" if entry["note"].startswith("FAILED") else "-"


def legend(doc, peer_names):
    """One line per table column (`name: meaning`), in column order; the peer columns share
    one line naming them all."""
    pinned = doc["settings"].get("numpy_blas_threads_pinned", True)
    blas_threads = ("at the row's thread count" if pinned else
                    "at BLAS's own default thread count (unpinned, see the note)")
    lines = [
        "case: cell, kind, shape and variant keywords. Cells: lstm; gru is reset_after=True "
        "(PyTorch/cuDNN/ONNX linear_before_reset: the reset gate scales the recurrent "
        "product); gru(rb) is reset_after=False, 'reset before' (Keras reset_after=False, "
        "TF1 GRUCell: the reset gate scales h before its recurrent product). Kinds: forward "
        "(whole sequences, one call), step (streaming, one call per time step), masked "
        "(ragged batch, per-row lengths), training (forward + backward to dx). B batch, T time "
        "steps, I input size, H hidden units; then cell-variant keywords (docs/variants.md)",
        "thr: threads; (n.nnx) is fastrnn's speedup over its own 1-thread time",
        "fastrnn time: median [min, max] per call (step rows: per step); (ragged/full r): the "
        "ragged batch's time over the same batch at full length; (C: n ns): the step latency "
        "timed inside C, without Python",
        "GFLOP/s: fastrnn's FLOPs (convention above) per second, from the median",
        "%peak: GFLOP/s over the FMA peak at the row's thread count (float64: half of it)",
        f"%GEMM: GFLOP/s over numpy's BLAS doing only the case's own matmuls ({blas_threads}): "
        "the input projection (B*T, I) @ (I, G*H) once plus the recurrent (B, H) @ (H, G*H) "
        "once per step, i.e. the same FLOPs as plain GEMM calls. Above 100%: fastrnn ran the "
        "whole pass faster than those GEMM calls alone, which happens at small shapes where "
        "numpy's per-call overhead and BLAS's tuning for large matrices slow the reference "
        "down (more so at several threads, where BLAS's threads cost more than such small "
        "products gain); it is a yardstick, not a bound. Shown up to 999%, '>999%' beyond "
        "(the JSON has the exact fraction); '-': not measured (step rows, projections)",
        "GB/s: weight bytes read per step over the time per step (B=1 rows): "
        "G*H*(I+H)*itemsize (with proj_size=P: G*H*(I+P) + H*P elements)",
    ]
    if peer_names:
        lines.append(f"{', '.join(peer_names)}: the peer's time / fastrnn's time (above 1: "
                     "fastrnn faster) and (its max abs error vs fastrnn); FAIL: its output "
                     "differs, so it was not timed; '-': it cannot run the case (reasons "
                     "below the table)")
    lines.append("vs best: the ratio vs the fastest peer that ran the case, and that peer; "
                 "peers computing in reduced precision (openvino-default where OpenVINO "
                 "defaults to bf16) are shown but never the best peer of a float run")
    return lines


def format_table(doc):
    peer_names = [n for n, info in doc["peers"].items() if info["available"]]
    out = []
    m = doc["machine"]
    out.append(f"fastrnn {m['fastrnn']} bench: {doc['settings']['dtype']}, batch-first, "
               f"median [min, max] of {doc['settings']['repeats']} interleaved repeats (at "
               f"least 3 where a case hit its time budget); "
               f"{cpu_label(m)}, kernels {m['kernel_variant']}")
    out.append(f"{doc['flop_convention']}.")
    for nt, lim in doc["limits"].items():
        # older documents have no "gemm_blas_threads": their BLAS threads were pinned
        blas = ("BLAS threads unpinned" if "gemm_blas_threads" in lim
                and lim["gemm_blas_threads"] is None else f"{nt} BLAS thread(s)")
        out.append(f"Limit at {nt} thread(s): FP32 FMA peak {lim['fma_peak_gflops']:.1f} GFLOP/s; "
                   f"numpy GEMM {lim['gemm_square_n']}^3 ({blas}) "
                   f"{lim['gemm_square_gflops']:.1f} GFLOP/s.")
    cols = (["case", "thr", "fastrnn time", "GFLOP/s", "%peak", "%GEMM", "GB/s"]
            + peer_names + ["vs best"])
    out.append("Columns:")
    out.extend(f"- {line}" for line in legend(doc, peer_names))
    for note in doc["notes"]:
        out.append(f"Note: {note}")
    suite = None
    for r in sorted(doc["results"], key=lambda r: (r["case_index"], r["threads"])):
        if r["suite"] != suite:
            suite = r["suite"]
            out.append("")
            out.append(f"### {suite}")
            out.append("")
            for note in sorted({c["note"] for c in doc["results"]
                                if c["suite"] == suite and c["note"]}):
                out.append(f"{note}.")
                out.append("")
            out.append("| " + " | ".join(cols) + " |")
            out.append("|" + "---|" * len(cols))
        f = r["fastrnn"]
        if f is None:
            out.append(f"| {r['label']} | {r['threads']} | " + "; ".join(r["notes"]) + " |"
                       + " |" * (len(cols) - 3))
            continue
        extra = ""
        if "masked_over_full" in r:
            extra = f" (ragged/full {r['masked_over_full']:.2f})"
        if "c_step_latency" in r:
            extra = f" (C: {r['c_step_latency'].get('median_ns', float('nan')):.0f} ns)"
        thr = str(r["threads"])
        if "speedup_vs_1_thread" in r:
            thr += f" ({r['speedup_vs_1_thread']:.2f}x)"
        row = [r["label"], thr,
               f"{_fmt_time(f['median_s'])} [{_fmt_time(f['min_s'])}, "
               f"{_fmt_time(f['max_s'])}]{extra}",
               f"{f['gflops']:.1f}", f"{100 * r['fraction_fma_peak']:.0f}%",
               _fmt_gemm_fraction(r.get("fraction_gemm_own_shapes")),
               f"{r['weight_gbytes_per_s']:.1f}" if "weight_gbytes_per_s" in r else "-"]
        row += [_peer_cell(r["peers"][n]) if n in r["peers"] else "-" for n in peer_names]
        row.append(f"{r['vs_best_peer']:.2f}x {r['best_peer']}" if r["best_peer"] else "-")
        out.append("| " + " | ".join(row) + " |")
    if doc.get("summary"):
        out.append("")
        out.append("### summary: fastrnn vs the best peer (ratio of medians)")
        out.append("")
        out.append("| suite | threads | cases | geometric mean | min (case) |")
        out.append("|---|---|---|---|---|")
        for g in doc["summary"]:
            out.append(f"| {g['suite']} | {g['threads']} | {g['cases']} | "
                       f"{g['geomean_vs_best_peer']:.2f}x | {g['min_vs_best_peer']:.2f}x "
                       f"({g['min_case']}) |")
    skips = sorted({f"{name}: {e['note'][len('skipped: '):]}" for r in doc["results"]
                    for name, e in r["peers"].items() if e["note"].startswith("skipped")}
                   | {n for r in doc["results"] for n in r["notes"] if "FAILED" not in n})
    if skips:
        out.append("")
        out.extend(f"- {s}" for s in skips)
    if doc["failures"]:
        out.append("")
        out.append("FAILURES (peer output differs from fastrnn; not timed):")
        out.extend(f"- {s}" for s in doc["failures"])
    return "\n".join(out)


def write_json(doc, path):
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


def write_plot(doc, path):
    """Two panels: fastrnn's ratio vs the best peer per case, and GFLOP/s vs the limits."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError("--plot needs matplotlib: pip install fastrnn[plot]") from e
    rows = [r for r in sorted(doc["results"], key=lambda r: (r["case_index"], r["threads"]))
            if r["fastrnn"] is not None]
    labels = [f"{r['label']} t{r['threads']}" for r in rows]
    y = np.arange(len(rows))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 0.3 * len(rows) + 2), sharey=True)
    ratios = [r["vs_best_peer"] or np.nan for r in rows]
    ax1.barh(y, ratios, color=["tab:green" if (v or 0) >= 1 else "tab:red" for v in ratios])
    ax1.axvline(1.0, color="k", lw=0.8)
    ax1.set_xscale("log")
    ax1.set_xlabel("best peer time / fastrnn time")
    ax1.set_yticks(y, labels, fontsize=7)
    ax1.invert_yaxis()
    ax2.barh(y, [r["fastrnn"]["gflops"] for r in rows], color="tab:blue", label="fastrnn")
    peaks = [doc["limits"][str(r["threads"])]["fma_peak_gflops"] for r in rows]
    ax2.scatter(peaks, y, marker="|", color="k", s=80, label="FMA peak")
    ax2.scatter([r.get("gemm_own_shapes_gflops", np.nan) for r in rows], y, marker="x",
                color="tab:orange", label="BLAS on own GEMM shapes")
    ax2.set_xlabel("GFLOP/s")
    ax2.legend(fontsize=7)
    fig.suptitle(f"fastrnn bench ({doc['machine']['cpu']}, {doc['settings']['dtype']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
