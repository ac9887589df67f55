"""A masked Keras 3 text model, stock vs fastrnn.keras.accelerate: same predictions, timings.

The model: Embedding(mask_zero=True) -> Bidirectional(LSTM, return_sequences) -> GRU ->
Dense, on a batch of ragged token sequences (zero-padded). `fastrnn.keras.accelerate` clones
it with fastrnn's LSTM / GRU layers and the same weights. The script prints the largest
difference between the two models' predictions and the median inference time of each.

    KERAS_BACKEND=torch python examples/keras_masked.py [--batch 32] [--steps 100] [--units 128]

Keras must run on the torch backend here (the only one installed next to fastrnn's tests);
inference with fastrnn.keras also works eagerly on the other backends.
"""
import argparse
import os
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402


def build_model(vocab, embed, units):
    import keras
    ids = keras.Input((None,), dtype="int32", name="ids")
    z = keras.layers.Embedding(vocab, embed, mask_zero=True)(ids)
    z = keras.layers.Bidirectional(keras.layers.LSTM(units, return_sequences=True))(z)
    z = keras.layers.GRU(units)(z)
    return keras.Model(ids, keras.layers.Dense(4)(z))


def ragged_batch(rng, batch, steps, vocab):
    """Token ids (batch, steps), zero-padded after a random length per row (1 .. steps)."""
    ids = rng.integers(1, vocab, (batch, steps))
    lengths = rng.integers(1, steps + 1, batch)
    ids[np.arange(steps)[None, :] >= lengths[:, None]] = 0
    return ids


def median_seconds(fn, repeats):
    fn()  # warm up (first call builds / packs)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=100, help="longest sequence")
    parser.add_argument("--units", type=int, default=128)
    parser.add_argument("--embed", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import keras
    import torch
    import fastrnn.keras

    keras.utils.set_random_seed(args.seed)
    stock = build_model(args.vocab, args.embed, args.units)
    fast = fastrnn.keras.accelerate(stock)
    ids = torch.tensor(ragged_batch(np.random.default_rng(args.seed), args.batch, args.steps,
                                    args.vocab))

    def run(model):
        with torch.no_grad():
            return model(ids, training=False)

    diff = float((run(stock) - run(fast)).abs().max())
    t_stock = median_seconds(lambda: run(stock), args.repeats)
    t_fast = median_seconds(lambda: run(fast), args.repeats)
    print(f"batch {args.batch}, up to {args.steps} steps, units {args.units}, "
          f"keras {keras.__version__} ({keras.backend.backend()} backend), "
          f"fastrnn threads {fastrnn.get_num_threads()}")
    print(f"max abs difference of the predictions: {diff:.3g}")
    print(f"stock Keras:        {t_stock * 1e3:9.2f} ms per batch (median of {args.repeats})")
    print(f"fastrnn.keras:      {t_fast * 1e3:9.2f} ms per batch (median of {args.repeats})")
    print(f"speed-up:           {t_stock / t_fast:9.1f} x")
    return diff


if __name__ == "__main__":
    main()
