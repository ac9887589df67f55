"""`fastrnn demo`: build an LSTM and a GRU, check them against plain numpy (and PyTorch when it is
installed) and print the time per sequence side by side. Until the full benchmark suite lands
this is the package's main job."""
import argparse
import os

import numpy as np

import fastrnn
from fastrnn.bench.numpy_peer import NumpyRNN
from fastrnn.bench.timing import interleaved, lstm_gru_flops

DEFAULT_SHAPES = [(1, 100, 64, 64), (8, 100, 128, 128), (64, 50, 512, 512)]
QUICK_SHAPES = [(1, 100, 64, 64), (8, 100, 128, 128), (32, 50, 256, 256)]


def _torch_peer(cell, layer, nthreads):
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(nthreads)
    H, I = layer.hidden_size, layer.input_size
    mod = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(I, H, batch_first=True)
    sd = layer.state_dict()
    # fastrnn gate names -> torch row blocks (torch order: LSTM i,f,g,o; GRU r,z,n).
    order = ("input", "forget", "cell", "output") if cell == "lstm" else ("reset", "update", "candidate")
    with torch.no_grad():
        mod.weight_ih_l0.copy_(torch.from_numpy(np.concatenate(
            [sd[f"layer0.forward.{g}.kernel"].T for g in order])))
        mod.weight_hh_l0.copy_(torch.from_numpy(np.concatenate(
            [sd[f"layer0.forward.{g}.recurrent"].T for g in order])))
        mod.bias_ih_l0.copy_(torch.from_numpy(np.concatenate(
            [sd[f"layer0.forward.{g}.bias"] for g in order])))
        rb = [sd.get(f"layer0.forward.{g}.recurrent_bias", np.zeros(H, np.float32)) for g in order]
        mod.bias_hh_l0.copy_(torch.from_numpy(np.concatenate(rb)))

    def run(x):
        with torch.inference_mode():
            return mod(x)[0].numpy()

    return run, torch.from_numpy


def _limit_blas(nthreads):
    """numpy's BLAS gets the same thread count as everyone else (and its idle threads do not
    spin on the cores the next peer needs)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        print("note: threadpoolctl not installed; numpy's BLAS threads are not limited")
        return None
    return threadpool_limits(limits=nthreads)


def run(shapes, threads, repeats, cells=("lstm", "gru")):
    rng = np.random.default_rng(0)
    print(f"fastrnn {fastrnn.__version__} demo; float32, batch-first, median of {repeats} "
          f"interleaved repeats; time per sequence = call time / batch")
    fastrnn.show_config()
    print()
    header = (f"| cell | threads | (B, T, I, H) | fastrnn ms/seq | GFLOP/s | numpy ms/seq | "
              f"vs numpy | torch ms/seq | vs torch | max abs diff |")
    print(header)
    print("|" + "|".join(["---"] * 10) + "|")
    for nt in threads:
        fastrnn.set_num_threads(nt)
        _limit_blas(nt)
        for cell in cells:
            for B, T, I, H in shapes:
                layer = (fastrnn.LSTM if cell == "lstm" else fastrnn.GRU)(I, H, seed=0,
                                                                          init="torch")
                x = rng.normal(size=(B, T, I)).astype(np.float32)
                ref = NumpyRNN(cell, layer.state_dict())
                funcs = {"fastrnn": lambda: layer(x), "numpy": lambda: ref(x)}
                diff = np.abs(layer(x)[0] - ref(x)).max()
                torch_peer = _torch_peer(cell, layer, nt)
                if torch_peer is not None:
                    trun, to_t = torch_peer
                    xt = to_t(x)
                    funcs["torch"] = lambda: trun(xt)
                    diff = max(diff, np.abs(layer(x)[0] - trun(xt)).max())
                t = {k: np.median(v) for k, v in interleaved(funcs, repeats=repeats,
                                                             min_time=0.02,
                                                             cooldown=0.2 if nt > 1 else 0.0).items()}
                gf = lstm_gru_flops(cell, B, T, I, H) / t["fastrnn"] / 1e9
                tt = (f"{t['torch'] / B * 1e3:.4f} | {t['torch'] / t['fastrnn']:.2f}x"
                      if "torch" in t else "n/a | n/a")
                print(f"| {cell} | {nt} | {(B, T, I, H)} | {t['fastrnn'] / B * 1e3:.4f} | "
                      f"{gf:.1f} | {t['numpy'] / B * 1e3:.4f} | "
                      f"{t['numpy'] / t['fastrnn']:.2f}x | {tt} | {diff:.1e} |", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(prog="fastrnn demo", description=__doc__)
    p.add_argument("--quick", action="store_true", help="smaller shapes, fewer repeats")
    p.add_argument("--threads", type=int, nargs="+", default=None,
                   help="thread counts to run (default: 1 and the machine's cores)")
    p.add_argument("--repeats", type=int, default=None)
    args = p.parse_args(argv)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = args.threads or sorted({1, max(1, min(cores or 1, fastrnn.get_num_threads()))})
    shapes = QUICK_SHAPES if args.quick else DEFAULT_SHAPES
    repeats = args.repeats or (5 if args.quick else 9)
    run(shapes, threads, repeats)
