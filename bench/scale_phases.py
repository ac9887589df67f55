"""Where the time of bench/scale.py goes on a small machine: the 2-process ceiling of the
scoring itself, the local pipeline's read / score / write split, and the CPU the driver of the
ray and dask engines spends. (The fixed cost of a Ray Data or Dask DataFrame job is
bench/scale.py's "small job" column.)

    python bench/scale_phases.py                 # 60,000 rows, about a minute on 2 cores
    python bench/scale_phases.py --only ceiling,local

Same data and model as bench/scale.py (examples/make_sequences.py).
"""
import argparse
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import scale  # noqa: E402


def _score_all(model_path, files, chunk_rows, repeat, start, out):
    """Score every chunk `repeat` times in this process (1 fastrnn thread): wall seconds."""
    import fastrnn
    from fastrnn import predict as P
    fastrnn.set_num_threads(1)
    model = P.cached_model(P.ModelSource(model_path))
    chunks = P.plan_chunks(files, chunk_rows)
    tables = [t for _, t in P.read_chunks(files, chunks, ["steps", "id"], chunk_rows)]
    P.predict_table(model, tables[0], id_column="id")  # warm
    start.wait()
    began = time.perf_counter()
    for _ in range(repeat):
        for t in tables:
            P.predict_table(model, t, id_column="id")
    out.put(time.perf_counter() - began)


def ceiling(model_path, files, chunk_rows, repeat=2):
    """Scoring alone (no reading, writing or engine): 1 process vs 2 processes at once, each
    scoring all rows; returns the 2-process speedup (2 x the work in the time it takes)."""
    ctx = mp.get_context("spawn")
    result = {}
    for n in (1, 2):
        start, out = ctx.Barrier(n + 1), ctx.Queue()
        procs = [ctx.Process(target=_score_all, args=(model_path, files, chunk_rows, repeat,
                                                      start, out)) for _ in range(n)]
        for p in procs:
            p.start()
        start.wait()
        times = [out.get() for _ in procs]
        for p in procs:
            p.join()
        result[n] = max(times)
    return result[1], result[2], 2 * result[1] / result[2]


def local_split(model_path, files, chunk_rows, out_dir):
    """The local engine's phases, one chunk at a time in this process: seconds reading,
    scoring, writing (the part file and the manifest)."""
    import pyarrow as pa

    import fastrnn
    from fastrnn import predict as P
    fastrnn.set_num_threads(1)
    model = P.cached_model(P.ModelSource(model_path))
    chunks = P.plan_chunks(files, chunk_rows)
    times = dict(read=0.0, score=0.0, write=0.0)
    os.makedirs(out_dir)
    it = P.read_chunks(files, chunks, ["steps", "id"], chunk_rows)
    while True:
        t0 = time.perf_counter()
        item = next(it, None)
        t1 = time.perf_counter()
        times["read"] += t1 - t0
        if item is None:
            break
        chunk, table = item
        result, _, _ = P.predict_table(model, table, first_row=chunk.row, id_column="id")
        t2 = time.perf_counter()
        P._write_part(pa, result, out_dir, chunk.key)
        times["write"] += time.perf_counter() - t2
        times["score"] += t2 - t1
    return times


def driver_cpu(engine, model_path, data, warm, out_root, chunk_rows):
    """Wall and driver-process CPU seconds of the command's engine with 2 workers."""
    from fastrnn import predict as P
    source = P.ModelSource(model_path)
    if engine == "ray":
        from fastrnn.ray import ChunkPool
    else:
        from fastrnn.dask import ChunkPool
    pool = ChunkPool(source, workers=2, threads=1)
    try:
        common = dict(id_column="id", chunk_rows=chunk_rows, engine=pool)
        P.predict_parquet(source, warm, os.path.join(out_root, engine + "-w"), **common)
        c0, t0 = time.process_time(), time.perf_counter()
        P.predict_parquet(source, data, os.path.join(out_root, engine), **common)
        return time.perf_counter() - t0, time.process_time() - c0
    finally:
        pool.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--chunk-rows", type=int, default=4096)
    parser.add_argument("--only", default="ceiling,local,driver")
    args = parser.parse_args(argv)
    only = args.only.split(",")
    import pyarrow.parquet as pq

    from fastrnn import predict as P
    tmp = tempfile.mkdtemp(prefix="fastrnn-phases-")
    try:
        scale._make_sequences().main([tmp, "--rows", str(args.rows), "--files", "4"])
        data, model = os.path.join(tmp, "sequences"), os.path.join(tmp, "model.npz")
        files = P.parquet_files(data)
        warm = os.path.join(tmp, "warm.parquet")
        first = pq.read_table(files[0])
        pq.write_table(first.slice(0, min(first.num_rows, 2 * args.chunk_rows)), warm)
        if "ceiling" in only:
            one, two, speedup = ceiling(model, files, args.chunk_rows)
            print(f"scoring only, 2 x {args.rows} rows: 1 process {one:.2f} s; 2 processes at "
                  f"once (each all rows) {two:.2f} s: 2-process speedup {speedup:.2f}x",
                  flush=True)
        if "local" in only:
            t = local_split(model, files, args.chunk_rows, os.path.join(tmp, "local"))
            total = sum(t.values())
            print("local engine, 1 thread: " + ", ".join(
                f"{k} {v:.2f} s ({v / total:.0%})" for k, v in t.items()), flush=True)
        if "driver" in only:
            import ray
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
            try:
                for engine in ("ray", "dask"):
                    wall, cpu = driver_cpu(engine, model, data, warm, tmp, args.chunk_rows)
                    print(f"{engine} engine, 2 workers: {wall:.2f} s wall, the driver process "
                          f"used {cpu:.2f} s of CPU ({cpu / wall:.0%} of a core)", flush=True)
            finally:
                ray.shutdown()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
