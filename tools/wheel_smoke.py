"""Smoke test of an installed fastrnn wheel (cibuildwheel's test-command, tools/build_wheel.sh).

Run it from outside the source tree, so that the installed package is the one imported:

    python tools/wheel_smoke.py                 # the kernel variant CPUID picks (or FASTRNN_ISA)
    FASTRNN_ISA=baseline python tools/wheel_smoke.py

Checks, each of which exits non-zero when it fails:

- `import fastrnn` loads the compiled extension from site-packages (not from a source tree);
- on x86-64 the extension carries every kernel variant (baseline, AVX2+FMA, AVX-512 and the
  int8 / bf16 ones), whatever this CPU runs;
- FASTRNN_ISA, when set, selected that variant;
- LSTM and GRU forward passes (float32 and float64, two layers, bidirectional, ragged lengths)
  match the plain-numpy reference tests/reference.py (found next to this script's folder, as
  cibuildwheel's test-sources copies it, or given with --reference), and the one-layer
  full-length case matches the package's own numpy peer (fastrnn.bench.numpy_peer);
- int8 and bf16 copies of the LSTM run and stay near the float32 output.

The line `digest ...`: hashes of every output, so that runs under different
kernel variants can be compared (AVX2 and AVX-512 give the same bits; baseline has no FMA).
Needs numpy only.
"""
import argparse
import hashlib
import importlib.util
import os
import platform
import sys

import numpy as np

# Symbols of every x86-64 kernel variant setup.py compiles (src/fastrnn/fastrnn.c dispatches
# among them from CPUID at run time).
X86_VARIANT_SYMBOLS = (
    "fr_dir_forward_f32_baseline", "fr_dir_forward_f32_avx2", "fr_dir_forward_f32_avx512",
    "fr_dir_forward_f64_baseline", "fr_dir_forward_f64_avx2", "fr_dir_forward_f64_avx512",
    "fr_step_layer_f32_baseline", "fr_step_layer_f32_avx2",
    "fr_qgemm_int8_baseline", "fr_qgemm_int8_avx2", "fr_qgemm_int8_avxvnni",
    "fr_qgemm_int8_avx512vnni",
    "fr_qgemm_bf16_baseline", "fr_qgemm_bf16_avx2", "fr_qgemm_bf16_avx512bf16",
)
TOL = {np.float32: 5e-5, np.float64: 1e-12}  # as tests/conftest.py
FAILURES = []


def check(ok, what):
    print(f"  {'ok  ' if ok else 'FAIL'} {what}")
    if not ok:
        FAILURES.append(what)


def load_reference(path):
    if path is None:
        here = os.path.dirname(os.path.abspath(__file__))
        path = os.path.join(here, os.pardir, "tests", "reference.py")
    if not os.path.isfile(path):
        return None
    spec = importlib.util.spec_from_file_location("fastrnn_smoke_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def extension_path(fastrnn):
    return fastrnn._core.__file__


def check_variants(fastrnn):
    so = extension_path(fastrnn)
    machine = platform.machine().lower()
    if machine not in ("x86_64", "amd64"):
        print(f"  --   {machine}: one kernel variant (baseline); no x86 variants to look for")
        return
    with open(so, "rb") as f:
        data = f.read()
    # ELF and PE name their symbols as written, Mach-O with a leading underscore.
    missing = [s for s in X86_VARIANT_SYMBOLS if s.encode() + b"\0" not in data]
    check(not missing, f"extension carries all {len(X86_VARIANT_SYMBOLS)} x86 kernel symbols"
          + (f" (missing: {', '.join(missing)})" if missing else ""))


def layers(fastrnn, dtype):
    lstm = fastrnn.LSTM(5, 12, num_layers=2, bidirectional=True, seed=1, dtype=dtype)
    gru = fastrnn.GRU(5, 12, num_layers=2, bidirectional=True, seed=2, dtype=dtype)
    return {"lstm": lstm, "gru": gru}


def run(fastrnn, ref, digests):
    rng = np.random.default_rng(0)
    B, T, I = 3, 9, 5
    lengths = np.array([9, 4, 1])
    mask = np.arange(T)[None, :] < lengths[:, None]
    x64 = rng.standard_normal((B, T, I))
    for dtype in (np.float32, np.float64):
        name = np.dtype(dtype).name
        x = x64.astype(dtype)
        for cell, layer in layers(fastrnn, dtype).items():
            out, state = layer(x, lengths=lengths)
            h = state[0] if cell == "lstm" else state
            check(out.dtype == dtype and out.shape == (B, T, 24) and np.isfinite(out).all(),
                  f"{cell} {name} forward: shape {out.shape}, finite")
            digests[f"{cell}-{name}"] = hashlib.sha256(out.tobytes() + h.tobytes()).hexdigest()
            if ref is None:
                continue
            params = {k: np.asarray(v, np.float64) for k, v in layer.state_dict().items()}
            rout, rstate = ref.rnn_forward(cell, params, x.astype(np.float64), hidden_size=12,
                                           num_layers=2, bidirectional=True, mask=mask)
            rh = rstate[0] if cell == "lstm" else rstate
            err = max(float(np.abs(out - rout).max()), float(np.abs(h - rh).max()))
            check(err <= TOL[dtype], f"{cell} {name} vs tests/reference.py: max error "
                  f"{err:.1e} (tolerance {TOL[dtype]:.0e})")
    # the package's own numpy peer: one layer, full-length sequences
    from fastrnn.bench.numpy_peer import NumpyRNN
    for cell, cls in (("lstm", fastrnn.LSTM), ("gru", fastrnn.GRU)):
        layer = cls(I, 16, seed=3, dtype="float64")
        x = rng.standard_normal((2, 7, I))
        out = layer(x)[0]
        want = NumpyRNN(cell, layer.state_dict(), dtype=np.float64)(x)
        err = float(np.abs(out - want).max())
        check(err <= 1e-12, f"{cell} float64 vs fastrnn.bench.numpy_peer: max error {err:.1e}")
    # reduced precision: int8 and bf16 weights (their own kernel variants)
    lstm = fastrnn.LSTM(I, 32, seed=4)
    x = rng.standard_normal((4, 11, I)).astype(np.float32)
    full = lstm(x, lengths=[11, 7, 3, 1])[0]
    for scheme in ("int8", "bf16"):
        out = lstm.quantize(scheme)(x, lengths=[11, 7, 3, 1])[0]
        err = float(np.abs(out - full).max())
        check(np.isfinite(out).all() and err < 5e-2,
              f"lstm {scheme}: max difference from float32 {err:.1e} (< 5e-2)")
        digests[f"lstm-{scheme}"] = hashlib.sha256(out.tobytes()).hexdigest()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", metavar="PATH",
                   help="tests/reference.py (default: ../tests/reference.py from this script)")
    p.add_argument("--require-reference", action="store_true",
                   help="fail when tests/reference.py is not found (default: skip that check)")
    args = p.parse_args(argv)

    import fastrnn
    from fastrnn import _core

    print(f"fastrnn {fastrnn.__version__} from {os.path.dirname(fastrnn.__file__)}")
    fastrnn.show_config()
    print("checks:")
    check("site-packages" in extension_path(fastrnn) or "dist-packages" in extension_path(fastrnn),
          f"extension imported from an installation: {extension_path(fastrnn)}")
    check_variants(fastrnn)
    wanted = os.environ.get("FASTRNN_ISA")
    isa = _core.get_isa()
    if wanted:
        check(isa == wanted, f"FASTRNN_ISA={wanted} selected kernel variant {isa}")
    ref = load_reference(args.reference)
    if ref is None:
        check(not args.require_reference, "tests/reference.py found")
        print("  --   tests/reference.py not found: reference comparison skipped")
    digests = {}
    run(fastrnn, ref, digests)
    print(f"kernels: isa={isa} int8={_core.int8_kernel_name()} bf16={_core.bf16_kernel_name()}")
    print("digest " + " ".join(f"{k}={v[:16]}" for k, v in sorted(digests.items())))
    if FAILURES:
        print(f"wheel smoke test FAILED ({len(FAILURES)}): " + "; ".join(FAILURES))
        return 1
    print(f"wheel smoke test passed (kernel variant {isa})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
