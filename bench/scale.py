"""Scale benchmark of batch scoring (issue 21): rows/s of `fastrnn predict`'s pipeline on the
local engine and on Ray and Dask with 1 and 2 workers (1 fastrnn thread each), against the same
pipeline with `torch.nn.LSTM` (packed sequences) in the workers; the padding ratio with and
without length grouping.

    python bench/scale.py                       # 20,000 rows, a few minutes on 2 cores
    python bench/scale.py --rows 4000 --engines local,ray --json scale.json

Engines: local, ray and dask are `fastrnn predict --engine` (chunks read and written in this
process, scored in the workers); ray-data and dask-df read and write in the workers
(`fastrnn.ray.predict` on `ray.data.read_parquet`, `fastrnn.dask.predict` on
`dd.read_parquet`), as a multi-node job does. The data set is examples/make_sequences.py's
(16 features, 1-200 steps, log-uniform lengths) and the model its 2-layer LSTM (16 -> 64).
Each configuration scores the whole data set into a fresh directory (`--repeat` times: the
median and range are reported) after a warm-up run on a slice (clusters and workers already
started, models loaded), so the time is the steady cost of reading, scoring and writing; but
a ray-data run is a whole Ray Data job, which starts its actors (and loads the model in them)
again each time, as a real job does. Targets: 2 workers >= 1.7x 1 worker per engine; engine
overhead <= 15% vs local at 1 worker; fastrnn >= 1.5x the torch pipeline.
bench/scale_phases.py shows where the time goes (the scoring's own 2-process ceiling, the
read / score / write split, the drivers' CPU, the fixed cost of a Ray Data or Dask job).
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
    """One configuration, timed `repeat` times: (list of seconds, last PredictReport)."""
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
    try:
        run_engine = pool if pool is not None else "local"
        out = os.path.join(out_root, f"{engine}-{workers}-{implementation}")
        common = dict(id_column="id", chunk_rows=chunk_rows, engine=run_engine,
                      threads=1 if pool is None else None)
        P.predict_parquet(source, warm, out + "-warm", **common)
        seconds = []
        for i in range(repeat):
            began = time.perf_counter()
            report = P.predict_parquet(source, data, f"{out}-{i}", **common)
            seconds.append(time.perf_counter() - began)
    finally:
        if pool is not None:
            pool.close()
    return seconds, report


def _timed_jobs(job, warm, data, out, repeat):
    """job(src, dst) once untimed on the warm-up slice, then `repeat` timed runs on the whole
    data set into out-0, out-1, ...; the seconds of each."""
    job(warm, out + "-warm")
    seconds = []
    for i in range(repeat):
        began = time.perf_counter()
        job(data, f"{out}-{i}")
        seconds.append(time.perf_counter() - began)
    return seconds


def run_native(engine, workers, implementation, model_path, data, warm, out_root, chunk_rows,
               repeat=1):
    """The engine's own reading and writing (what a multi-node job runs): Ray Data
    read_parquet -> fastrnn.ray.predict -> write_parquet, or dd.read_parquet ->
    fastrnn.dask.predict -> to_parquet; each a whole job (a fresh Dataset or graph: Ray Data
    starts its actors per job). Returns (list of seconds, rows)."""
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
        seconds = _timed_jobs(job, warm, data, out, repeat)
    else:
        import dask.dataframe as dd
        import distributed

        import fastrnn.dask
        with distributed.LocalCluster(n_workers=workers, threads_per_worker=1,
                                      dashboard_address=":0") as cluster, \
                distributed.Client(cluster) as client:
            def job(src, dst):
                ddf = dd.read_parquet(src, split_row_groups=True)
                fastrnn.dask.predict(ddf, source, id_column="id", client=client).to_parquet(dst)
            seconds = _timed_jobs(job, warm, data, out, repeat)
    return seconds, pq.read_table(f"{out}-0", columns=["id"]).num_rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000, help="rows (default 20000)")
    parser.add_argument("--engines", default="local,ray,dask,ray-data,dask-df",
                        help="comma-separated: local, ray, dask (the command's engines), "
                        "ray-data, dask-df (the engines' own Parquet reading and writing); "
                        "default all")
    parser.add_argument("--no-torch", action="store_true", help="skip the torch pipeline")
    parser.add_argument("--chunk-rows", type=int, default=1024,
                        help="rows per chunk (default 1024)")
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
        pq.write_table(first.slice(0, min(first.num_rows, 2 * args.chunk_rows)), warm)
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
                        times, rows = run_native(engine, workers, implementation, model,
                                                 data, warm, tmp, args.chunk_rows, args.repeat)
                        stats = {}
                    else:
                        load = os.getloadavg()[0]
                        times, report = run_config(engine, workers, implementation, model,
                                                   data, warm, tmp, args.chunk_rows,
                                                   args.repeat)
                        rows = report.stats.rows
                        stats = dict(padding=report.stats.padding_ratio,
                                     padding_ungrouped=report.stats.ungrouped_padding_ratio,
                                     steps=report.stats.steps)
                    seconds = float(np.median(times))
                    rate = rows / seconds
                    results.append(dict(engine=engine, workers=workers,
                                        implementation=implementation, rows=rows,
                                        seconds=seconds, rows_per_s=rate,
                                        rows_per_s_range=[rows / max(times), rows / min(times)],
                                        times=times, loadavg_before=load, **stats))
                    print(f"{engine:5s} {workers} worker(s) {implementation:7s} "
                          f"{rate:9,.0f} rows/s ({seconds:.2f} s; {rows / max(times):,.0f}-"
                          f"{rows / min(times):,.0f} in {len(times)} runs; load average "
                          f"{load:.1f} before)", flush=True)
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
    """The results as a markdown table with the issue's ratios."""
    by = {(r["engine"], r["workers"], r["implementation"]): r for r in results}
    local = by.get(("local", 1, "fastrnn"))
    lines = ["| engine | workers | fastrnn rows/s | us/row/worker | vs 1 worker | vs local | "
             "torch rows/s | fastrnn / torch |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        if r["implementation"] != "fastrnn":
            continue
        one = by.get((r["engine"], 1, "fastrnn"))
        torch_r = by.get((r["engine"], r["workers"], "torch"))
        low, high = r.get("rows_per_s_range", (r["rows_per_s"],) * 2)
        spread = f" ({low:,.0f}-{high:,.0f})" if len(r.get("times", ())) > 1 else ""
        lines.append("| {} | {} | {:,.0f}{} | {:.0f} | {} | {} | {} | {} |".format(
            r["engine"], r["workers"], r["rows_per_s"], spread,
            1e6 * r["workers"] / r["rows_per_s"],
            f"{r['rows_per_s'] / one['rows_per_s']:.2f}x" if one and r["workers"] > 1 else "",
            f"{r['rows_per_s'] / local['rows_per_s']:.2f}x" if local else "",
            f"{torch_r['rows_per_s']:,.0f}" if torch_r else "",
            f"{r['rows_per_s'] / torch_r['rows_per_s']:.2f}x" if torch_r else ""))
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
