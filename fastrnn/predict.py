"""Batch scoring of sequence data sets: Parquet in, Parquet out (`fastrnn predict`).

The pieces every engine shares live here; `fastrnn.ray` and `fastrnn.dask` only decide where
they run:

- `Model` / `ModelSource`: a layer, or a stack of layers run one after the other, and the
  picklable bytes a worker loads it from (once per worker, not once per task).
- `predict_table(model, table, ...)`: one Arrow table of sequences -> one table with the id,
  the output and an error for each row. Rows of similar length are batched together to cut
  padding; a bad row (wrong feature size, NaN / inf, an empty or missing sequence) gets its
  error and a null output instead of stopping the job (`strict=True` raises instead).
- `predict_parquet(model, input, output, ...)`: a Parquet file or directory streamed in chunks
  through an engine (this process, Ray or Dask), written as part files with a manifest so an
  interrupted run resumes without duplicating or losing rows.

Batching never changes the numbers: a row's outputs are bitwise the same whether it is scored
alone or padded in a batch (fastrnn's results do not depend on batch composition or threads).
pyarrow is imported only when needed (`pip install "fastrnn[predict]"`).
"""
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np

INSTALL_HINT = 'pip install "fastrnn[predict]"'
REDUCE_MODES = ("last", "all")
ENGINES = ("local", "ray", "dask")
OUTPUT_COLUMN = "output"
ERROR_COLUMN = "error"
ROW_COLUMN = "row"  # the id column of the output when the input names none: the input row number
MANIFEST = "_fastrnn_predict.json"
_MANIFEST_VERSION = 1


def require_pyarrow():
    """The pyarrow module, or an ImportError that says how to install it."""
    try:
        import pyarrow
        import pyarrow.compute  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError as exc:
        raise ImportError("batch scoring reads and writes Arrow / Parquet data with pyarrow, "
                          f"which is not installed: {INSTALL_HINT}") from exc
    return pyarrow


class BadRowError(ValueError):
    """A row that cannot be scored, raised with `strict=True`: `.row_id`, `.row`, `.reason`."""

    def __init__(self, row_id, row, reason):
        where = f"id {row_id!r}" if row is None else f"row {row} (id {row_id!r})"
        super().__init__(f"{where}: {reason}")
        self.row_id, self.row, self.reason = row_id, row, reason

    def __reduce__(self):  # engines send it back from their workers
        return type(self), (self.row_id, self.row, self.reason)


@dataclass(frozen=True)
class BadRow:
    """A row reported instead of scored: its id, its input row number (None where the
    engine does not know it: Ray and Dask batches) and why."""
    id: object
    row: int
    reason: str


@dataclass
class ScoreStats:
    """Counts of one scoring run; they add up across chunks and workers (`a + b`).

    rows / bad_rows: rows read and rows reported as bad; steps: valid time steps of the good
    rows; computed_steps: steps the layers ran, padding included (rows batched by length);
    ungrouped_steps: what they would have run batching the same rows in input order."""
    rows: int = 0
    bad_rows: int = 0
    steps: int = 0
    computed_steps: int = 0
    ungrouped_steps: int = 0
    batches: int = 0

    def __add__(self, other):
        return ScoreStats(*(getattr(self, f) + getattr(other, f) for f in _STAT_FIELDS))

    @property
    def padding_ratio(self):
        """The share of computed steps that were padding, with length grouping."""
        return _padding(self.steps, self.computed_steps)

    @property
    def ungrouped_padding_ratio(self):
        """The same share without length grouping (batches taken in input order)."""
        return _padding(self.steps, self.ungrouped_steps)

    def as_dict(self):
        """The counts as a plain dict (JSON, Arrow metadata)."""
        return {f: getattr(self, f) for f in _STAT_FIELDS}


_STAT_FIELDS = ("rows", "bad_rows", "steps", "computed_steps", "ungrouped_steps", "batches")


def _padding(steps, computed):
    return 0.0 if computed == 0 else 1.0 - steps / computed


# ---------------------------------------------------------------------------------------------
# Models

def _is_layer(obj):
    from .layers import GRU, LSTM
    return isinstance(obj, (LSTM, GRU))


def _output_size(layer):
    return layer.num_directions * (getattr(layer, "proj_size", 0) or layer.hidden_size)


class Model:
    """A layer, or a stack of layers each fed the previous one's output, run on padded batches
    with per-row lengths.

    Args:
        layers: a `fastrnn.LSTM` / `GRU`, or a sequence of them in the order they run.

    Raises:
        TypeError: something other than fastrnn layers.
        ValueError: an empty stack, or a layer whose input_size is not the previous layer's
            output size.

    Example:
        >>> model = Model([fastrnn.LSTM(8, 16), fastrnn.GRU(16, 4)])
        >>> out = model(np.ones((2, 5, 8), np.float32), np.array([5, 3]))  # (2, 5, 4)
    """

    def __init__(self, layers):
        layers = [layers] if _is_layer(layers) else list(layers)
        if not layers:
            raise ValueError("a model needs at least one layer")
        for layer in layers:
            if not _is_layer(layer):
                raise TypeError(f"a model is made of fastrnn.LSTM / GRU layers, got a "
                                f"{type(layer).__name__}")
        for before, after in zip(layers, layers[1:]):
            if after.input_size != _output_size(before):
                raise ValueError(
                    f"cannot run these layers as a stack: {after!r} takes {after.input_size} "
                    f"features but {before!r} gives {_output_size(before)}; choose one layer "
                    "with name=...")
        self.layers = layers
        self.input_size = layers[0].input_size
        self.output_size = _output_size(layers[-1])
        self.dtype = np.dtype(layers[-1].dtype)

    def __call__(self, x, lengths, out=None):
        """Outputs (batch, time, output_size) of the last layer for padded x (batch, time,
        input_size) whose row b has lengths[b] valid steps; written into `out` when given (an
        array of that shape and the model's dtype)."""
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x, _ = layer(x, lengths=lengths, out=out if i == last else None)
        return x

    def __repr__(self):
        return f"Model({', '.join(repr(layer) for layer in self.layers)})"


class ModelSource:
    """What a worker loads a `Model` from: the model file's bytes (or each layer saved as
    `.npz` bytes for layers built in memory), small and picklable, so engines can send it once
    per worker instead of a layer per task.

    Args:
        model: a path or the bytes of any file `fastrnn.load` reads (a file with several
            recurrent layers runs them as a stack, in model order), a `fastrnn.LSTM` / `GRU`,
            a sequence of them, a `Model`, or a `ModelSource`.
        name: the layer to use when the file holds several (as `fastrnn.load`'s `name`);
            None runs all of them as a stack.

    Raises:
        FileNotFoundError: a path that does not exist.
        TypeError: any other kind of object.

    Example:
        >>> source = ModelSource("model.npz"); model = source.load()
    """

    def __init__(self, model, *, name=None):
        self.name = name
        self.path = None
        if isinstance(model, ModelSource):  # the same file, perhaps another layer of it
            self.files, self.path = model.files, model.path
            self.name = model.name if name is None else name
        elif isinstance(model, (str, os.PathLike)):
            path = os.fspath(model)
            if os.path.isfile(path):
                with open(path, "rb") as f:
                    self.files = (f.read(),)
            elif os.path.exists(path) or os.path.exists(path + ".index"):
                # a TensorFlow checkpoint is several files: workers read it by path
                self.files, self.path = (), path
            else:
                raise FileNotFoundError(2, "No such file or directory", path)
        elif isinstance(model, (bytes, bytearray, memoryview)):
            self.files = (bytes(model),)
        else:
            layers = model.layers if isinstance(model, Model) else model
            Model(layers)  # checks the layers now, not on a worker
            if name is not None:
                raise ValueError("name= chooses a layer of a file; give the layer itself")
            self.files = tuple(_npz_bytes(layer) for layer in
                               ([layers] if _is_layer(layers) else layers))
            self.name = None
        h = hashlib.sha256()
        for blob in self.files:
            h.update(hashlib.sha256(blob).digest())
        h.update(repr((self.path, self.name, len(self.files))).encode())
        self.digest = h.hexdigest()

    @property
    def nbytes(self):
        """Bytes a worker receives."""
        return sum(len(blob) for blob in self.files)

    def load(self):
        """The `Model`: every layer frozen (packed once for inference; the same results)."""
        from . import io
        if self.path is not None:
            return Model(_layers_of(io, self.path, self.name))
        if len(self.files) == 1:
            return Model(_layers_of(io, self.files[0], self.name))
        return Model([io.load(blob, freeze=True) for blob in self.files])

    def __repr__(self):
        where = self.path or f"{len(self.files)} file(s), {self.nbytes} bytes"
        return f"ModelSource({where}, digest {self.digest[:12]})"


def as_source(model, *, name=None):
    """`model` itself when it is a `ModelSource` (and no name), else `ModelSource(model,
    name=name)`."""
    if isinstance(model, ModelSource) and name is None:
        return model
    return ModelSource(model, name=name)


def _layers_of(io, source, name):
    if name is not None:
        return [io.load(source, name=name, freeze=True)]
    return list(io.load_all(source, freeze=True).values())


def _npz_bytes(layer):
    import tempfile

    from . import io
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "layer.npz")
        io.save(layer, path, format="npz")
        with open(path, "rb") as f:
            return f.read()


def load_model(model, *, name=None):
    """A `Model` from a layer, a sequence of layers, a `Model`, a `ModelSource`, or a path /
    bytes of a model file (`ModelSource` describes them)."""
    if isinstance(model, Model):
        return model
    if _is_layer(model) or (isinstance(model, (list, tuple)) and model
                            and all(_is_layer(m) for m in model)):
        return Model(model)
    return as_source(model, name=name).load()


_LOADED = {}  # digest -> Model: one load per process, however many tasks it runs
_LOADED_KEPT = 8  # a long-lived worker scoring many models keeps the latest few


def cached_model(source):
    """The `Model` of a `ModelSource`, loaded once per process (engines' workers call this)."""
    model = _LOADED.pop(source.digest, None)
    if model is None:
        model = source.load()
        while len(_LOADED) >= _LOADED_KEPT:
            del _LOADED[next(iter(_LOADED))]  # the least recently used
    _LOADED[source.digest] = model
    return model


# ---------------------------------------------------------------------------------------------
# Arrow columns -> sequences

@dataclass
class Sequences:
    """Decoded rows of one table: `values` (steps, input_size) of every good row one after
    the other, `lengths` (rows,) (0 for a bad row), `starts` (rows,) where each row's steps
    begin in `values`, and `reasons` {row index: why it is bad}."""
    values: np.ndarray
    lengths: np.ndarray
    starts: np.ndarray
    reasons: dict = field(default_factory=dict)


def _column_kind(pa, typ):
    """'ragged' (a list of per-step vectors), 'tensor' (a fixed-shape tensor), 'scalars' (a
    list of numbers: one feature per step) or None for a column that holds no sequences."""
    if isinstance(typ, pa.FixedShapeTensorType):
        return "tensor" if len(typ.shape) == 2 else None
    if not (pa.types.is_list(typ) or pa.types.is_large_list(typ)
            or pa.types.is_fixed_size_list(typ)):
        return None
    inner = typ.value_type
    if pa.types.is_list(inner) or pa.types.is_large_list(inner) or \
            pa.types.is_fixed_size_list(inner):
        return "ragged" if _is_number(pa, inner.value_type) else None
    return "scalars" if _is_number(pa, inner) else None


def _is_number(pa, typ):
    return pa.types.is_floating(typ) or pa.types.is_integer(typ)


def sequence_columns(schema):
    """Names of the columns of an Arrow schema that can hold sequences."""
    pa = require_pyarrow()
    return [f.name for f in schema if _column_kind(pa, f.type) is not None]


def choose_column(schema, column=None, id_column=None):
    """The sequence column: `column` checked against the schema, or the only candidate.

    Raises:
        KeyError: a named column that is not there (the message lists the columns).
        ValueError: a column that holds no sequences, or none / several candidates and no
            `column`."""
    pa = require_pyarrow()
    names = list(schema.names)
    for what, name in (("column", column), ("id column", id_column)):
        if name is not None and name not in names:
            raise KeyError(f"no {what} {name!r} in the input; its columns are "
                           f"{', '.join(names)}")
    if column is not None and column == id_column:
        raise ValueError(f"{column!r} cannot be both the sequence column and the id column")
    if column is not None:
        if _column_kind(pa, schema.field(column).type) is None:
            raise ValueError(f"column {column!r} is {schema.field(column).type}, not a "
                             "sequence: a list of per-step vectors (list<list<float>>), a "
                             "fixed-size array or a fixed-shape tensor")
        return column
    candidates = [n for n in sequence_columns(schema) if n != id_column]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates and id_column in sequence_columns(schema):
        raise ValueError(f"the only sequence column, {id_column!r}, is the id column; give "
                         "the rows' ids in another column")
    if not candidates:
        raise ValueError(f"no column of the input holds sequences (columns: {', '.join(names)}); "
                         "a sequence is a list of per-step vectors (list<list<float>>)")
    raise ValueError(f"several columns hold sequences ({', '.join(candidates)}): choose one "
                     "with column=...")


def decode_sequences(array, input_size, dtype=np.float32):
    """The rows of an Arrow sequence column as `Sequences`.

    A row is bad (its reason recorded, its steps dropped) when it is missing (null), empty,
    has a step of another size than `input_size` or a missing value, or a NaN / infinite
    value. A column whose type fixes a feature size other than `input_size` raises
    ValueError: no row of it could be scored."""
    pa = require_pyarrow()
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks() if array.num_chunks != 1 else array.chunk(0)
    kind = _column_kind(pa, array.type)
    if kind is None:
        raise ValueError(f"a {array.type} column holds no sequences")
    n = len(array)
    reasons = {}
    if kind == "tensor":
        steps_per_row, width = array.type.shape
        if array.type.permutation not in (None, [0, 1]):
            raise ValueError("fixed-shape tensors with a permutation are not supported")
        fixed = array.storage
        row_valid = ~np.asarray(fixed.is_null().to_numpy(zero_copy_only=False), bool)
        lengths = np.where(row_valid, steps_per_row, 0).astype(np.int64)
        flat = fixed.flatten()
        step_sizes = None  # every step has `width` values
    else:
        length_array = pa.compute.list_value_length(array)
        row_valid = ~np.asarray(length_array.is_null().to_numpy(zero_copy_only=False), bool)
        lengths = np.asarray(length_array.fill_null(0).to_numpy(zero_copy_only=False), np.int64)
        steps = array.flatten()  # the steps of the non-null rows, in order
        if kind == "scalars":
            width, flat, step_sizes = 1, steps, None
        else:
            width = array.type.value_type.list_size if \
                pa.types.is_fixed_size_list(array.type.value_type) else None
            flat = steps.flatten()
            step_sizes = np.asarray(pa.compute.list_value_length(steps).fill_null(-1)
                                    .to_numpy(zero_copy_only=False), np.int64)
    if width is not None and width != input_size:
        raise ValueError(f"the column's steps have {width} features (its type fixes them), "
                         f"the model expects input_size={input_size}")
    for r in np.flatnonzero(~row_valid):
        reasons[int(r)] = "missing sequence (null)"
    for r in np.flatnonzero(row_valid & (lengths == 0)):
        reasons[int(r)] = "empty sequence"
    values = np.asarray(flat.to_numpy(zero_copy_only=False), dtype)  # nulls become NaN
    if step_sizes is None or (step_sizes == input_size).all():
        values = values.reshape(-1, input_size)
    else:
        wrong = step_sizes != input_size
        row_starts = np.cumsum(lengths) - lengths
        for r, step in _first_flagged_steps(wrong, lengths).items():
            size = step_sizes[row_starts[r] + step]
            reasons[r] = (f"step {step} is missing (null)" if size < 0 else
                          f"step {step} has {size} features, the model expects "
                          f"input_size={input_size}")
        bad = np.zeros(n, bool)
        bad[list(reasons)] = True
        keep = ~np.repeat(bad, lengths)
        sizes = np.maximum(step_sizes, 0)
        offsets = np.cumsum(sizes) - sizes  # where each step's values begin in `values`
        values = values[offsets[keep][:, None] + np.arange(input_size)]
        lengths = np.where(bad, 0, lengths)
    finite = np.isfinite(values).all(axis=1)
    if not finite.all():
        for r, step in _first_flagged_steps(~finite, lengths).items():
            reasons[r] = f"NaN, infinite or missing value at step {step}"
    if reasons:
        bad = np.zeros(n, bool)
        bad[list(reasons)] = True
        values = values[~np.repeat(bad, lengths)]
        lengths = np.where(bad, 0, lengths)
    starts = np.cumsum(lengths) - lengths
    return Sequences(values, lengths, starts, reasons)


def _first_flagged_steps(flagged, lengths):
    """{row: index within the row of its first flagged step} for the rows with one; `flagged`
    has one entry per step of rows laid out one after the other with `lengths`."""
    steps = np.flatnonzero(flagged)
    rows = np.repeat(np.arange(len(lengths)), lengths)[steps]
    found, first = np.unique(rows, return_index=True)  # steps ascend, so the first is first
    starts = np.cumsum(lengths) - lengths
    return {int(r): int(steps[i] - starts[r]) for r, i in zip(found, first)}


# ---------------------------------------------------------------------------------------------
# Batches

def plan_batches(lengths, rows, batch_size, group=True):
    """Row indices of each batch: `rows` (indices into `lengths`) cut into batches of
    `batch_size`, sorted by length first when `group` (stable: equal lengths keep input
    order), so each batch pads its rows to a similar length."""
    rows = np.asarray(rows, np.int64)
    if group:
        rows = rows[np.argsort(lengths[rows], kind="stable")]
    return [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]


def padded_steps(lengths, batches):
    """Steps a set of batches computes, padding included: sum of batch size x longest row."""
    return int(sum(len(b) * int(lengths[b].max()) for b in batches if len(b)))


def pad_batch(seqs, batch, dtype, buffer=None):
    """x (batch, longest, input_size) zero-padded, the row lengths, and each step's (row in
    batch, time) position for gathering outputs back. x is a view of `buffer` (a flat array
    of `dtype`, long enough) when given, else a new array."""
    lengths = seqs.lengths[batch]
    T, F = int(lengths.max()), seqs.values.shape[1]
    total = int(lengths.sum())
    in_batch = np.repeat(np.arange(len(batch)), lengths)
    t = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    if buffer is None:
        x = np.zeros((len(batch), T, F), dtype)
    else:
        x = buffer[:len(batch) * T * F].reshape(len(batch), T, F)
        x.fill(0)
    x.reshape(-1, F)[in_batch * T + t] = seqs.values[np.repeat(seqs.starts[batch], lengths) + t]
    return x, lengths, in_batch, t


# ---------------------------------------------------------------------------------------------
# Scoring a table

def output_type(model, reduce="last"):
    """The Arrow type of the output column: a fixed-size list of output_size numbers
    (reduce="last") or a list of them, one per valid step (reduce="all")."""
    pa = require_pyarrow()
    step = pa.list_(pa.from_numpy_dtype(model.dtype), model.output_size)
    return step if reduce == "last" else pa.list_(step)


def output_schema(model, id_type, *, id_column=None, reduce="last"):
    """The schema of `predict_table`'s result for an id column of Arrow type `id_type`."""
    pa = require_pyarrow()
    return pa.schema([(id_column or ROW_COLUMN, id_type),
                      (OUTPUT_COLUMN, output_type(model, reduce)), (ERROR_COLUMN, pa.string())])


def _check_options(reduce, batch_size):
    if reduce not in REDUCE_MODES:
        raise ValueError(f"reduce must be one of {', '.join(REDUCE_MODES)}, got {reduce!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


def predict_table(model, table, *, column=None, id_column=None, reduce="last", batch_size=64,
                  group=True, strict=False, first_row=0):
    """Score every row of an Arrow table.

    Args:
        model: a `Model` (or anything `load_model` takes; load once and reuse it for many
            tables).
        table: a `pyarrow.Table` or `RecordBatch` whose `column` holds one sequence per row:
            a list of per-step vectors (`list<list<float>>`, `list<fixed_size_list>`), a
            fixed-size array (`fixed_size_list<fixed_size_list>`), a fixed-shape tensor
            (time, features), or a list of numbers for a model with input_size 1.
        column: the sequence column; None takes the only one there is.
        id_column: the column that identifies rows, copied to the output; None numbers the
            rows (`first_row` + position) in a column "row".
        reduce: "last" (the output at each row's last valid step) or "all" (the outputs of
            every valid step, a list per row).
        batch_size: rows per call of the model.
        group: batch rows of similar length together (less padding; the same results).
        strict: raise `BadRowError` at the first bad row instead of reporting it.
        first_row: the input row number of the table's first row (for "row" ids and
            reports); None: unknown (an engine's batch), which needs `id_column`.

    Returns:
        (result, bad_rows, stats): `result` a table with the id column, "output" (null for a
        bad row) and "error" (why a row is bad, null for good rows), one row per input row in
        input order; `bad_rows` a list of `BadRow`; `stats` a `ScoreStats`.

    Raises:
        BadRowError: with strict=True, the first bad row.
        KeyError / ValueError: a missing column, a column that holds no sequences, bad
            options.
    """
    pa = require_pyarrow()
    model = load_model(model)
    _check_options(reduce, batch_size)
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    column = choose_column(table.schema, column, id_column)
    n = table.num_rows
    if id_column is None and first_row is None:
        raise ValueError("id_column is required when the rows' numbers are unknown")
    ids = table.column(id_column) if id_column is not None else \
        pa.array(np.arange(first_row, first_row + n, dtype=np.int64))
    seqs = decode_sequences(table.column(column), model.input_size, model.dtype)
    bad_rows = [BadRow(ids[r].as_py(), None if first_row is None else first_row + r, why)
                for r, why in sorted(seqs.reasons.items())]
    if strict and bad_rows:
        raise BadRowError(bad_rows[0].id, bad_rows[0].row, bad_rows[0].reason)
    good = np.flatnonzero(seqs.lengths > 0)
    batches = plan_batches(seqs.lengths, good, batch_size, group)
    F = model.output_size
    if reduce == "last":
        result = np.zeros((n, F), model.dtype)
    else:
        out_starts = np.cumsum(seqs.lengths) - seqs.lengths
        result = np.zeros((int(seqs.lengths.sum()), F), model.dtype)
    # one input and one output block for the chunk, reused by every batch: allocating them
    # per batch costs fresh pages where the allocator returns freed memory at once
    largest = max((len(b) * int(seqs.lengths[b].max()) for b in batches), default=0)
    x_block = np.empty(largest * model.input_size, model.dtype)
    out_block = np.empty(largest * F, model.dtype)
    for batch in batches:
        x, lengths, in_batch, t = pad_batch(seqs, batch, model.dtype, x_block)
        out = model(x, lengths, out=out_block[:x.shape[0] * x.shape[1] * F].reshape(
            x.shape[0], x.shape[1], F))
        if reduce == "last":
            result[batch] = out[np.arange(len(batch)), lengths - 1]
        else:
            result[np.repeat(out_starts[batch], lengths) + t] = out[in_batch, t]
    valid = seqs.lengths > 0
    output = _output_array(pa, result, seqs.lengths, valid, reduce, F)
    errors = pa.array([seqs.reasons.get(r) for r in range(n)], pa.string()) if seqs.reasons \
        else pa.nulls(n, pa.string())
    result_table = pa.table({id_column or ROW_COLUMN: ids, OUTPUT_COLUMN: output,
                             ERROR_COLUMN: errors})
    ungrouped = plan_batches(seqs.lengths, good, batch_size, group=False)
    stats = ScoreStats(rows=n, bad_rows=len(bad_rows), steps=int(seqs.lengths.sum()),
                       computed_steps=padded_steps(seqs.lengths, batches),
                       ungrouped_steps=padded_steps(seqs.lengths, ungrouped),
                       batches=len(batches))
    return result_table, bad_rows, stats


def _validity(pa, valid):
    return None if valid.all() else pa.array(valid, pa.bool_()).buffers()[1]


def _output_array(pa, result, lengths, valid, reduce, F):
    values = pa.array(result.reshape(-1))
    steps = pa.FixedSizeListArray.from_arrays(values, F)
    if reduce == "last":
        # a bad row's output is null (its zeros stay hidden under the validity bitmap)
        return pa.Array.from_buffers(steps.type, len(lengths), [_validity(pa, valid)],
                                     children=[values])
    offsets = np.zeros(len(lengths) + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.Array.from_buffers(pa.list_(steps.type), len(lengths),
                                 [_validity(pa, valid), pa.py_buffer(offsets)],
                                 children=[steps])


# ---------------------------------------------------------------------------------------------
# Parquet in, Parquet out

def parquet_files(path):
    """The Parquet files of a path: the file itself, or a directory's *.parquet files (any
    depth, sorted; hidden and underscore names skipped, as Spark and Arrow write them)."""
    path = os.fspath(path)
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise FileNotFoundError(2, "No such file or directory", path)
    found = []
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        found += [os.path.join(root, f) for f in sorted(files)
                  if f.endswith(".parquet") and not f.startswith((".", "_"))]
    if not found:
        raise FileNotFoundError(2, "No .parquet files in the directory", path)
    return found


@dataclass(frozen=True)
class Chunk:
    """One unit of work: rows [start, stop) of input file `file` (index into the file list),
    `row` the input row number of its first row (counted over all files)."""
    file: int
    index: int
    start: int
    stop: int
    row: int

    @property
    def key(self):
        """The chunk's name in the manifest and its part file's name."""
        return f"{self.file:05d}-{self.index:06d}"


def plan_chunks(files, chunk_rows):
    """The chunks of a list of Parquet files, `chunk_rows` rows each (a file's last may be
    shorter), from the files' metadata alone."""
    pq = require_pyarrow().parquet
    chunks, row = [], 0
    for i, path in enumerate(files):
        n = pq.ParquetFile(path).metadata.num_rows
        for index, start in enumerate(range(0, n, chunk_rows)):
            stop = min(n, start + chunk_rows)
            chunks.append(Chunk(i, index, start, stop, row + start))
        row += n
    return chunks


def read_chunks(files, chunks, columns, chunk_rows):
    """Yield (chunk, table) for the given chunks (any subset of `plan_chunks(files,
    chunk_rows)`, in order), reading each file once, front to back, up to its last wanted
    chunk."""
    by_file = {}
    for chunk in chunks:
        by_file.setdefault(chunk.file, {})[chunk.index] = chunk
    for i in sorted(by_file):
        yield from _file_chunks(files[i], by_file[i], columns, chunk_rows)


def _file_chunks(path, wanted, columns, chunk_rows):
    pa = require_pyarrow()
    last, index = max(wanted), 0
    buffer, have = [], 0
    # record batches may end at row-group boundaries: cut chunks out of what has arrived
    for batch in pa.parquet.ParquetFile(path).iter_batches(batch_size=chunk_rows,
                                                          columns=columns):
        buffer.append(batch)
        have += batch.num_rows
        while have >= chunk_rows:
            table = pa.Table.from_batches(buffer)
            if index in wanted:
                yield wanted[index], table.slice(0, chunk_rows)
            if index == last:
                return
            index += 1
            rest = table.slice(chunk_rows)
            buffer, have = rest.to_batches(), rest.num_rows
    if have and index in wanted:
        yield wanted[index], pa.Table.from_batches(buffer)


@dataclass(frozen=True)
class ChunkRead:
    """A chunk's rows as a worker that sees the input files reads them itself: rows [skip,
    skip + rows) of row groups `row_groups` of the Parquet file `path`. A ray or dask pool
    made with read_in_workers=True (Dask's default on a cluster on this machine) is sent
    this instead of the rows: the driver then neither reads nor copies the sequences.
    `plan_reads` makes them.

    Args:
        path: the Parquet file (absolute: the worker's working directory may differ).
        row_groups: the consecutive row groups that hold the chunk.
        skip: rows of the first of them before the chunk.
        rows: the chunk's rows.
        columns: the columns to read (the sequence column, the id column).

    Example:
        >>> read = ChunkRead("/data/in.parquet", (0, 1), 100, 4096, ("steps", "id"))
        >>> read.read().num_rows  # rows 100-4195 of row groups 0 and 1 (4,096 rows each)
        4096
    """
    path: str
    row_groups: tuple
    skip: int
    rows: int
    columns: tuple

    def read(self):
        """The chunk's rows: a `pyarrow.Table` of `columns`."""
        pq = require_pyarrow().parquet
        table = pq.ParquetFile(self.path).read_row_groups(list(self.row_groups),
                                                          columns=list(self.columns))
        return table.slice(self.skip, self.rows)


def chunk_table(rows):
    """A worker's chunk as a table: `rows` a table (returned as it is), or a `ChunkRead` to
    read here.

    Example:
        >>> chunk_table(table) is table and chunk_table(read).num_rows == read.rows
        True
    """
    return rows.read() if isinstance(rows, ChunkRead) else rows


def plan_reads(path, chunks, columns, limit=2.0):
    """A `ChunkRead` for each of `chunks` (chunks of the file `path`), or None when reading
    them by whole row groups would decode more than `limit` times their rows (row groups much
    longer than the chunks: reading the file front to back once is cheaper then).

    Args:
        path: a Parquet file.
        chunks: `Chunk`s of that file (from `plan_chunks`), in order.
        columns: the columns a worker reads.
        limit: the most rows decoded per chunk row, in total.

    Example:
        >>> files = ["/data/in.parquet"]  # 10,000 rows in row groups of 4,096
        >>> [r.row_groups for r in plan_reads(files[0], plan_chunks(files, 4096), ["steps"])]
        [(0,), (1,), (2,)]
    """
    md = require_pyarrow().parquet.ParquetFile(path).metadata
    starts = np.cumsum([0] + [md.row_group(g).num_rows for g in range(md.num_row_groups)])
    reads, decoded = [], 0
    for chunk in chunks:
        first = int(np.searchsorted(starts, chunk.start, side="right")) - 1
        last = int(np.searchsorted(starts, chunk.stop - 1, side="right")) - 1
        decoded += int(starts[last + 1] - starts[first])
        reads.append(ChunkRead(os.path.abspath(path), tuple(range(first, last + 1)),
                               chunk.start - int(starts[first]), chunk.stop - chunk.start,
                               tuple(columns)))
    if decoded > limit * sum(c.stop - c.start for c in chunks):
        return None
    return reads


def _chunk_rows(files, chunks, columns, chunk_rows, in_workers, counter):
    """(chunk, rows) for the given chunks in order: rows a table read here, or, with
    `in_workers`, a `ChunkRead` for each file whose row groups suit it (counted in
    counter[0])."""
    if not in_workers:
        yield from read_chunks(files, chunks, columns, chunk_rows)
        return
    by_file = {}
    for chunk in chunks:
        by_file.setdefault(chunk.file, []).append(chunk)
    for i in sorted(by_file):
        reads = plan_reads(files[i], by_file[i], columns)
        if reads is None:
            yield from read_chunks(files, by_file[i], columns, chunk_rows)
            continue
        for chunk, read in zip(by_file[i], reads):
            counter[0] += 1
            yield chunk, read


def read_ahead(items, depth=2):
    """Iterate `items` from a background thread, up to `depth` items ahead: reading and
    decompressing Parquet (which releases the GIL) overlaps with scoring. Errors are raised
    where the item would have been; closing the iterator stops the thread."""
    import queue
    import threading
    box = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(entry):
        while not stop.is_set():
            try:
                box.put(entry, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False

    def fill():
        try:
            for item in items:
                if not put((None, item)):
                    return
            put((None, end))
        except BaseException as exc:  # handed to the consumer
            put((exc, None))

    thread = threading.Thread(target=fill, name="fastrnn-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            error, item = box.get()
            if error is not None:
                raise error
            if item is end:
                return
            yield item
    finally:
        stop.set()
        thread.join()


class _Manifest:
    """Finished chunks of an output directory, rewritten atomically after each part file."""

    def __init__(self, directory, settings):
        self.path = os.path.join(directory, MANIFEST)
        self.settings = settings
        self.done = {}

    def load(self):
        with open(self.path, encoding="utf-8") as f:
            data = json.load(f)
        if data.get("version") != _MANIFEST_VERSION:
            raise ValueError(f"{self.path}: unknown manifest version {data.get('version')}")
        changed = {k: (data["settings"].get(k), v) for k, v in self.settings.items()
                   if data["settings"].get(k) != v}
        if changed:
            what = "; ".join(f"{k}: {old!r} then, {new!r} now" for k, (old, new) in
                             changed.items())
            raise ValueError(f"cannot resume {os.path.dirname(self.path)}: it was started with "
                             f"other settings ({what})")
        self.done = data["done"]

    def add(self, chunk, part, stats, bad_rows):
        self.done[chunk.key] = {"rows": [chunk.row, chunk.row + chunk.stop - chunk.start],
                                "part": part, "stats": stats.as_dict(),
                                "bad_rows": [[_jsonable(b.id), b.row, b.reason]
                                             for b in bad_rows]}
        self.save()

    def save(self):
        _write_atomically(self.path, json.dumps(
            {"version": _MANIFEST_VERSION, "settings": self.settings, "done": self.done},
            indent=0).encode())


def _jsonable(value):
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _write_atomically(path, data):
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_part(pa, table, directory, key):
    name = f"part-{key}.parquet"
    tmp = os.path.join(directory, f".{name}.tmp-{os.getpid()}")
    # no dictionary for the outputs: distinct floats never repeat, and trying costs ~7x the
    # plain write's CPU (13 vs 2 ms per 4,096 rows of 64 floats) and 50% more bytes
    pa.parquet.write_table(table, tmp, use_dictionary=[
        n for n in table.column_names if n != OUTPUT_COLUMN])
    os.replace(tmp, os.path.join(directory, name))  # a part file is whole or absent
    return name


@dataclass
class PredictReport:
    """What `predict_parquet` did: `stats` (`ScoreStats`, this run and resumed parts
    together), `bad_rows` (every `BadRow`), `parts` (part files written by this run),
    `resumed_chunks` (chunks found finished), `new_rows` (rows this run scored), `seconds`
    (this run's time), `output` (the directory), `read_in_workers` (chunks whose rows the
    engine's workers read from the input files themselves)."""
    stats: ScoreStats
    bad_rows: list
    parts: list
    resumed_chunks: int
    new_rows: int
    seconds: float
    output: str
    read_in_workers: int = 0


def predict_parquet(model, input, output, *, column=None, id_column=None, reduce="last",
                    batch_size=64, chunk_rows=4096, group=True, strict=False, resume=False,
                    engine="local", workers=None, threads=None, address=None, name=None,
                    progress=None, on_bad_row=None, _after_chunk=None):
    """Score a Parquet file or directory into a directory of Parquet part files.

    The input is cut into chunks of `chunk_rows` rows, read in this process (or, by ray / dask
    workers on this machine, in the workers: `ChunkRead`); each chunk is scored by the engine
    (`predict_table`: rows grouped by length within the chunk) and written as
    `part-FFFFF-CCCCCC.parquet` (a temporary name renamed when complete), then recorded in
    the directory's manifest (`_fastrnn_predict.json`). With `resume=True` the chunks the
    manifest lists are skipped, so an interrupted run finishes without duplicating or losing
    rows. Reading the output directory (`pyarrow.parquet.read_table(output)`) gives every
    input row once: id, output, error.

    Args:
        model: a model file (path; several recurrent layers run as a stack unless `name`
            picks one), its bytes, a layer or a sequence of layers.
        input: a Parquet file or a directory of them.
        output: the directory to write (created; it must be empty or absent unless
            `resume`).
        column, id_column, reduce, batch_size, group, strict: as for `predict_table`.
        chunk_rows: rows per chunk: the unit of work, of resuming and of length grouping.
        resume: continue the run recorded in `output` (same input, model and settings).
        engine: "local" (this process, fastrnn's threads), "ray" or "dask" (chunks scored by
            the engine's workers, each loading the model once), or an open
            `fastrnn.ray.ChunkPool` / `fastrnn.dask.ChunkPool` to reuse across runs (left
            open; its model is the one it was made with).
        workers: ray / dask: worker processes (default 2); local: ignored.
        threads: fastrnn threads per worker (default: fastrnn's setting locally, 1 per worker
            on ray / dask).
        address: ray / dask: the cluster to connect to (None starts a local one).
        name: the layer of a model file with several to run alone.
        progress: a callable (done_rows, total_rows) after each chunk, or None.
        on_bad_row: a callable (BadRow) for each bad row as it is found, or None.

    Returns:
        A `PredictReport`.

    Raises:
        BadRowError: strict=True and a bad row.
        FileExistsError: `output` holds files and resume=False.
        ValueError / KeyError: bad options, columns or a resume with other settings.
    """
    pa = require_pyarrow()
    _check_options(reduce, batch_size)
    if isinstance(engine, str) and engine not in ENGINES or \
            not isinstance(engine, str) and not hasattr(engine, "run"):
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise ValueError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
    began = time.perf_counter()
    source = as_source(model, name=name)
    files = parquet_files(input)
    schema = pa.parquet.read_schema(files[0])
    column = choose_column(schema, column, id_column)
    output = os.fspath(output)
    settings = {"input": [os.path.abspath(f) for f in files], "model": source.digest,
                "column": column, "id_column": id_column, "reduce": reduce,
                "chunk_rows": chunk_rows}
    manifest = _Manifest(output, settings)
    _prepare_output(output, manifest, resume)
    if not manifest.done:
        manifest.save()  # the directory is a run's from the start (an empty input included)
    chunks = plan_chunks(files, chunk_rows)
    total = chunks[-1].row + chunks[-1].stop - chunks[-1].start if chunks else 0
    done = {c.key for c in chunks if c.key in manifest.done
            and os.path.exists(os.path.join(output, manifest.done[c.key]["part"]))}
    stats, bad_rows = ScoreStats(), []
    for key in sorted(done):
        entry = manifest.done[key]
        stats = stats + ScoreStats(**entry["stats"])
        bad_rows += [BadRow(*b) for b in entry["bad_rows"]]
    todo = [c for c in chunks if c.key not in done]
    done_rows = first_rows = stats.rows
    if progress is not None:
        progress(done_rows, total)
    options = dict(column=column, id_column=id_column, reduce=reduce, batch_size=batch_size,
                   group=group, strict=strict)
    columns = [column] + ([id_column] if id_column not in (None, column) else [])
    parts = []
    in_workers = [0]
    with _executor(engine, source, workers, threads, address) as pool:
        items = _chunk_rows(files, todo, columns, chunk_rows, pool.reads_files, in_workers)
        for chunk, (table, chunk_bad, chunk_stats) in pool.run(read_ahead(items), options):
            for bad in chunk_bad:
                if on_bad_row is not None:
                    on_bad_row(bad)
            parts.append(_write_part(pa, table, output, chunk.key))
            manifest.add(chunk, parts[-1], chunk_stats, chunk_bad)
            stats, bad_rows = stats + chunk_stats, bad_rows + chunk_bad
            done_rows += chunk_stats.rows
            if progress is not None:
                progress(done_rows, total)
            if _after_chunk is not None:
                _after_chunk(chunk)  # tests: an interruption between chunks
    return PredictReport(stats, bad_rows, parts, len(done), done_rows - first_rows,
                         time.perf_counter() - began, output, in_workers[0])


def _prepare_output(output, manifest, resume):
    if os.path.exists(output) and not os.path.isdir(output):
        raise FileExistsError(17, "the output must be a directory; a file is there", output)
    os.makedirs(output, exist_ok=True)
    present = [n for n in os.listdir(output) if not n.startswith(".")]
    if not resume:
        if present:
            raise FileExistsError(17, "the output directory is not empty (resume=True "
                                  "continues the run recorded there)", output)
        return
    if os.path.exists(manifest.path):
        manifest.load()
    elif present:
        raise FileExistsError(17, f"cannot resume: files but no manifest ({MANIFEST}) in the "
                              "output directory", output)
    for n in os.listdir(output):  # parts a killed run left half-written
        if n.startswith(".part-") and ".tmp-" in n:
            os.remove(os.path.join(output, n))


class _executor:
    """A context manager giving the chosen engine: `run(items, options)` -> iterator of (chunk,
    predict_table's result), and `reads_files` (whether its workers can read the input
    files themselves, given `ChunkRead`s)."""

    def __init__(self, engine, source, workers, threads, address):
        self.engine, self.source = engine, source
        self.workers, self.threads, self.address = workers, threads, address
        self.pool = None
        self.run, self.reads_files = self._local, False

    def __enter__(self):
        if not isinstance(self.engine, str):
            self.pool = self.engine  # an open pool: the caller's to close
        elif self.engine != "local":
            if self.engine == "ray":
                from .ray import ChunkPool
            else:
                from .dask import ChunkPool
            self.pool = ChunkPool(self.source, workers=self.workers or 2,
                                  threads=self.threads or 1, address=self.address)
        if self.pool is not None:
            self.run = self.pool.run
            self.reads_files = bool(getattr(self.pool, "reads_files", False))
        return self

    def _local(self, chunks, options):
        from . import get_num_threads, set_num_threads
        before = get_num_threads()
        if self.threads:
            set_num_threads(self.threads)
        try:
            model = cached_model(self.source)
            for chunk, table in chunks:
                yield chunk, predict_table(model, table, first_row=chunk.row, **options)
        finally:
            set_num_threads(before)

    def __exit__(self, *exc):
        if self.pool is not None and self.pool is not self.engine:
            self.pool.close()


# ---------------------------------------------------------------------------------------------
# Progress

class Progress:
    """Rows done, rows/s and the time left, on `stream`: a bar redrawn in place on a terminal,
    a plain line at most every `interval` seconds otherwise (logs). Call it with
    (done_rows, total_rows); `finish()` ends the line.

    Args:
        stream: where to write (default sys.stderr).
        interval: seconds between log lines when `stream` is not a terminal.
        tty: force the bar (True) or log lines (False); None asks the stream.
    """

    def __init__(self, stream=None, *, interval=10.0, tty=None, width=30):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval, self.width = interval, width
        self.began = time.monotonic()
        self.first = None  # rows already done when this run started (resume)
        self.last_line = None
        self.done = self.total = 0

    def __call__(self, done, total):
        now = time.monotonic()
        if self.first is None:
            self.first = done
        self.done, self.total = done, total
        if self.tty:
            self.stream.write("\r" + self.line(now))
            self.stream.flush()
        elif self.last_line is None or now - self.last_line >= self.interval or done >= total:
            self.last_line = now
            self.stream.write(self.line(now) + "\n")
            self.stream.flush()

    def line(self, now=None):
        """The current text: '[####    ] 1,234/10,000 rows  567 rows/s  ETA 0:00:15'."""
        now = time.monotonic() if now is None else now
        elapsed = max(now - self.began, 1e-9)
        rate = (self.done - (self.first or 0)) / elapsed
        left = self.total - self.done
        eta = _clock(left / rate) if rate > 0 else "?" if left else _clock(0)
        share = self.done / self.total if self.total else 1.0
        text = (f"{self.done:,}/{self.total:,} rows ({share:.0%})  {rate:,.0f} rows/s  "
                f"ETA {eta}")
        if not self.tty:
            return text
        filled = int(round(share * self.width))
        return f"[{'#' * filled}{' ' * (self.width - filled)}] {text}  "

    def finish(self):
        """End the bar's line (a terminal) so later output starts on a new one."""
        if self.tty and self.first is not None:
            self.stream.write("\n")
            self.stream.flush()


def _clock(seconds):
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


__all__ = ["Model", "ModelSource", "BadRow", "BadRowError", "ScoreStats", "PredictReport",
           "Progress", "Chunk", "Sequences", "as_source", "load_model", "cached_model",
           "predict_table", "predict_parquet", "decode_sequences", "choose_column",
           "sequence_columns", "plan_batches", "plan_chunks", "read_chunks", "read_ahead",
           "ChunkRead", "chunk_table", "plan_reads",
           "padded_steps", "pad_batch", "parquet_files", "output_type", "output_schema",
           "require_pyarrow"]
