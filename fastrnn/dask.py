"""Batch scoring on Dask (`pip install "fastrnn[dask]"`): Dask DataFrames and Bags, and
`fastrnn predict --engine dask`.

    from distributed import Client
    import dask.dataframe as dd, fastrnn.dask
    client = Client("scheduler:8786")
    ddf = dd.read_parquet("s3://bucket/sequences/", dtype_backend="pyarrow")
    scores = fastrnn.dask.predict(ddf, "model.npz", id_column="id")
    scores.to_parquet("s3://bucket/scores/")

With a distributed Client the model travels once per worker (a worker plugin, which also
reaches workers that join or restart later) and is loaded there once; tasks carry only its
name. Ragged list columns go through pyarrow (pandas object columns of arrays, or
`pd.ArrowDtype` list columns); the outputs are `pd.ArrowDtype` list columns. The batching,
checks and outputs are `fastrnn.predict.predict_table`'s: the same bits as one local call per
row; a bad row gets its reason in the "error" column.
"""
import time

import numpy as np

from .predict import (ERROR_COLUMN, OUTPUT_COLUMN, ChunkRead, ModelSource, as_source,
                      cached_model, chunk_table, output_type, predict_table, require_pyarrow)

INSTALL_HINT = 'pip install "fastrnn[dask]"'
_PLUGIN_PREFIX = "fastrnn-model-"


def _distributed():
    try:
        import dask  # noqa: F401
        import distributed
    except ImportError as exc:
        raise ImportError("the dask engine needs dask and distributed, which are not "
                          f"installed: {INSTALL_HINT}") from exc
    return distributed


def send_model(client, model, *, threads=1, name=None):
    """Install a model on every worker of `client` (now and later ones): returns the key its
    tasks look it up by. Registering the same model again sends nothing new.

    Args:
        client: a `distributed.Client`.
        model: a model file (path or bytes), a layer or layers, or a `ModelSource`.
        threads: fastrnn threads on each worker (match threads_per_worker).
        name: the layer of a model file with several to run alone."""
    from ._dask_plugin import ModelPlugin
    source = as_source(model, name=name)
    key = f"{_PLUGIN_PREFIX}{source.digest[:24]}-{threads}"
    client.register_plugin(ModelPlugin(source, threads), name=key)
    return key


def _worker_model(model):
    """The model on this worker: `model` a plugin key (str) or a ModelSource (no cluster)."""
    if isinstance(model, ModelSource):
        return cached_model(model)
    from distributed import get_worker
    return get_worker().plugins[model].model


def _score_frame(frame, model, options):
    import pandas as pd
    pa = require_pyarrow()
    id_column = options["id_column"]
    columns = [c for c in (options["column"], id_column) if c is not None]
    table = pa.Table.from_pandas(frame[columns] if options["column"] else frame,
                                 preserve_index=False)
    result, _, _ = predict_table(_worker_model(model), table, first_row=None, **options)
    out = pd.DataFrame(index=frame.index)
    out[id_column] = frame[id_column]
    for name in (OUTPUT_COLUMN, ERROR_COLUMN):
        out[name] = pd.Series(pd.arrays.ArrowExtensionArray(result.column(name)),
                              index=frame.index)
    return out


def _score_records(records, model, options):
    pa = require_pyarrow()
    records = list(records)
    column, id_column = options["column"], options["id_column"]
    if not records:
        return []
    if column is None:
        raise ValueError("column= is required for a Bag (its records have no schema)")
    sequences = [r[column] if not isinstance(r[column], np.ndarray) else r[column].tolist()
                 for r in records]
    table = pa.table({id_column: [r[id_column] for r in records], column: sequences})
    result, _, _ = predict_table(_worker_model(model), table, first_row=None, **options)
    return result.to_pylist()


def predict(data, model, *, column=None, id_column=None, reduce="last", batch_size=64,
            group=True, strict=False, name=None, client=None, threads=1):
    """Score a Dask DataFrame or Bag of sequences (lazily: nothing runs until you compute or
    write the result).

    Args:
        data: a `dask.dataframe.DataFrame` with a sequence column (a list of per-step vectors
            per row, e.g. from `dd.read_parquet`) and an id column; or a `dask.bag.Bag` of
            dicts holding both.
        model: a model file (path or bytes; several recurrent layers run as a stack), a layer
            or layers, or a `fastrnn.predict.ModelSource`.
        column, id_column, reduce, batch_size, group, strict: as for
            `fastrnn.predict.predict_table`; `id_column` is required (partitions carry no
            global row numbers), `column` too for a Bag.
        name: the layer of a model file with several to run alone.
        client: the `distributed.Client` to send the model to (default: the current one, if
            any; without one the model goes with the graph and loads once per process).
        threads: fastrnn threads per worker (match threads_per_worker).

    Returns:
        A DataFrame (index of `data`) with the id column, "output" and "error"
        (`pd.ArrowDtype` columns), or a Bag of dicts with the same keys.

    Raises:
        ImportError: dask or distributed is not installed.
        ValueError: no id_column, or something other than a DataFrame or Bag.

    Example:
        >>> ddf = dd.read_parquet("seqs/", dtype_backend="pyarrow")  # Arrow lists, no copies
        >>> fastrnn.dask.predict(ddf, "model.npz", id_column="id")
    """
    distributed = _distributed()
    if id_column is None:
        raise ValueError("id_column is required on Dask: partitions carry no row numbers")
    source = as_source(model, name=name)
    if client is None:
        try:
            client = distributed.default_client()
        except ValueError:  # no cluster: the local schedulers
            client = None
    handle = send_model(client, source, threads=threads) if client is not None else source
    options = dict(column=column, id_column=id_column, reduce=reduce, batch_size=batch_size,
                   group=group, strict=strict)
    import dask.bag
    if isinstance(data, dask.bag.Bag):
        return data.map_partitions(_score_records, handle, options)
    import dask.dataframe as dd
    import pandas as pd
    if not isinstance(data, dd.DataFrame):
        raise ValueError(f"data must be a dask DataFrame or Bag, got a {type(data).__name__}")
    if column is not None and pd.api.types.is_string_dtype(data._meta[column].dtype):
        raise ValueError(
            f"column {column!r} holds strings: dask turns object columns (Python lists) into "
            "strings (its dataframe.convert-string setting); give ragged rows as a "
            "pd.ArrowDtype list column, e.g. pd.arrays.ArrowExtensionArray(pa.array(rows, "
            "pa.list_(pa.list_(pa.float32())))), as dd.read_parquet(..., "
            "dtype_backend='pyarrow') reads them")
    meta = pd.DataFrame(index=data._meta.index)
    meta[id_column] = data._meta[id_column]
    pa = require_pyarrow()
    model_here = cached_model(source)  # the output's type needs the model's sizes
    meta[OUTPUT_COLUMN] = pd.Series(dtype=pd.ArrowDtype(output_type(model_here, reduce)),
                                    index=meta.index)
    meta[ERROR_COLUMN] = pd.Series(dtype=pd.ArrowDtype(pa.string()), index=meta.index)
    return data.map_partitions(_score_frame, handle, options, meta=meta)


def _score_chunk(rows, first_row, model, options):
    return predict_table(_worker_model(model), chunk_table(rows), first_row=first_row,
                         **options)


def _on_this_machine(addresses):
    """Whether every worker address is a loopback one (a cluster on this machine, which
    sees its files)."""
    from urllib.parse import urlsplit
    hosts = {urlsplit(a).hostname for a in addresses}
    return bool(hosts) and all(h in ("127.0.0.1", "localhost", "::1") for h in hosts)


class ChunkPool:
    """The workers `fastrnn.predict.predict_parquet(engine="dask")` sends its chunks to.

    A chunk whose worker dies is sent again (Dask reschedules tasks of lost workers; this
    pool also resubmits a chunk whose scattered input was lost with its worker), so a lost
    worker costs time, not rows.

    Args:
        source: a `fastrnn.predict.ModelSource`.
        workers: worker processes of the local cluster (with no address).
        threads: fastrnn threads per worker.
        address: a scheduler address, or None to start a `LocalCluster`.
        read_in_workers: let the workers read their chunks' rows from the input files
            (`fastrnn.predict.ChunkRead`) instead of receiving them from this process; None:
            when every worker is on this machine (loopback addresses). Needs the input at
            the same path on the workers.
    """

    retries = 3

    def __init__(self, source, *, workers=2, threads=1, address=None, read_in_workers=None):
        distributed = _distributed()
        self.distributed = distributed
        self.cluster = None
        # chunks go straight to the workers of a cluster started here (a chunk's table through
        # the scheduler is a second copy: 1 worker scored ~10% fewer rows/s); a remote
        # cluster's workers may be reachable only through its scheduler
        self.direct = address is None
        if address is None:
            self.cluster = distributed.LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True,
                dashboard_address=":0")  # a free port: 8787 may be another cluster's
            address = self.cluster
        self.client = distributed.Client(address)
        found = self.client.scheduler_info().get("workers", {})
        self.workers = max(1, len(found) or workers)
        self.reads_files = _on_this_machine(found) if read_in_workers is None \
            else bool(read_in_workers)
        self.key = send_model(self.client, source, threads=threads)

    def _submit(self, chunk, table, options):
        if isinstance(table, ChunkRead):  # a few hundred bytes: in the task itself
            return self.client.submit(_score_chunk, table, chunk.row, self.key, options,
                                      pure=False, retries=self.retries)
        for attempt in range(self.retries + 1):
            try:
                data = self.client.scatter(table, hash=False, direct=self.direct)
                break
            except (OSError, self.distributed.comm.CommClosedError):
                # a worker that just died can still be on the scheduler's list for a moment
                if attempt == self.retries:
                    raise
                time.sleep(0.2 * (attempt + 1))
        return self.client.submit(_score_chunk, data, chunk.row, self.key, options,
                                  pure=False, retries=self.retries)

    def run(self, chunks, options, in_flight=2):
        """Yield (chunk, predict_table's result) as workers finish them; at most `in_flight`
        chunks queued per worker."""
        distributed = self.distributed
        queue = distributed.as_completed()
        held = {}  # future key -> (chunk, table, attempts)
        chunks = iter(chunks)
        exhausted = False
        while True:
            while not exhausted and len(held) < self.workers * in_flight:
                item = next(chunks, None)
                if item is None:
                    exhausted = True
                    break
                future = self._submit(*item, options)
                held[future.key] = (*item, 0)
                queue.add(future)
            if not held:
                return
            future = next(queue)
            chunk, table, attempts = held.pop(future.key)
            try:
                result = future.result()
            except (ValueError, TypeError, KeyError) as exc:
                raise exc from None  # the work's own errors (a bad row with strict, ...)
            except Exception:  # the worker or the data on it was lost: send it again
                if attempts >= self.retries:
                    raise
                time.sleep(0.2 * (attempts + 1))
                retry = self._submit(chunk, table, options)
                held[retry.key] = (chunk, table, attempts + 1)
                queue.add(retry)
                continue
            yield chunk, result

    def close(self):
        """Close the client, and the local cluster if this pool started one."""
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


__all__ = ["predict", "send_model", "ChunkPool", "INSTALL_HINT"]
