"""Batch scoring on Ray (`pip install "fastrnn[ray]"`): Ray Data and `fastrnn predict
--engine ray`.

    import ray, fastrnn.ray
    ds = ray.data.read_parquet("s3://bucket/sequences/")
    scores = fastrnn.ray.predict(ds, "model.npz", id_column="id", concurrency=8, num_cpus=2)
    scores.write_parquet("s3://bucket/scores/")

Each actor loads the model once (from the model file's bytes, sent with the actor's
constructor, not with every batch) and runs fastrnn with as many threads as the CPUs Ray
gives it. The batching, checks and outputs are `fastrnn.predict.predict_table`'s: the same
bits as one local call per row; a bad row gets its reason in the "error" column. `predict`
refuses (ValueError) actors that would leave the cluster no CPU for the Dataset's reading and
writing tasks: such a job would wait forever.
"""
from .predict import as_source, cached_model, chunk_table, predict_table

INSTALL_HINT = 'pip install "fastrnn[ray]"'


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"the ray engine needs Ray Data, which is not installed: {INSTALL_HINT}"
                          ) from exc
    return ray


class Predictor:
    """A callable class for `ray.data.Dataset.map_batches(batch_format="pyarrow")`: one
    instance per actor, the model loaded once in its constructor.

    Args:
        model: a model file (path or bytes: what `fastrnn.load` reads; several recurrent
            layers run as a stack), a layer or layers, or a `fastrnn.predict.ModelSource`.
        column, id_column, reduce, batch_size, group, strict: as for
            `fastrnn.predict.predict_table` (`id_column` is required: Ray Data has no global
            row numbers).
        threads: fastrnn threads in this actor; match the actor's num_cpus.
        name: the layer of a model file with several to run alone.

    Example:
        >>> ds.map_batches(Predictor, fn_constructor_kwargs={"model": "model.npz",
        ...     "id_column": "id", "threads": 2}, batch_format="pyarrow",
        ...     compute=ray.data.ActorPoolStrategy(size=4), num_cpus=2)
    """

    def __init__(self, model, *, column=None, id_column=None, reduce="last", batch_size=64,
                 group=True, strict=False, threads=1, name=None):
        from . import set_num_threads
        if id_column is None:
            raise ValueError("id_column is required on Ray: its batches carry no row numbers")
        set_num_threads(int(threads))
        self.model = cached_model(as_source(model, name=name))
        self.options = dict(column=column, id_column=id_column, reduce=reduce,
                            batch_size=batch_size, group=group, strict=strict)

    def __call__(self, batch):
        """Score one batch (a `pyarrow.Table`): id, output, error per row."""
        table, _, _ = predict_table(self.model, batch, first_row=None, **self.options)
        return table


def _actor_pool(ray, concurrency, num_cpus, leave_cpus):
    """The `ActorPoolStrategy` of `predict` and the fewest actors it keeps; raises ValueError
    when those actors would leave the running cluster less than `leave_cpus` CPUs."""
    cpus = None
    if ray.is_initialized():
        cpus = float(ray.cluster_resources().get("CPU", 0))
    room = 0.0 if leave_cpus is None else float(leave_cpus)
    if concurrency is None:
        fit = int((cpus - room) // num_cpus + 1e-9) if cpus is not None else 1
        concurrency = max(1, fit)
    if isinstance(concurrency, (tuple, list)):
        if len(concurrency) != 2 or not all(isinstance(c, int) for c in concurrency):
            raise ValueError(f"concurrency must be an int or (min, max), not {concurrency!r}")
        fewest, most = concurrency
        compute = ray.data.ActorPoolStrategy(min_size=fewest, max_size=most)
    else:
        fewest = int(concurrency)
        compute = ray.data.ActorPoolStrategy(size=fewest)
    if fewest < 1:
        raise ValueError(f"concurrency must be at least 1 actor, not {concurrency!r}")
    if cpus is not None and leave_cpus is not None \
            and fewest * num_cpus + room > cpus + 1e-9:
        raise ValueError(
            f"fastrnn.ray.predict: {fewest} actor(s) x num_cpus={num_cpus:g} and "
            f"leave_cpus={room:g} for the Dataset's own tasks need "
            f"{fewest * num_cpus + room:g} CPUs; the Ray cluster has {cpus:g}. The actors "
            "start first and keep their CPUs, so the Dataset's reading and writing tasks (1 "
            "CPU each unless given fewer) would never be scheduled and the job would wait "
            "forever. Use fewer actors (concurrency), a fraction of a CPU per actor "
            "(num_cpus=0.5 still runs one fastrnn thread), or, when the Dataset's tasks "
            "ask for less (read_parquet(..., num_cpus=0.25)) or there are none "
            "(from_arrow blocks taken with to_arrow_refs), a smaller leave_cpus; "
            "leave_cpus=None skips this check (an autoscaling cluster that adds CPUs).")
    return compute


def predict(dataset, model, *, column=None, id_column=None, reduce="last", batch_size=64,
            group=True, strict=False, concurrency=None, num_cpus=1, threads=None,
            leave_cpus=1, rows_per_batch=4096, name=None, predictor=None):
    """Score a Ray Dataset of sequences: a lazy Dataset with the id column, "output" and
    "error" (null unless the row is bad) for each row.

    Args:
        dataset: a `ray.data.Dataset` with a sequence column and an id column.
        model: as for `Predictor`; a path is read once here and its bytes go to each actor.
        column, id_column, reduce, batch_size, group, strict: as for `Predictor`.
        concurrency: actors (an int, or (min, max) to autoscale), run as
            `compute=ray.data.ActorPoolStrategy(...)`; None: as many as fit in the running
            cluster's CPUs after `leave_cpus` (at least 1).
        num_cpus: CPUs Ray reserves per actor (may be a fraction: 0.5 lets two actors share
            a core's reservation with the Dataset's reading and writing tasks).
        threads: fastrnn threads per actor; None: num_cpus rounded down, at least 1.
        leave_cpus: CPUs the actors must leave free for the Dataset's own tasks (Ray Data's
            reads and writes ask for 1 CPU each by default): when the running cluster has
            fewer than (minimum actors x num_cpus + leave_cpus) CPUs this raises ValueError
            instead of returning a Dataset that would wait forever. 0 for a Dataset whose
            tasks need no CPU (from_arrow blocks collected with to_arrow_refs); None skips
            the check (an autoscaling cluster). Checked only when Ray is initialized.
        rows_per_batch: rows per `map_batches` batch (the window of length grouping).
        name: the layer of a model file with several to run alone.
        predictor: the callable class to run: `Predictor` (default) or a subclass of it
            (that post-processes its tables, say).

    A dead actor is restarted and its batches rerun (Ray Data's actor pools default to
    max_restarts=-1 and max_task_retries=-1), so a lost worker costs time, not rows.

    Raises:
        ImportError: Ray Data is not installed.
        ValueError: no id_column; the actors would leave the cluster no CPU for the
            Dataset's other tasks (see leave_cpus).

    Example:
        >>> fastrnn.ray.predict(ray.data.read_parquet("seqs/"), "model.npz", id_column="id")
    """
    ray = _ray()
    if id_column is None:
        raise ValueError("id_column is required on Ray: its batches carry no row numbers")
    if not num_cpus > 0:
        raise ValueError(f"num_cpus must be positive, not {num_cpus!r}")
    source = as_source(model, name=name)
    compute = _actor_pool(ray, concurrency, num_cpus, leave_cpus)
    threads = max(1, int(num_cpus)) if threads is None else int(threads)
    return dataset.map_batches(
        predictor or Predictor, batch_format="pyarrow", batch_size=rows_per_batch,
        fn_constructor_kwargs=dict(model=source, column=column, id_column=id_column,
                                   reduce=reduce, batch_size=batch_size, group=group,
                                   strict=strict, threads=threads),
        compute=compute, num_cpus=num_cpus)


class _ChunkWorker:
    """An actor of `fastrnn predict --engine ray`: the model loaded once, then chunks."""

    def __init__(self, source, threads):
        from . import set_num_threads
        set_num_threads(threads)
        self.model = cached_model(source)

    def score(self, rows, first_row, options):
        return predict_table(self.model, chunk_table(rows), first_row=first_row, **options)

    def pid(self):
        import os
        return os.getpid()


class ChunkPool:
    """The actors `fastrnn.predict.predict_parquet(engine="ray")` sends its chunks to.

    Actors are restarted by Ray when their process dies, and the chunks they held are run
    again (max_restarts / max_task_retries), so a lost worker costs time, not rows.

    Args:
        source: a `fastrnn.predict.ModelSource`.
        workers: actors.
        threads: CPUs and fastrnn threads per actor.
        address: the Ray cluster (None: the one this process is connected to, or a new local
            one with workers * threads CPUs).
        read_in_workers: let the actors read their chunks' rows from the input files
            (`fastrnn.predict.ChunkRead`) instead of receiving them from this process (where
            a thread reads ahead, and Ray's object store passes the rows on without copies:
            with 1-2 actors on 2 vCPUs that was 5-10% faster, measured interleaved). Worth it
            with many actors, which one reading thread (roughly 270,000 rows/s of the example
            data set) cannot keep fed. Needs the input at the same path on every node.

    Raises:
        ValueError: the cluster has fewer CPUs than workers * threads: the actors that do
            not fit would never start and the chunks sent to them would wait forever.
    """

    def __init__(self, source, *, workers=2, threads=1, address=None, read_in_workers=False):
        ray = _ray()
        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            ray.init(address=address, num_cpus=None if address else workers * threads,
                     include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        cpus = float(ray.cluster_resources().get("CPU", 0))
        if workers * threads > cpus + 1e-9:
            if self.started:
                ray.shutdown()
            raise ValueError(
                f"{workers} Ray worker(s) x {threads} thread(s) need {workers * threads} CPUs; "
                f"the Ray cluster has {cpus:g}: the actors that do not fit would never start "
                "and their chunks would wait forever. Use fewer workers or threads.")
        self.reads_files = bool(read_in_workers)
        actor = ray.remote(num_cpus=threads, max_restarts=-1, max_task_retries=-1)(
            _ChunkWorker)
        # the model's bytes go with each actor's constructor: a restarted actor loads them
        # again without depending on an object that may have been lost with a node
        self.actors = [actor.remote(source, threads) for _ in range(workers)]

    def run(self, chunks, options, in_flight=2):
        """Yield (chunk, predict_table's result) as actors finish them; at most `in_flight`
        chunks queued per actor, so reading keeps just ahead of scoring."""
        ray = self.ray
        free = [a for a in self.actors for _ in range(in_flight)]
        pending, chunks = {}, iter(chunks)
        exhausted = False
        while True:
            while free and not exhausted:
                item = next(chunks, None)
                if item is None:
                    exhausted = True
                    break
                chunk, table = item
                actor = free.pop(0)
                pending[actor.score.remote(table, chunk.row, options)] = (chunk, actor)
            if not pending:
                return
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            chunk, actor = pending.pop(ref)
            free.append(actor)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayTaskError as exc:
                cause = getattr(exc, "cause", None)
                raise (cause if isinstance(cause, Exception) else exc) from None
            yield chunk, result

    def close(self):
        """Stop the actors, and Ray itself if this pool started it."""
        for actor in self.actors:
            self.ray.kill(actor)
        if self.started:
            self.ray.shutdown()


__all__ = ["Predictor", "predict", "ChunkPool", "INSTALL_HINT"]
