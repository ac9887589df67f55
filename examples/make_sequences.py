"""Write a generated sequence data set and a model to score it with `fastrnn predict`.

    python examples/make_sequences.py data            # 20,000 rows in 4 Parquet files
    fastrnn predict data/model.npz data/sequences -o data/scores --id-column id

data/sequences/part-*.parquet hold two columns: "id" (strings, "seq-0000017") and "steps", a
list of per-step feature vectors (list<list<float32>>) of 1 to --max-length steps (lengths
spread log-uniformly, like sensor logs or transcripts: many short rows, a few long ones).
data/model.npz is a 2-layer LSTM (seeded: the same file each time) taking those features.
Needs pyarrow (pip install "fastrnn[predict]").
"""
import argparse
import os

import numpy as np


def sequence_table(rows, features, max_length, rng, first_id=0):
    """An Arrow table of `rows` random sequences: "id" and "steps" (list<list<float32>>)."""
    import pyarrow as pa
    lengths = np.exp(rng.uniform(0.0, np.log(max_length + 1), rows)).astype(np.int64)
    lengths = np.clip(lengths, 1, max_length)
    values = rng.standard_normal((int(lengths.sum()), features)).astype(np.float32)
    step_offsets = np.arange(0, values.size + 1, features, dtype=np.int32)
    steps = pa.ListArray.from_arrays(step_offsets, pa.array(values.reshape(-1)))
    row_offsets = np.zeros(rows + 1, np.int32)
    np.cumsum(lengths, out=row_offsets[1:])
    ids = pa.array([f"seq-{i:07d}" for i in range(first_id, first_id + rows)])
    return pa.table({"id": ids, "steps": pa.ListArray.from_arrays(row_offsets, steps)})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", help="where to write sequences/ and model.npz")
    parser.add_argument("--rows", type=int, default=20_000, help="rows in all (default 20000)")
    parser.add_argument("--files", type=int, default=4, help="Parquet files (default 4)")
    parser.add_argument("--features", type=int, default=16, help="features per step (16)")
    parser.add_argument("--hidden", type=int, default=64, help="LSTM hidden size (64)")
    parser.add_argument("--max-length", type=int, default=200, help="longest row (200)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    args = parser.parse_args(argv)

    import pyarrow.parquet as pq

    import fastrnn
    rng = np.random.default_rng(args.seed)
    out = os.path.join(args.directory, "sequences")
    os.makedirs(out, exist_ok=True)
    first = 0
    for i, rows in enumerate(np.array_split(np.arange(args.rows), args.files)):
        table = sequence_table(len(rows), args.features, args.max_length, rng, first)
        pq.write_table(table, os.path.join(out, f"part-{i:03d}.parquet"), row_group_size=4096)
        first += len(rows)
    model = fastrnn.LSTM(args.features, args.hidden, num_layers=2, seed=args.seed)
    fastrnn.save(model, os.path.join(args.directory, "model.npz"))
    print(f"wrote {args.rows} rows in {args.files} files to {out} and "
          f"{os.path.join(args.directory, 'model.npz')}: {model!r}")


if __name__ == "__main__":
    main()
