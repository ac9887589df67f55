"""`fastrnn bench --suite dropin`: whole PyTorch and Keras models, stock against the same model
with its LSTM / GRU layers run by fastrnn (`fastrnn.torch.accelerate`,
`fastrnn.keras.accelerate`), in one process at the same thread count.

What the other suites time is one recurrent layer; here each call is what a user's model does:
the embedding or front end, the recurrent layers, the head, and for training the loss, the
backward pass and the optimizer step. Before anything is timed the two models are checked
against each other (inference: the outputs; training: the loss and every parameter after one
optimizer step from the same weights); a case that disagrees is reported FAILED and not timed.

ratio = stock time / accelerated time (above 1: the accelerated model is faster).
"""
import copy
import datetime
import importlib.metadata
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

import fastrnn
from fastrnn.bench.record import cpu_label
from fastrnn.bench.timing import format_seconds as _fmt, interleaved

SCHEMA = "fastrnn-bench-dropin/1"
COOLDOWN_S = 0.1   # after each timed block at > 1 thread (spinning pools; see runner.COOLDOWN_S)
# Relative to the largest |value| of the reference (float32 through whole models).
TOLERANCE = {"float32": 1e-3, "float64": 1e-9}


@dataclass(frozen=True)
class DropinCase:
    name: str
    framework: str      # torch | keras
    kind: str           # inference | training
    description: str
    target: float       # the target ratio (stock / accelerated)
    quick: bool = False


CASES = (
    DropinCase("stream-gru", "torch", "inference",
               "speech-like stream, B=1, 10-frame chunks, state carried: Linear(40,128)+ReLU "
               "-> GRU(128,128,layers=2) -> Linear(128,2)", 1.3, quick=True),
    DropinCase("stream-lstm", "torch", "inference",
               "speech-like stream, B=1, 10-frame chunks, state carried: Linear(80,256)+ReLU "
               "-> LSTM(256,256) -> Linear(256,2)", 1.3),
    DropinCase("text-bilstm", "torch", "inference",
               "text classifier, B=32, lengths 10..100 (packed): Embedding(10000,128) -> "
               "BiLSTM(128,256) -> Linear(512,4) on the final states", 1.3, quick=True),
    DropinCase("gru-train", "torch", "training",
               "training step, B=32, T=50: GRU(64,256) -> Linear(256,10) on the last output, "
               "cross-entropy, backward, SGD step", 1.5, quick=True),
    DropinCase("keras-text", "keras", "inference",
               "Keras (torch backend), B=32, lengths 1..100: Embedding(10000,128,mask_zero) -> "
               "Bidirectional(LSTM 256) -> GRU 256 -> Dense 4", 2.0, quick=True),
    DropinCase("keras-gru-train", "keras", "training",
               "Keras (torch backend) train_on_batch, B=32, T=50: GRU 256 -> Dense 10, "
               "cross-entropy, SGD", 2.0),
)


class Skip(Exception):
    """A case that cannot run here (a framework missing); the message says why."""


def _torch():
    try:
        import torch
    except ImportError:
        raise Skip("PyTorch is not installed (pip install fastrnn[torch])") from None
    import fastrnn.torch  # noqa: F401
    return torch


def _keras():
    if "keras" not in sys.modules:
        os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras
    except ImportError:
        raise Skip("Keras 3 is not installed (pip install fastrnn[keras])") from None
    if keras.backend.backend() != "torch":
        raise Skip(f"Keras runs on the {keras.backend.backend()} backend; this suite times the "
                   "torch backend (set KERAS_BACKEND=torch)")
    _torch()
    import fastrnn.keras  # noqa: F401
    return keras


def _numpy(value):
    if isinstance(value, (tuple, list)):
        return np.concatenate([_numpy(v).ravel() for v in value])
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, np.float64)


# ---- the models: each builder returns (stock_call, accelerated_call, check) ----------------
# check() -> (reference values, accelerated values), both flat float64 arrays, computed from
# the same weights and inputs before anything is timed.

def _torch_stream(cell, features, hidden, layers, dtype, seed=0):
    torch = _torch()
    import fastrnn.torch as ft
    torch.manual_seed(seed)
    rnn_cls = torch.nn.GRU if cell == "gru" else torch.nn.LSTM

    class Streamer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.front = torch.nn.Linear(features, hidden)
            self.rnn = rnn_cls(hidden, hidden, num_layers=layers, batch_first=True)
            self.head = torch.nn.Linear(hidden, 2)

        def forward(self, chunk, state):
            out, state = self.rnn(torch.relu(self.front(chunk)), state)
            return self.head(out), state

    stock = Streamer().to(dtype)
    fast = copy.deepcopy(stock)
    ft.accelerate(fast)
    g = torch.Generator().manual_seed(seed + 1)
    chunks = [torch.randn(1, 10, features, generator=g, dtype=dtype) for _ in range(16)]

    def streamer(model):
        state = {"h": None, "i": 0}

        def call():
            with torch.inference_mode():
                y, state["h"] = model(chunks[state["i"] % len(chunks)], state["h"])
            state["i"] += 1
            return y
        return call

    def check():
        ref, got = streamer(stock), streamer(fast)
        return (_numpy([ref() for _ in range(len(chunks))]),
                _numpy([got() for _ in range(len(chunks))]))
    return streamer(stock), streamer(fast), check


def _torch_text(dtype, seed=0):
    torch = _torch()
    import fastrnn.torch as ft
    from torch.nn.utils.rnn import pack_padded_sequence
    torch.manual_seed(seed)

    class Classifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(10000, 128)
            self.rnn = torch.nn.LSTM(128, 256, batch_first=True, bidirectional=True)
            self.head = torch.nn.Linear(512, 4)

        def forward(self, ids, lengths):
            packed = pack_padded_sequence(self.embed(ids), lengths, batch_first=True,
                                          enforce_sorted=False)
            _, (h, _) = self.rnn(packed)
            return self.head(torch.cat([h[0], h[1]], dim=1))

    stock = Classifier().to(dtype)
    fast = copy.deepcopy(stock)
    ft.accelerate(fast)
    rng = np.random.default_rng(seed)
    lengths = torch.tensor(rng.integers(10, 101, 32))
    ids = torch.tensor(rng.integers(1, 10000, (32, 100)))
    ids[torch.arange(100)[None, :] >= lengths[:, None]] = 0

    def caller(model):
        def call():
            with torch.inference_mode():
                return model(ids, lengths)
        return call
    return caller(stock), caller(fast), lambda: (_numpy(caller(stock)()),
                                                 _numpy(caller(fast)()))


def _torch_gru_train(dtype, seed=0):
    torch = _torch()
    import fastrnn.torch as ft
    torch.manual_seed(seed)

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.GRU(64, 256, batch_first=True)
            self.head = torch.nn.Linear(256, 10)

        def forward(self, x):
            out, _ = self.rnn(x)
            return self.head(out[:, -1])

    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(32, 50, 64, generator=g, dtype=dtype)
    y = torch.randint(0, 10, (32,), generator=g)

    def trainer(model):
        opt = torch.optim.SGD(model.parameters(), lr=0.05)

        def step():
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            return loss
        return model, step

    stock = Model().to(dtype)
    fast = copy.deepcopy(stock)
    ft.accelerate(fast)

    def check():
        # fresh copies: the timed models keep their own optimizer state
        (m1, s1), (m2, s2) = trainer(copy.deepcopy(stock)), trainer(copy.deepcopy(fast))
        l1, l2 = s1(), s2()
        return (_numpy([l1, *m1.parameters()]), _numpy([l2, *m2.parameters()]))
    return trainer(stock)[1], trainer(fast)[1], check


def _keras_text(dtype, seed=0):
    keras = _keras()
    torch = _torch()
    import fastrnn.keras as fk
    keras.utils.set_random_seed(seed)
    ids_in = keras.Input((None,), dtype="int32")
    z = keras.layers.Embedding(10000, 128, mask_zero=True, dtype=dtype)(ids_in)
    z = keras.layers.Bidirectional(keras.layers.LSTM(256, return_sequences=True,
                                                     dtype=dtype))(z)
    z = keras.layers.GRU(256, dtype=dtype)(z)
    stock = keras.Model(ids_in, keras.layers.Dense(4, dtype=dtype)(z))
    fast = fk.accelerate(stock)
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 101, 32)
    ids = rng.integers(1, 10000, (32, 100))
    ids[np.arange(100)[None, :] >= lengths[:, None]] = 0
    ids = torch.tensor(ids, dtype=torch.int32)

    def caller(model):
        def call():
            with torch.no_grad():
                return model(ids, training=False)
        return call
    return caller(stock), caller(fast), lambda: (_numpy(caller(stock)()),
                                                 _numpy(caller(fast)()))


def _keras_gru_train(dtype, seed=0):
    keras = _keras()
    import fastrnn.keras as fk
    keras.utils.set_random_seed(seed)
    x_in = keras.Input((50, 64), dtype=dtype)
    z = keras.layers.GRU(256, dtype=dtype)(x_in)
    template = keras.Model(x_in, keras.layers.Dense(10, dtype=dtype)(z))  # never compiled
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((32, 50, 64)).astype(dtype)
    y = rng.integers(0, 10, 32)

    def stock_model():
        model = keras.models.clone_model(template)
        for dst, src in zip(model.weights, template.weights):  # get_weights warns on torch
            dst.assign(src.value)
        return compiled(model)

    def compiled(model):
        model.compile(optimizer=keras.optimizers.SGD(0.05),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return model

    def check():
        m1, m2 = stock_model(), compiled(fk.accelerate(template))
        l1, l2 = m1.train_on_batch(x, y), m2.train_on_batch(x, y)
        return (_numpy([l1, *[w.value for w in m1.weights]]),
                _numpy([l2, *[w.value for w in m2.weights]]))
    stock, fast = stock_model(), compiled(fk.accelerate(template))
    return (lambda: stock.train_on_batch(x, y)), (lambda: fast.train_on_batch(x, y)), check


BUILDERS = {
    "stream-gru": lambda dtype: _torch_stream("gru", 40, 128, 2, dtype),
    "stream-lstm": lambda dtype: _torch_stream("lstm", 80, 256, 1, dtype),
    "text-bilstm": _torch_text,
    "gru-train": _torch_gru_train,
    "keras-text": _keras_text,
    "keras-gru-train": _keras_gru_train,
}


def _framework_dtype(case, dtype):
    if case.framework == "keras":
        return dtype
    torch = _torch()
    return {"float32": torch.float32, "float64": torch.float64}[dtype]


def _set_threads(n):
    fastrnn.set_num_threads(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)


def run_case(case, nthreads, *, dtype="float32", repeats=7, min_time=0.02, budget=None,
             builders=None):
    """Build, check and time one case at one thread count (threads already set)."""
    res = {"case": case.name, "framework": case.framework, "kind": case.kind,
           "description": case.description, "target": case.target, "threads": nthreads,
           "dtype": dtype, "stock": None, "fastrnn": None, "ratio": None,
           "max_rel_err": None, "note": ""}
    try:
        build = (builders or BUILDERS)[case.name]
        stock, fast, check = build(_framework_dtype(case, dtype))
        ref, got = check()
    except Skip as exc:
        res["note"] = f"skipped: {exc}"
        return res
    scale = max(1.0, float(np.max(np.abs(ref)))) if ref.size else 1.0
    err = float(np.max(np.abs(ref - got))) / scale if ref.shape == got.shape else np.inf
    res["max_rel_err"] = err
    if not err <= TOLERANCE[dtype]:
        res["note"] = (f"FAILED: the accelerated model differs from the stock one by {err:.3g} "
                       f"(relative) > {TOLERANCE[dtype]:g}; not timed")
        return res
    pause = COOLDOWN_S if nthreads > 1 else 0.0
    times = interleaved({"stock": stock, "fastrnn": fast}, repeats=repeats, warmup=2,
                        min_time=min_time, cooldown=pause, budget=budget)
    for name in ("stock", "fastrnn"):
        t = times[name]
        res[name] = {"median_s": float(np.median(t)), "min_s": float(t.min()),
                     "max_s": float(t.max())}
    res["repeats_done"] = len(times["fastrnn"])
    res["ratio"] = res["stock"]["median_s"] / res["fastrnn"]["median_s"]
    return res


def run_dropin(threads, *, dtype="float32", quick=False, repeats=7, min_time=0.02,
               budget=None, progress=None, cases=None, builders=None):
    """Every drop-in case (the quick ones with `quick`) at every thread count. Returns the
    JSON-ready result document. progress: a Progress bar (runner.Progress) or None."""
    from fastrnn.bench.runner import machine_info
    cases = [c for c in (cases or CASES) if c.quick or not quick]
    versions = {}
    for package in ("torch", "keras"):  # without importing: Keras picks its backend on import
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    results, t0 = [], time.perf_counter()
    before = fastrnn.get_num_threads()
    torch_before = sys.modules["torch"].get_num_threads() if "torch" in sys.modules else None
    try:
        for nt in threads:
            _set_threads(nt)
            for case in cases:
                if progress:
                    progress.update(f"dropin {case.name} threads={nt}")
                results.append(run_case(case, nt, dtype=dtype, repeats=repeats,
                                        min_time=min_time, budget=budget, builders=builders))
                _set_threads(nt)  # a builder importing torch starts it at its own default
                if progress:
                    progress.advance(f"dropin {case.name} threads={nt}")
    finally:
        fastrnn.set_num_threads(before)
        if "torch" in sys.modules and torch_before is not None:
            sys.modules["torch"].set_num_threads(torch_before)
    failures = [f"{r['case']} threads={r['threads']}: {r['note']}" for r in results
                if r["note"].startswith("FAILED")]
    timed = [r for r in results if r["ratio"]]
    summary = None
    if timed:
        ratios = np.array([r["ratio"] for r in timed])
        summary = {"geomean": float(np.exp(np.mean(np.log(ratios)))),
                   "min": float(ratios.min()),
                   "targets_met": sum(r["ratio"] >= r["target"] for r in timed),
                   "cases": len(timed)}
    return {"schema": SCHEMA,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine_info(), "versions": versions,
            "settings": {"suite": "dropin", "dtype": dtype, "threads": list(threads),
                         "quick": quick, "repeats": repeats, "min_time_s": min_time,
                         "budget_s_per_case": budget},
            "failures": failures, "results": results, "summary": summary,
            "elapsed_s": time.perf_counter() - t0}


def format_table(doc):
    m = doc["machine"]
    lines = [f"fastrnn {m['fastrnn']} drop-in models: {cpu_label(m)} (kernels {m['kernel_variant']}), {doc['settings']['dtype']}, torch "
             f"{doc['versions']['torch'] or '-'}, keras {doc['versions']['keras'] or '-'}",
             "ratio = stock time / accelerated time (above 1: fastrnn's layers are faster); "
             "median of the repeats, both models interleaved in one process, same threads",
             "", "| case | thr | stock | accelerated | ratio | target | rel. err |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in doc["results"]:
        if r["ratio"] is None:
            lines.append(f"| {r['case']} | {r['threads']} | - | - | - | {r['target']:.1f}x | "
                         f"{r['note']} |")
            continue
        met = "" if r["ratio"] >= r["target"] else " (below)"
        lines.append(f"| {r['case']} | {r['threads']} | {_fmt(r['stock']['median_s'])} | "
                     f"{_fmt(r['fastrnn']['median_s'])} | {r['ratio']:.2f}x | "
                     f"{r['target']:.1f}x{met} | {r['max_rel_err']:.0e} |")
    lines.append("")
    for c in CASES:
        lines.append(f"- {c.name} ({c.framework}, {c.kind}): {c.description}")
    s = doc["summary"]
    if s:
        lines.append(f"\ngeomean {s['geomean']:.2f}x, min {s['min']:.2f}x; targets met in "
                     f"{s['targets_met']} of {s['cases']} rows")
    return "\n".join(lines)
