#!/usr/bin/env python3
"""Mutation fuzzer for every weight loader behind `fastrnn.load`.

Seeds: the framework-written fixture files in tests/fixtures (torch .pt/.safetensors, Keras
.keras/.h5, ONNX, TF1 checkpoint index) plus fastrnn's own .npz and .frnn files made on the spot.
Each iteration mutates one seed (byte flips, truncation, a run of random bytes, a duplicated or
deleted block, a 4-byte field set to an extreme value) and loads the result. Allowed outcomes:
a layer, or ValueError / ImportError with a message. Anything else (another exception, a
crash of the interpreter, a hang past the per-file limit) is a finding: the input is saved
under --out and the run exits with status 1.

    python tools/fuzz_loaders.py --seconds 300          # a longer run
    python tools/fuzz_loaders.py --iterations 200       # a bounded one
"""
import argparse
import os
import random
import sys
import tempfile
import time
import traceback

import numpy as np

import fastrnn

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "tests", "fixtures")
SEED_SUFFIXES = (".pt", ".safetensors", ".keras", ".h5", ".onnx", ".index")


def seeds(tmp):
    out = {}
    for name in sorted(os.listdir(FIXTURES)):
        if name.endswith(SEED_SUFFIXES):
            with open(os.path.join(FIXTURES, name), "rb") as f:
                out[name] = f.read()
    layer = fastrnn.LSTM(3, 4, num_layers=2, bidirectional=True, seed=0)
    for fmt in ("npz", "frnn"):
        path = os.path.join(tmp, f"own.{fmt}")
        layer.save(path, format=fmt)
        with open(path, "rb") as f:
            out[f"own.{fmt}"] = f.read()
    return out


def mutate(rng, data):
    b = bytearray(data)
    kind = rng.randrange(6)
    if kind == 0 or len(b) < 8:
        for _ in range(rng.randint(1, 8)):
            if b:
                b[rng.randrange(len(b))] = rng.randrange(256)
    elif kind == 1:
        del b[rng.randrange(len(b)):]
    elif kind == 2:
        pos = rng.randrange(len(b))
        b[pos:pos + 16] = bytes(rng.randrange(256) for _ in range(16))
    elif kind == 3:
        pos, n = rng.randrange(len(b)), rng.randint(1, 64)
        b[pos:pos] = b[pos:pos + n]
    elif kind == 4:
        pos, n = rng.randrange(len(b)), rng.randint(1, 64)
        del b[pos:pos + n]
    else:
        pos = rng.randrange(max(1, len(b) - 4))
        b[pos:pos + 4] = rng.choice([b"\xff\xff\xff\x7f", b"\xff\xff\xff\xff", b"\x00\x00\x00\x80",
                                     b"\x00\x00\x00\x00"])
    return bytes(b)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--iterations", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="fuzz-findings")
    args = p.parse_args(argv)
    os.environ.setdefault("FASTRNN_HDF5_TIMEOUT", "20")
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = seeds(tmp)
        names = sorted(corpus)
        stats = {n: [0, 0, 0] for n in names}  # iterations, loaded, rejected
        findings = 0
        start = time.monotonic()
        it = 0
        # A TF checkpoint is an index plus its data file, found by name: keep that pairing.
        data_file = os.path.join(FIXTURES, "tf1_cells.ckpt.data-00000-of-00001")
        with open(data_file, "rb") as f, \
                open(os.path.join(tmp, "ckpt.data-00000-of-00001"), "wb") as g:
            g.write(f.read())
        while (args.iterations is None and time.monotonic() - start < args.seconds) or \
                (args.iterations is not None and it < args.iterations):
            name = names[it % len(names)]
            data = mutate(rng, corpus[name])
            target = os.path.join(tmp, "ckpt.index" if name.endswith(".index") else "input")
            with open(target, "wb") as f:
                f.write(data)
            stats[name][0] += 1
            try:
                fastrnn.load(target)
                stats[name][1] += 1
            except (ValueError, ImportError):
                stats[name][2] += 1
            except Exception:  # noqa: BLE001 - every other exception is a finding
                findings += 1
                os.makedirs(args.out, exist_ok=True)
                path = os.path.join(args.out, f"{name}.{it}")
                with open(path, "wb") as f:
                    f.write(data)
                print(f"FINDING {path}:\n{traceback.format_exc()}", file=sys.stderr)
            it += 1
        elapsed = time.monotonic() - start
    print(f"{it} inputs in {elapsed:.0f} s, {findings} findings")
    for n in names:
        total, ok, rejected = stats[n]
        print(f"  {n:45s} {total:6d} inputs  {ok:5d} loaded  {rejected:5d} rejected")
    return 1 if findings else 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
