"""Scale benchmark of batch scoring (issue 21): rows/s of `fastrnn predict`'s pipeline on the
local engine and on Ray and Dask with 1 and 2 workers (1 fastrnn thread each), against the same
pipeline with `torch.nn.LSTM` (packed sequences) in the workers; the padding ratio with and
without length grouping.

    python bench/scale.py --repeat 3            # 60,000 rows, ~10 minutes on 2 cores
    python bench/scale.py --rows 4000 --engines local,ray --json scale.json

Engines: local, ray and dask are `fastrnn predict --engine` (the chunks planned and the part
files and manifest written in this process; the local engine reads and scores here too, the
ray and dask workers, on this machine, read their chunks' rows from the files themselves and
score them); ray-data and dask-df are the engines' own Parquet reading and writing
(`fastrnn.ray.predict` on `ray.data.read_parquet`, `fastrnn.dask.predict` on
`dd.read_parquet(..., dtype_backend="pyarrow")`), as a multi-node job runs. The data set is
examples/make_sequences.py's
(16 features, 1-200 steps, log-uniform lengths, 4,096-row row groups) and the model its 2-layer
LSTM (16 -> 64). Each configuration scores the whole data set into a fresh directory
(`--repeat` times: the median and range are reported) after a warm-up job on a 2-chunk slice
(clusters and workers started, models loaded) and one timed job on that slice (the "small
job": mostly per-job cost). A ray-data job starts its actors (and loads the model in them)
again each time, as a real job does. The marginal rate, (rows - small job's rows) / (time -
small job's time), is what a job large enough for its fixed cost not to count would see.
Targets: 2 workers >= 1.7x 1 worker per engine; engine overhead <= 15% vs local at 1 worker;
fastrnn >= 1.5x the torch pipeline. bench/scale_phases.py shows where the time goes (the
scoring's own 2-process ceiling, the read / score / write split, the drivers' CPU, the fixed
cost of a Ray Data or Dask job).
"""
import argparse
import importlib.util
import json
import os
import platform
import shutil
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _make_sequences():
    spec = importlib.util.spec_from_file_location(
        "make_sequences", os.path.join(ROOT, "examples", "make_sequences.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------------
# The torch pipeline: the same chunks, batches and outputs, torch.nn.LSTM doing the work

def torch_model_class():
    from fastrnn.predict import Model

    class TorchModel(Model):
        """predict_table's model interface over torch.nn.LSTM with packed sequences (torch's
        own way to skip padding), weights copied from the fastrnn layer."""

        def __init__(self, layer, threads):
            import torch
            torch.set_num_threads(threads)
            self.torch = torch
            self.module = layer.to_torch().eval()
            self.layers = [layer]
            self.input_size, self.output_size = layer.input_size, layer.hidden_size
            self.dtype = np.dtype(np.float32)

        def __call__(self, x, lengths, out=None):  # out: not used, torch allocates its own
            torch = self.torch
            pack = torch.nn.utils.rnn.pack_padded_sequence
            with torch.inference_mode():
                packed = pack(torch.from_numpy(x), torch.from_numpy(np.asarray(lengths)),
                              batch_first=True, enforce_sorted=False)
                out, _ = self.module(packed)
                out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True,
                                                                total_length=x.shape[1])
            return out.numpy()
    return TorchModel


def torch_source_class():
    from fastrnn.predict import ModelSource

    class TorchSource(ModelSource):
        """The model file, loaded on the workers as a TorchModel (its own cache key)."""

        def __init__(self, path, threads):
            super().__init__(path)
            self.threads = threads
            self.digest = "torch-" + self.digest

        def load(self):
            import fastrnn
            return torch_model_class()(fastrnn.load(self.files[0]), self.threads)
    return TorchSource


# ---------------------------------------------------------------------------------------------

def run_config(engine, workers, implementation, model_path, data, warm, out_root, chunk_rows,
               repeat=1):
    """One configuration of the command's engines, timed `repeat` times: (list of seconds,
    seconds of a job on the warm-up slice, last PredictReport)."""
    from fastrnn import predict as P
    source = (torch_source_class()(model_path, 1) if implementation == "torch"
              else P.ModelSource(model_path))
    pool = None
    if engine == "ray":
        from fastrnn.ray import ChunkPool
        pool = ChunkPool(source, workers=workers, threads=1)
    elif engine == "dask":
        from fastrnn.dask import ChunkPool
        pool = ChunkPool(source, workers=workers, threads=1)
    reports = []
    try:
        common = dict(id_column="id", chunk_rows=chunk_rows,
                      engine=pool if pool is not None else "local",
                      threads=1 if pool is None else None)

        def job(src, dst):
            reports.append(P.predict_parquet(source, src, dst, **common))
        seconds, small = _timed_jobs(job, warm, data,
                                     os.path.join(out_root, f"{engine}-{workers}-{implementation}"),
                                     repeat)
    finally:
        if pool is not None:
            pool.close()
    return seconds, small, reports[-1]


def _timed_jobs(job, warm, data, out, repeat):
    """job(src, dst) once untimed on the warm-up slice, once timed on it (a small job: its
    time is mostly the per-job cost), then `repeat` timed runs on the whole data set into
    out-0, out-1, ...: (the seconds of each, the small job's seconds)."""
    job(warm, out + "-warm")
    began = time.perf_counter()
    job(warm, out + "-small")
    small = time.perf_counter() - began
    seconds = []
    for i in range(repeat):
        began = time.perf_counter()
        job(data, f"{out}-{i}")
        seconds.append(time.perf_counter() - began)
    return seconds, small


def run_native(engine, workers, implementation, model_path, data, warm, out_root, chunk_rows,
               repeat=1):
    """The engine's own reading and writing (what a multi-node job runs): Ray Data
    read_parquet -> fastrnn.ray.predict -> write_parquet, or dd.read_parquet ->
    fastrnn.dask.predict -> to_parquet; each a whole job (a fresh Dataset or graph: Ray Data
    starts its actors per job). Returns (list of seconds, the small job's seconds, rows)."""
    import pyarrow.parquet as pq

    from fastrnn import predict as P
    source = (torch_source_class()(model_path, 1) if implementation == "torch"
              else P.ModelSource(model_path))
    out = os.path.join(out_root, f"{engine}-{workers}-{implementation}")
    if engine == "ray-data":
        import ray

        import fastrnn.ray

        # the actors leave 1 CPU of the cluster to Ray Data's read and write tasks (1 CPU
        # each): on 2 CPUs, 2 actors reserve half a CPU each and still run 1 fastrnn thread
        cpus = ray.cluster_resources()["CPU"]
        num_cpus = min(1.0, (cpus - 1) / workers)

        def job(src, dst):
            ds = ray.data.read_parquet(src)
            fastrnn.ray.predict(ds, source, id_column="id", concurrency=workers,
                                num_cpus=num_cpus, threads=1,
                                rows_per_batch=chunk_rows).write_parquet(dst)
        seconds, small = _timed_jobs(job, warm, data, out, repeat)
    else:
        import dask.dataframe as dd
        import distributed

        import fastrnn.dask
        with distributed.LocalCluster(n_workers=workers, threads_per_worker=1,
                                      dashboard_address=":0") as cluster, \
                distributed.Client(cluster) as client:
            def job(src, dst):
                # Arrow list columns as they are (the default backend makes an object column of
                # arrays, converted back for scoring: 25-30% fewer rows/s on 1 worker)
                ddf = dd.read_parquet(src, split_row_groups=True, dtype_backend="pyarrow")
                fastrnn.dask.predict(ddf, source, id_column="id", client=client).to_parquet(dst)
            seconds, small = _timed_jobs(job, warm, data, out, repeat)
    return seconds, small, pq.read_table(f"{out}-0", columns=["id"]).num_rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=60_000, help="rows (default 60000)")
    parser.add_argument("--engines", default="local,ray,dask,ray-data,dask-df",
                        help="comma-separated: local, ray, dask (the command's engines), "
                        "ray-data, dask-df (the engines' own Parquet reading and writing); "
                        "default all")
    parser.add_argument("--no-torch", action="store_true", help="skip the torch pipeline")
    parser.add_argument("--chunk-rows", type=int, default=4096,
                        help="rows per chunk, Ray Data batch and row group of the data "
                        "(default 4096, the command's)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="timed runs per configuration (default 1); rows/s is the median, "
                        "the range is reported too (a busy machine: use 3 or more)")
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON")
    args = parser.parse_args(argv)

    import pyarrow.parquet as pq

    import fastrnn
    from fastrnn import predict as P
    engines = [e for e in args.engines.split(",") if e]
    implementations = ["fastrnn"] + ([] if args.no_torch else ["torch"])
    tmp = tempfile.mkdtemp(prefix="fastrnn-scale-")
    try:
        make = _make_sequences()
        make.main([tmp, "--rows", str(args.rows), "--files", "4"])
        data, model = os.path.join(tmp, "sequences"), os.path.join(tmp, "model.npz")
        warm = os.path.join(tmp, "warm.parquet")
        first = pq.read_table(P.parquet_files(data)[0])
        warm_rows = min(first.num_rows, 2 * args.chunk_rows)
        pq.write_table(first.slice(0, warm_rows), warm, row_group_size=args.chunk_rows)
        if "ray" in engines or "ray-data" in engines:
            import ray
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        results = []
        for engine in engines:
            for workers in (1, 2):
                if engine == "local" and workers == 2:
                    continue  # the local engine is one process (its threads: `--threads`)
                for implementation in implementations:
                    if engine in ("ray-data", "dask-df"):
                        load = os.getloadavg()[0]
                        times, small, rows = run_native(engine, workers, implementation,
                                                        model, data, warm, tmp,
                                                        args.chunk_rows, args.repeat)
                        stats = {}
                    else:
                        load = os.getloadavg()[0]
                        times, small, report = run_config(engine, workers, implementation,
                                                          model, data, warm, tmp,
                                                          args.chunk_rows, args.repeat)
                        rows = report.stats.rows
                        stats = dict(padding=report.stats.padding_ratio,
                                     padding_ungrouped=report.stats.ungrouped_padding_ratio,
                                     steps=report.stats.steps,
                                     chunks_read_in_workers=report.read_in_workers)
                    seconds = float(np.median(times))
                    rate = rows / seconds
                    # the rows beyond the small job's, in the time beyond it: the rate of a
                    # job large enough that its fixed cost does not count
                    marginal = (rows - warm_rows) / max(seconds - small, 1e-9)
                    results.append(dict(engine=engine, workers=workers,
                                        implementation=implementation, rows=rows,
                                        seconds=seconds, rows_per_s=rate,
                                        small_job_rows=warm_rows, small_job_seconds=small,
                                        marginal_rows_per_s=marginal,
                                        rows_per_s_range=[rows / max(times), rows / min(times)],
                                        times=times, loadavg_before=load, **stats))
                    print(f"{engine:5s} {workers} worker(s) {implementation:7s} "
                          f"{rate:9,.0f} rows/s ({seconds:.2f} s; {rows / max(times):,.0f}-"
                          f"{rows / min(times):,.0f} in {len(times)} runs; {warm_rows:,} rows "
                          f"in {small:.2f} s; load average {load:.1f} before)", flush=True)
        if "ray" in engines or "ray-data" in engines:
            ray.shutdown()
        check_torch_agrees(model, data)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": platform.processor() or platform.machine(),
                       "cpus": os.cpu_count(), "fastrnn": fastrnn.__version__,
                       "python": sys.version.split()[0], "rows": args.rows,
                       "chunk_rows": args.chunk_rows, "repeat": args.repeat,
                       "results": results}, f, indent=1)


def check_torch_agrees(model_path, data):
    """The torch pipeline computes the same function (to float32 rounding) on a few rows."""
    import pyarrow.parquet as pq

    import fastrnn
    from fastrnn import predict as P
    layer = fastrnn.load(model_path)
    table = pq.read_table(P.parquet_files(data)[0]).slice(0, 64)
    ours, _, _ = P.predict_table(layer, table, id_column="id")
    theirs, _, _ = P.predict_table(torch_model_class()(layer, 1), table, id_column="id")
    a = np.array(ours.column("output").to_pylist())
    b = np.array(theirs.column("output").to_pylist())
    print(f"torch pipeline vs fastrnn: max |difference| {np.abs(a - b).max():.2e}")


def table(results):
    """The results as a markdown table with the issue's ratios, and each configuration's
    small-job time and marginal rate (its rows/s once a job is large enough that the fixed
    per-job cost does not count)."""
    by = {(r["engine"], r["workers"], r["implementation"]): r for r in results}
    local = by.get(("local", 1, "fastrnn"))
    lines = ["| engine | workers | fastrnn rows/s | us/row/worker | vs 1 worker | vs local | "
             "torch rows/s | fastrnn / torch | small job (s) | marginal rows/s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if r["implementation"] != "fastrnn":
            continue
        one = by.get((r["engine"], 1, "fastrnn"))
        torch_r = by.get((r["engine"], r["workers"], "torch"))
        low, high = r.get("rows_per_s_range", (r["rows_per_s"],) * 2)
        spread = f" ({low:,.0f}-{high:,.0f})" if len(r.get("times", ())) > 1 else ""
        small = r.get("small_job_seconds")
        lines.append("| {} | {} | {:,.0f}{} | {:.0f} | {} | {} | {} | {} | {} | {} |".format(
            r["engine"], r["workers"], r["rows_per_s"], spread,
            1e6 * r["workers"] / r["rows_per_s"],
            f"{r['rows_per_s'] / one['rows_per_s']:.2f}x" if one and r["workers"] > 1 else "",
            f"{r['rows_per_s'] / local['rows_per_s']:.2f}x" if local else "",
            f"{torch_r['rows_per_s']:,.0f}" if torch_r else "",
            f"{r['rows_per_s'] / torch_r['rows_per_s']:.2f}x" if torch_r else "",
            f"{small:.2f}" if small is not None else "",
            f"{r['marginal_rows_per_s']:,.0f}" if small is not None else ""))
    r = next((r for r in results if "padding" in r), None)
    if r is None:
        return "\n".join(lines)
    lines.append("")
    lines.append(f"padding: {r['padding']:.1%} of the computed steps with length grouping, "
                 f"{r['padding_ungrouped']:.1%} without; {r['steps'] / r['rows']:.1f} steps "
                 "per row on average")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
