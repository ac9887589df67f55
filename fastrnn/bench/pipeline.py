"""`fastrnn bench --suite pipeline`: fastrnn inside a pipeline, right after another runtime's op
in the same process, as a speech or voice-activity model runs a front end in ONNX Runtime or
PyTorch and its recurrent part in fastrnn.

The other layer suites pause between implementations (their thread pools may keep spinning
after a call); this one measures exactly what they hide. For each case and thread count:

- fastrnn alone: back-to-back calls at this thread count, and at one thread;
- fastrnn right after each neighbour's op (a MatMul + Relu front end of the case's input
  size, on the same thread count): ONNX Runtime with its default session options (its
  intra-op pool spins after a run) and with `session.intra_op.allow_spinning = 0`, OpenVINO,
  PyTorch, numpy (its BLAS);
- each neighbour alone and right after a fastrnn call.

Each sample is one neighbour call (untimed) then one fastrnn call (timed), so every fastrnn
time is what a pipeline step gets; medians of the samples, ratios of medians, blocks of
different neighbours separated by a pause. Neighbours are optional and skipped with a note.
Each block starts with fastrnn's busy-core memory cleared (`fastrnn.reset_contention`) and
reports how many of its fastrnn calls ran on fewer threads because earlier calls of the block
had lost a thread to a busy core.
"""
import datetime
import importlib.metadata
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

import fastrnn
from fastrnn.bench.record import cpu_label

SCHEMA = "fastrnn-bench-pipeline/1"
SETTLE_S = 0.3     # pause between blocks: a neighbour's spinning pool goes quiet before the next
# The targets of the issue that asked for this suite (README, "Running next to other runtimes").
TARGET_VS_ONE_THREAD = 1.1   # fastrnn at N threads after any neighbour <= 1.1x its 1-thread time
TARGET_VS_ALONE = 1.2        # ... after a non-spinning neighbour <= 1.2x its N-thread time alone


@dataclass(frozen=True)
class PipelineCase:
    cell: str
    B: int
    T: int
    I: int
    H: int
    quick: bool = False

    @property
    def name(self):
        return f"{self.cell} B={self.B} T={self.T} I={self.I} H={self.H}"


CASES = (
    PipelineCase("lstm", 8, 100, 128, 128, quick=True),  # the shape the issue measured
    PipelineCase("lstm", 1, 100, 64, 64),                # embedded: one stream
    PipelineCase("gru", 2, 150, 512, 512),               # server: weights beyond L2
)


def _front_end_onnx(I):
    """MatMul (I x I) + Relu as an ONNX model (bytes), the neighbours' op."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = (np.random.default_rng(3).standard_normal((I, I)) / np.sqrt(I)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Relu", ["m"], ["y"])],
        "front_end",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, I])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, I])],
        [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString(), w


def neighbours(case, nthreads):
    """{name: (callable or None, note)}: each neighbour's front-end op on a (B*T, I) input."""
    x = np.random.default_rng(4).standard_normal((case.B * case.T, case.I)).astype(np.float32)
    out = {}
    try:
        model, w = _front_end_onnx(case.I)
    except ImportError:
        model, w = None, np.random.default_rng(3).standard_normal((case.I, case.I)).astype(
            np.float32)
    try:
        import onnxruntime as ort
        if model is None:
            raise ImportError("onnx")
        for label, spin in (("onnxruntime", None), ("onnxruntime (no spinning)", "0")):
            so = ort.SessionOptions()
            so.intra_op_num_threads = nthreads
            so.inter_op_num_threads = 1
            if spin is not None:
                so.add_session_config_entry("session.intra_op.allow_spinning", spin)
            sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
            out[label] = ((lambda s=sess: s.run(None, {"x": x})), "")
    except ImportError as exc:
        out["onnxruntime"] = (None, f"skipped: {exc.name} is not installed")
    try:
        import openvino as ov
        if model is None:
            raise ImportError("onnx")
        core = ov.Core()
        compiled = core.compile_model(core.read_model(model=model, weights=b""), "CPU", {
            "INFERENCE_NUM_THREADS": nthreads, "INFERENCE_PRECISION_HINT": "f32",
            "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1})
        request = compiled.create_infer_request()
        out["openvino"] = ((lambda: request.infer({0: x}, share_inputs=True)), "")
    except ImportError as exc:
        out["openvino"] = (None, f"skipped: {exc.name} is not installed")
    try:
        import torch
        xt, wt = torch.from_numpy(x), torch.from_numpy(w)

        def torch_front_end():
            with torch.no_grad():
                return torch.relu(xt @ wt)
        out["torch"] = (torch_front_end, "")
    except ImportError:
        out["torch"] = (None, "skipped: torch is not installed")
    out["numpy (BLAS)"] = ((lambda: np.maximum(x @ w, 0.0)), "")
    return out


class _Threads:
    """fastrnn, torch and the BLAS held at `n` threads for a block (restored after)."""

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        self.fr = fastrnn.get_num_threads()
        fastrnn.set_num_threads(self.n)
        self.torch = None
        if "torch" in sys.modules:
            import torch
            self.torch = torch.get_num_threads()
            torch.set_num_threads(self.n)
        self.pool = None
        try:
            from threadpoolctl import threadpool_limits
            self.pool = threadpool_limits(limits=self.n, user_api="blas")
        except ImportError:
            pass
        return self

    def __exit__(self, *exc):
        fastrnn.set_num_threads(self.fr)
        if self.torch is not None:
            import torch
            torch.set_num_threads(self.torch)
        if self.pool is not None:
            self.pool.restore_original_limits()


def _median(samples):
    return float(np.median(samples)) if samples else None


def _pairs(first, second, samples, budget):
    """Times of `second` right after an untimed `first`, `samples` times (fewer past budget)."""
    out, start = [], time.perf_counter()
    for i in range(samples):
        if i >= 5 and time.perf_counter() - start > budget:
            break
        first()
        t0 = time.perf_counter()
        second()
        out.append(time.perf_counter() - t0)
    return out


def run_case(case, nthreads, *, samples=31, budget=5.0):
    """One case at one thread count; a dict of medians (seconds) and ratios."""
    cls = fastrnn.LSTM if case.cell == "lstm" else fastrnn.GRU
    layer = cls(case.I, case.H, seed=0)
    layer.freeze()
    x = np.random.default_rng(5).standard_normal((case.B, case.T, case.I)).astype(np.float32)

    def rnn():
        return layer(x)
    res = {"case": case.name, "threads": nthreads, "neighbours": {}}
    with _Threads(1):
        rnn()
        res["fastrnn_1t"] = _median(_pairs(rnn, rnn, samples, budget))
    time.sleep(SETTLE_S)
    with _Threads(nthreads):
        rnn()
        fastrnn.reset_contention()
        res["fastrnn_alone"] = _median(_pairs(rnn, rnn, samples, budget))
        busy = fastrnn.get_contention()
        res["fastrnn_alone_capped"] = busy["capped"]
        # threads the call actually runs on (fewer when a step has too little work for them)
        res["threads_used"] = busy["last_threads"] if busy["capped"] == 0 else None
        for name, (front, note) in neighbours(case, nthreads).items():
            if front is None:
                res["neighbours"][name] = {"note": note}
                continue
            time.sleep(SETTLE_S)
            front()
            alone = _median(_pairs(front, front, samples, budget))
            fastrnn.reset_contention()
            after_rnn = _median(_pairs(rnn, front, samples, budget))
            fastrnn.reset_contention()
            rnn_after_samples = _pairs(front, rnn, samples, budget)
            rnn_after = _median(rnn_after_samples)
            res["neighbours"][name] = {
                "neighbour_alone": alone, "neighbour_after_fastrnn": after_rnn,
                "fastrnn_after": rnn_after,
                # calls that ran on fewer threads (fastrnn.get_contention) of those timed
                "fastrnn_after_capped": fastrnn.get_contention()["capped"],
                "fastrnn_after_calls": len(rnn_after_samples),
                "vs_alone": rnn_after / res["fastrnn_alone"],
                "vs_one_thread": rnn_after / res["fastrnn_1t"],
                "neighbour_slowdown": after_rnn / alone,
                # only this neighbour is told not to spin; the target "vs alone" is for it
                "spinning": name != "onnxruntime (no spinning)",
            }
        time.sleep(SETTLE_S)
    return res


def _versions():
    out = {}
    for package in ("onnxruntime", "openvino", "torch", "numpy"):
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[package] = None
    return out


def run_pipeline(threads, *, quick=False, repeats=7, min_time=None, budget=5.0, progress=None):
    """The suite's document (`fastrnn bench --suite pipeline`). `repeats` scales the samples
    per measurement (repeats * 4 + 3: 31 at the default 7); `min_time` is not used (each
    sample is one call, as in a pipeline)."""
    del min_time
    from fastrnn.bench.runner import machine_info
    machine = machine_info()
    samples = max(7, 4 * repeats + 3)
    results = []
    for case in (c for c in CASES if c.quick or not quick):
        for n in threads:
            if progress:
                progress.update(f"pipeline {case.name} threads={n}")
            results.append(run_case(case, n, samples=samples, budget=budget))
            if progress:
                progress.advance()
    return {"schema": SCHEMA, "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "machine": machine, "cpu": cpu_label(machine), "versions": _versions(),
            "settings": {"suite": "pipeline", "threads": list(threads), "quick": quick,
                         "samples": samples, "OMP_WAIT_POLICY":
                         os.environ.get("OMP_WAIT_POLICY", "unset")},
            "results": results, "failures": [], "summary": summarize(results)}


def summarize(results):
    """The targets' status per row: fastrnn at > 1 thread after any neighbour vs its 1-thread
    time alone, and after non-spinning neighbours vs its time alone. Rows whose calls run on
    one thread whatever the count (too little work per step to split) are not counted."""
    rows = []
    for r in results:
        if r["threads"] < 2 or r.get("threads_used") == 1:
            continue
        for name, n in r["neighbours"].items():
            if "fastrnn_after" not in n:
                continue
            rows.append({"case": r["case"], "threads": r["threads"], "neighbour": name,
                         "vs_one_thread": n["vs_one_thread"], "vs_alone": n["vs_alone"],
                         "meets_one_thread": n["vs_one_thread"] <= TARGET_VS_ONE_THREAD,
                         "meets_alone": n["spinning"] or n["vs_alone"] <= TARGET_VS_ALONE})
    return rows


def _ms(s):
    return "-" if s is None else f"{s * 1e3:.3g} ms"


def format_table(doc):
    lines = [f"## fastrnn after another runtime's op ({doc['cpu']}; OMP_WAIT_POLICY="
             f"{doc['settings']['OMP_WAIT_POLICY']})", "",
             "| case | threads | neighbour | fastrnn after it | vs fastrnn alone | "
             "vs fastrnn 1 thread | neighbour alone | neighbour after fastrnn | "
             "fastrnn calls on fewer threads |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in doc["results"]:
        capped = r.get("fastrnn_alone_capped")
        used = r.get("threads_used")
        threads = (f"{r['threads']} ({used} used)" if used and used < r["threads"]
                   else r["threads"])
        lines.append(f"| {r['case']} | {threads} | (alone) | {_ms(r['fastrnn_alone'])} | "
                     f"1.00x | {r['fastrnn_alone'] / r['fastrnn_1t']:.2f}x | - | - | "
                     f"{'-' if capped is None or r['threads'] == 1 else capped} |")
        for name, n in r["neighbours"].items():
            if "fastrnn_after" not in n:
                lines.append(f"| {r['case']} | {threads} | {name} | {n['note']} "
                             f"| | | | | |")
                continue
            fewer = ("-" if r["threads"] == 1 or "fastrnn_after_capped" not in n else
                     f"{n['fastrnn_after_capped']} of {n['fastrnn_after_calls']}")
            lines.append(
                f"| {r['case']} | {threads} | {name} | {_ms(n['fastrnn_after'])} | "
                f"{n['vs_alone']:.2f}x | {n['vs_one_thread']:.2f}x | "
                f"{_ms(n['neighbour_alone'])} | {_ms(n['neighbour_after_fastrnn'])} "
                f"({n['neighbour_slowdown']:.2f}x) | {fewer} |")
    lines += ["", f"Targets at more than one thread: fastrnn after any neighbour <= "
              f"{TARGET_VS_ONE_THREAD}x its 1-thread time alone; after a non-spinning "
              f"neighbour <= {TARGET_VS_ALONE}x its time alone."]
    rows = doc["summary"]
    if rows:
        met1 = sum(r["meets_one_thread"] for r in rows)
        met2 = sum(r["meets_alone"] for r in rows)
        lines.append(f"Met: {met1} of {len(rows)} rows (vs 1 thread), {met2} of {len(rows)} "
                     f"(vs alone, non-spinning neighbours).")
    return "\n".join(lines)
