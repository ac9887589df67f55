"""`fastrnn bench --suite quantized`: int8 and bf16 weights (`layer.quantize(...)`) against
fastrnn's own float32 layer and the peers' own quantized LSTMs built from the same float weights:
PyTorch's dynamic quantization (`torch.ao.quantization.quantize_dynamic`, qint8) and ONNX
Runtime's `DynamicQuantizeLSTM` (`onnxruntime.quantization.quantize_dynamic` of the exported
model). Each is optional and skipped with a note when not installed.

Every implementation's error is measured against the float32 layer's output on the same input
before anything is timed (max abs, mean abs); one whose error exceeds MAX_ERROR is reported
FAILED and not timed. All implementations of a case are timed interleaved in one process at
the same thread count; ratios are of medians.
"""
import datetime
import importlib.metadata
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass

import numpy as np

import fastrnn
from fastrnn.bench.record import cpu_label
from fastrnn.bench.timing import format_seconds as _fmt, interleaved

SCHEMA = "fastrnn-bench-quantized/1"
COOLDOWN_S = 0.1   # after each timed block at > 1 thread (spinning pools; runner.COOLDOWN_S)
MAX_ERROR = 0.1    # max abs output error vs float32 beyond which a result is not a quantized
#                    model of the same layer (a wrong gate order gives ~0.5-1)


@dataclass(frozen=True)
class QuantCase:
    cell: str
    B: int
    T: int
    H: int
    quick: bool = False

    @property
    def name(self):
        return f"{self.cell}-B{self.B}-H{self.H}-T{self.T}"


CASES = (
    QuantCase("lstm", 64, 50, 256, quick=True),   # compute-bound
    QuantCase("lstm", 32, 50, 512),
    QuantCase("gru", 64, 50, 256),
    QuantCase("lstm", 8, 100, 256),
    QuantCase("lstm", 1, 100, 512, quick=True),   # B=1, weights beyond L2 (4 MB float32)
    QuantCase("lstm", 1, 50, 1024),
    QuantCase("gru", 1, 100, 256),
    QuantCase("lstm", 1, 100, 64),
)


def _versions():
    out = {}
    for package in ("torch", "onnxruntime", "openvino"):
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[package] = None
    return out


def _torch_qint8(layer):
    """PyTorch's dynamically quantized LSTM / GRU with the layer's weights, or a skip note."""
    try:
        import torch
    except ImportError:
        return None, "skipped: torch is not installed"
    module = layer.to_torch()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice
        wrapped = torch.ao.quantization.quantize_dynamic(
            torch.nn.Sequential(module), {torch.nn.LSTM, torch.nn.GRU}, dtype=torch.qint8)
    model = wrapped[0]

    def run(x, _model=model, _torch=torch):
        with _torch.inference_mode():
            return _model(_torch.from_numpy(x))[0].numpy()
    return run, ""


def _ort_dynamic(layer, folder, threads):
    """ONNX Runtime's DynamicQuantizeLSTM of the exported layer (LSTM only), or a skip note."""
    if layer._cell != "lstm":
        return None, "skipped: ONNX Runtime quantizes LSTM nodes only (no DynamicQuantizeGRU)"
    try:
        import onnxruntime as ort
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        return None, "skipped: onnxruntime is not installed"
    src = os.path.join(folder, f"{id(layer)}.onnx")
    dst = os.path.join(folder, f"{id(layer)}-int8.onnx")
    layer.to_onnx(src)
    quantize_dynamic(src, dst, op_types_to_quantize=["LSTM"], weight_type=QuantType.QInt8)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(dst, opts, providers=["CPUExecutionProvider"])
    ops = {n.op_type for n in __import__("onnx").load(dst).graph.node}
    if "DynamicQuantizeLSTM" not in ops:
        return None, f"skipped: quantize_dynamic left {sorted(ops)} (no DynamicQuantizeLSTM)"
    name = session.get_inputs()[0].name
    # The exported model is time-major (ONNX's layout 0): its input is transposed once here,
    # outside the timed call, and its output back only for the error check.
    cache = {}

    def run(x, _s=session, _n=name):
        xt = cache.get(id(x))
        if xt is None:
            xt = cache[id(x)] = np.ascontiguousarray(x.transpose(1, 0, 2))
        return _s.run(None, {_n: xt})[0]
    run.batch_major = lambda y: y.transpose(1, 0, 2)
    return run, ""


def _openvino_bf16(layer, folder, threads):
    """OpenVINO's CPU plugin on the exported layer with INFERENCE_PRECISION_HINT=bf16 (its
    default on CPUs with AVX-512 BF16 or AMX): the peer of fastrnn's bf16 layers, or a skip
    note."""
    try:
        import openvino
    except ImportError:
        return None, "skipped: openvino is not installed"
    core = openvino.Core()
    if "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        return None, "skipped: OpenVINO runs no bf16 on this CPU"
    src = os.path.join(folder, f"{id(layer)}-ov.onnx")
    layer.to_onnx(src)
    compiled = core.compile_model(core.read_model(src), "CPU", {
        "INFERENCE_PRECISION_HINT": "bf16", "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1})
    request = compiled.create_infer_request()
    port = compiled.outputs[0]
    # time-major model, as for ONNX Runtime: input transposed once, outside the timed call
    cache = {}

    def run(x, _r=request, _p=port):
        xt = cache.get(id(x))
        if xt is None:
            xt = cache[id(x)] = np.ascontiguousarray(x.transpose(1, 0, 2))
        return _r.infer({0: xt})[_p]
    run.batch_major = lambda y: y.transpose(1, 0, 2)
    return run, ""


def run_case(case, nthreads, folder, *, repeats=7, min_time=0.02, budget=None, seed=0):
    cls = fastrnn.LSTM if case.cell == "lstm" else fastrnn.GRU
    layer = cls(case.H, case.H, seed=seed)
    q = layer.quantize("int8")
    b = layer.quantize("bf16")
    x = np.random.default_rng(seed).standard_normal((case.B, case.T, case.H)).astype(np.float32)
    ref = layer(x)[0]
    impls = {"float32": (lambda: layer(x)), "int8": (lambda: q(x)), "bf16": (lambda: b(x))}
    res = {"case": case.name, "cell": case.cell, "B": case.B, "T": case.T, "H": case.H,
           "threads": nthreads, "results": {}, "notes": []}
    errors = {"float32": (0.0, 0.0), "int8": _error(q(x)[0], ref), "bf16": _error(b(x)[0], ref)}
    for peer, build in (("torch-qint8", lambda: _torch_qint8(layer)),
                        ("ort-dynamic", lambda: _ort_dynamic(layer, folder, nthreads)),
                        ("openvino-bf16", lambda: _openvino_bf16(layer, folder, nthreads))):
        try:
            fn, note = build()
        except Exception as exc:  # noqa: BLE001 - a peer that cannot build is reported, not fatal
            fn, note = None, f"skipped: {type(exc).__name__}: {exc}"
        if fn is None:
            res["notes"].append(f"{peer} {note}")
            continue
        out = fn(x)
        out = getattr(fn, "batch_major", lambda y: y)(out)
        err = _error(out, ref) if out.shape == ref.shape else (np.inf, np.inf)
        if not err[0] <= MAX_ERROR:
            res["notes"].append(f"{peer} FAILED: max abs error {err[0]:.3g} vs float32 > "
                                f"{MAX_ERROR}; not timed")
            continue
        errors[peer] = err
        impls[peer] = (lambda _fn=fn: _fn(x))
    if errors["int8"][0] > MAX_ERROR:
        res["notes"].append(f"int8 FAILED: max abs error {errors['int8'][0]:.3g}")
        return res
    times = interleaved(impls, repeats=repeats, warmup=2, min_time=min_time,
                        cooldown=COOLDOWN_S if nthreads > 1 else 0.0, budget=budget)
    for name, t in times.items():
        res["results"][name] = {"median_s": float(np.median(t)), "min_s": float(t.min()),
                                "max_abs_err": errors[name][0], "mean_abs_err": errors[name][1]}
    med = {n: r["median_s"] for n, r in res["results"].items()}
    res["ratios"] = {f"int8 vs {n}": med[n] / med["int8"] for n in med
                     if n not in ("int8", "openvino-bf16")}
    res["ratios"]["bf16 vs float32"] = med["float32"] / med["bf16"]
    if "openvino-bf16" in med:
        res["ratios"]["bf16 vs openvino-bf16"] = med["openvino-bf16"] / med["bf16"]
    return res


def _error(out, ref):
    d = np.abs(np.asarray(out, np.float64) - ref)
    return float(d.max()), float(d.mean())


def _set_threads(n):
    fastrnn.set_num_threads(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)


def run_quantized(threads, *, quick=False, repeats=7, min_time=0.02, budget=None,
                  progress=None, cases=None):
    """Every case (the quick ones with `quick`) at every thread count: the JSON-ready result
    document. progress: a Progress bar (runner.Progress) or None."""
    from fastrnn import _core
    from fastrnn.bench.runner import machine_info
    cases = [c for c in (cases or CASES) if c.quick or not quick]
    results, t0 = [], time.perf_counter()
    before = fastrnn.get_num_threads()
    torch_before = sys.modules["torch"].get_num_threads() if "torch" in sys.modules else None
    try:
        with tempfile.TemporaryDirectory() as folder:
            for nt in threads:
                for case in cases:
                    _set_threads(nt)
                    if progress:
                        progress.update(f"quantized {case.name} threads={nt}")
                    results.append(run_case(case, nt, folder, repeats=repeats,
                                            min_time=min_time, budget=budget))
                    if progress:
                        progress.advance(f"quantized {case.name} threads={nt}")
    finally:
        fastrnn.set_num_threads(before)
        if "torch" in sys.modules and torch_before is not None:
            sys.modules["torch"].set_num_threads(torch_before)
    failures = [f"{r['case']} threads={r['threads']}: {n}" for r in results
                for n in r["notes"] if "FAILED" in n]
    summary = {}
    for key in ("int8 vs float32", "int8 vs torch-qint8", "int8 vs ort-dynamic",
                "bf16 vs float32", "bf16 vs openvino-bf16"):
        vals = np.array([r["ratios"][key] for r in results if key in r.get("ratios", {})])
        if vals.size:
            summary[key] = {"geomean": float(np.exp(np.log(vals).mean())),
                            "min": float(vals.min()), "rows": int(vals.size)}
    machine = machine_info()
    machine["int8_kernel"] = _core.int8_kernel_name()
    machine["bf16_kernel"] = _core.bf16_kernel_name()
    return {"schema": SCHEMA,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine, "versions": _versions(),
            "settings": {"suite": "quantized", "threads": list(threads), "quick": quick,
                         "repeats": repeats, "min_time_s": min_time,
                         "budget_s_per_case": budget},
            "failures": failures, "results": results, "summary": summary,
            "elapsed_s": time.perf_counter() - t0}


def format_table(doc):
    m = doc["machine"]
    v = doc["versions"]
    lines = [f"fastrnn {m['fastrnn']} int8 / bf16 weights: {cpu_label(m)} (kernels {m['kernel_variant']}, {m['int8_kernel']}, "
             f"{m['bf16_kernel']}), torch {v['torch'] or '-'}, onnxruntime "
             f"{v['onnxruntime'] or '-'}, openvino {v.get('openvino') or '-'}",
             "time: median of interleaved repeats, same threads; ratio = that time / fastrnn "
             "int8's (bf16 vs f32: float32's / bf16's; above 1: faster); err: max / mean abs "
             "output error vs float32",
             "OpenVINO bf16: its CPU plugin with INFERENCE_PRECISION_HINT=bf16; 'bf16 vs OV' = "
             "its time / fastrnn bf16's",
             "", "| case | thr | float32 | int8 | bf16 | torch qint8 | ORT dyn-quant | OV bf16 | "
             "int8 vs f32 | vs torch | vs ORT | bf16 vs f32 | bf16 vs OV | err int8 | err bf16 | "
             "err torch | err ORT | err OV bf16 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
             "---:|---:|"]
    for r in doc["results"]:
        res, rat = r["results"], r.get("ratios", {})

        def t(name):
            return _fmt(res[name]["median_s"]) if name in res else "-"

        def ratio(name):
            key = f"int8 vs {name}"
            return f"{rat[key]:.2f}x" if key in rat else "-"

        def err(name):
            return (f"{res[name]['max_abs_err']:.1e} / {res[name]['mean_abs_err']:.0e}"
                    if name in res else "-")
        bf = f"{rat['bf16 vs float32']:.2f}x" if "bf16 vs float32" in rat else "-"
        bov = (f"{rat['bf16 vs openvino-bf16']:.2f}x" if "bf16 vs openvino-bf16" in rat
               else "-")
        lines.append(f"| {r['case']} | {r['threads']} | {t('float32')} | {t('int8')} | "
                     f"{t('bf16')} | {t('torch-qint8')} | {t('ort-dynamic')} | "
                     f"{t('openvino-bf16')} | "
                     f"{ratio('float32')} | {ratio('torch-qint8')} | {ratio('ort-dynamic')} | "
                     f"{bf} | {bov} | {err('int8')} | {err('bf16')} | {err('torch-qint8')} | "
                     f"{err('ort-dynamic')} | {err('openvino-bf16')} |")
    notes = sorted({n for r in doc["results"] for n in r["notes"]})
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    for key, s in doc["summary"].items():
        lines.append(f"{key}: geomean {s['geomean']:.2f}x, min {s['min']:.2f}x "
                     f"({s['rows']} rows)")
    return "\n".join(lines)
