"""The portability check of tools/cross_test.sh: models and inputs written here, by Python,
with the results fastrnn gives here; C programs built for another architecture run them and
their outputs are compared with these.

    python tools/cross_fixtures.py write DIR
    python tools/cross_fixtures.py compare DIR OUTDIR ARCH [NAME,NAME...]
    python tools/cross_fixtures.py names DIR KIND   (float32-stream: what a minimal build runs)

`write`: .frnn files (little-endian, docs/frnn-format.md), raw inputs and this machine's
outputs. `compare`: OUTDIR holds what the other architecture wrote; exits 1 unless every
output is bitwise equal to this machine's where docs/api.md ("Determinism") says it is, and
within EXPECTED_CLOSE elsewhere.

For each case NAME: NAME.frnn, NAME.x (T, input_size) raw samples in the model's dtype and
NAME.y (T, units), what `layer(x[None])` returns here. examples/c/stream.c built for another
architecture reads NAME.frnn and NAME.x and writes its own NAME.y; cross_test.sh compares the
two (docs/api.md, "Determinism", says which cases must match bit for bit). Batched, masked
cases for tests/c/frnn_forward_driver.c: NAME.frnn, NAME.x (B, T, I), NAME.len (int32, B) and
NAME.y/.h[/.c] (what the driver writes). Raw inputs also come big-endian (NAME.xbe,
NAME.lenbe) for big-endian hosts. MANIFEST lists every case and how to run it."""
import os
import sys

import numpy as np

import fastrnn
from fastrnn.io.frnn import save_frnn

T = 64


def _layer(cls, I, H, dtype="float32", seed=0, **kw):
    layer = cls(I, H, dtype=dtype, seed=seed, **kw)
    rng = np.random.default_rng(seed + 1)
    # wider than the default init, so every nonlinearity leaves its linear range
    layer.load_state_dict({k: rng.uniform(-0.7, 0.7, v.shape).astype(v.dtype)
                           for k, v in layer.state_dict().items()})
    return layer


def stream_cases():
    L, G = fastrnn.LSTM, fastrnn.GRU
    yield "lstm", _layer(L, 3, 20)
    yield "lstm_h64", _layer(L, 8, 64, seed=2)
    yield "gru_after", _layer(G, 3, 20, reset_after=True)
    yield "gru_before_h33", _layer(G, 1, 33, reset_after=False)
    yield "lstm_stacked", _layer(L, 4, 24, num_layers=3)
    yield "lstm_peephole_clip", _layer(L, 3, 16, peepholes=True, cell_clip=0.8)
    yield "lstm_projection", _layer(L, 5, 32, proj_size=12, proj_clip=0.5)
    yield "lstm_float64", _layer(L, 3, 20, dtype="float64")
    yield "gru_float64", _layer(G, 2, 9, dtype="float64")
    yield "lstm_int8", _layer(L, 6, 48, seed=3).quantize("int8")
    yield "gru_int8", _layer(G, 6, 40, seed=4).quantize("int8")
    yield "lstm_bf16", _layer(L, 6, 32, seed=5).quantize("bf16")
    # inputs in the denormal range (see main): every kernel flushes denormals to zero on x86
    # (MXCSR) and ARM (FPCR/FPSCR.FZ), not on RISC-V, which has no such mode
    yield "lstm_denormal", _layer(L, 3, 8, seed=6, use_bias=False)


def forward_cases():
    L, G = fastrnn.LSTM, fastrnn.GRU
    yield "fwd_lstm_bidi", _layer(L, 3, 17, num_layers=2, bidirectional=True)
    yield "fwd_gru_carry", _layer(G, 4, 21, bidirectional=True, masked_output="carry")
    yield "fwd_lstm_float64", _layer(L, 2, 11, dtype="float64", reverse=True)


def _raw(a, path):
    """Raw samples for the C programs, which read them in host byte order: little-endian at
    `path`, big-endian at `path + "be"` (for big-endian hosts; the .frnn file is the same)."""
    a.astype(a.dtype.newbyteorder("<")).tofile(path)
    a.astype(a.dtype.newbyteorder(">")).tofile(path + "be")


# Big-endian architectures the check knows: their C programs write host-order outputs.
BIG_ENDIAN = {"s390x"}


def _np_dtype(layer):
    return np.float64 if str(layer.dtype) == "float64" else np.float32


def main(out):
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(7)
    manifest = []
    for name, layer in stream_cases():
        dt = _np_dtype(layer)
        x = rng.uniform(-2, 2, (T, layer.input_size)).astype(dt)
        if name == "lstm_denormal":
            x = (x * 1e-39).astype(dt)  # float32 denormals: products, h and c stay denormal
        y, _ = layer(x[None])
        save_frnn(layer, os.path.join(out, name + ".frnn"))
        _raw(x, os.path.join(out, name + ".x"))
        np.ascontiguousarray(y[0], dtype=dt).tofile(os.path.join(out, name + ".y"))
        manifest.append(f"stream {name}")
    for name, layer in forward_cases():
        dt = _np_dtype(layer)
        B = 5
        x = rng.uniform(-2, 2, (B, T, layer.input_size)).astype(dt)
        lengths = np.array([T, 1, T // 2, T - 3, 7], dtype=np.int32)
        y, state = layer(x, lengths=lengths)
        save_frnn(layer, os.path.join(out, name + ".frnn"))
        _raw(x, os.path.join(out, name + ".x"))
        _raw(lengths, os.path.join(out, name + ".len"))
        np.ascontiguousarray(y, dtype=dt).tofile(os.path.join(out, name + ".y"))
        hs = state if not isinstance(state, tuple) else state[0]
        np.ascontiguousarray(hs, dtype=dt).tofile(os.path.join(out, name + ".h"))
        if isinstance(state, tuple):
            np.ascontiguousarray(state[1], dtype=dt).tofile(os.path.join(out, name + ".c"))
        manifest.append(f"forward {name} {B} {T}")
    with open(os.path.join(out, "MANIFEST"), "w") as f:
        f.write("\n".join(manifest) + "\n")


# Where another architecture may differ from x86 (AVX2 / AVX-512 kernels), and by how much:
# (arch, case name pattern) -> max abs difference. Everything else must be bitwise equal.
EXPECTED_CLOSE = {
    # armv7's glibc computes tanh / exp (float64 activations) with other rounding than x86-64's
    ("armv7", "float64"): 1e-14,
    # RISC-V and s390x have no flush-to-zero mode: denormals are computed, not flushed as on x86
    # and ARM
    ("riscv64", "denormal"): 1e-37,
    ("s390x", "denormal"): 1e-37,
}


def _manifest(d):
    return [line.split() for line in open(os.path.join(d, "MANIFEST")) if line.strip()]


def float32_stream_names(d):
    """Cases a float32, stream-only build runs (src/Makefile STREAM_ONLY=1 FLOAT64=0)."""
    return [name for kind, name, *_ in _manifest(d)
            if kind == "stream" and not any(w in name for w in ("float64", "int8", "bf16"))]


def compare(d, out, arch, only=None):
    bad = 0
    for kind, name, *_ in _manifest(d):
        if only is not None and name not in only:
            continue
        dt = np.float64 if "float64" in name else np.float32
        tol = max([v for (a, pat), v in EXPECTED_CLOSE.items() if a == arch and pat in name],
                  default=None)
        exts = ["y"] if kind == "stream" else ["y", "h"] + (["c"] if "lstm" in name else [])
        words = []
        for ext in exts:
            mine = np.fromfile(os.path.join(d, f"{name}.{ext}"), dt)
            path = os.path.join(out, f"{name}.{ext}")
            order = ">" if arch in BIG_ENDIAN else "<"
            theirs = (np.fromfile(path, np.dtype(dt).newbyteorder(order)).astype(dt)
                      if os.path.exists(path) else None)
            if theirs is None or theirs.shape != mine.shape:
                words.append(f"{ext}: missing or wrong size")
                bad += 1
                continue
            if mine.tobytes() == theirs.tobytes():
                words.append(f"{ext}: bitwise")
                continue
            diff = float(np.max(np.abs(mine.astype(np.float64) - theirs)))
            ok = tol is not None and diff <= tol
            bad += not ok
            words.append(f"{ext}: max diff {diff:.2e} ({'within' if ok else 'OVER'} "
                         f"{'tolerance ' + format(tol, '.0e') if tol else 'bitwise promise'})")
        print(f"  {arch:8s} {name:22s} " + ", ".join(words))
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "write":
        main(sys.argv[2])
    elif len(sys.argv) in (5, 6) and sys.argv[1] == "compare":
        only = sys.argv[5].split(",") if len(sys.argv) == 6 else None
        sys.exit(compare(*sys.argv[2:5], only=only))
    elif len(sys.argv) == 4 and sys.argv[1] == "names" and sys.argv[3] == "float32-stream":
        print(",".join(float32_stream_names(sys.argv[2])))
    else:
        sys.exit(__doc__)
