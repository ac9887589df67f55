"""Batch scoring (fastrnn.predict, `fastrnn predict`): every row's output is bitwise the one a
direct call of the layer on that row alone gives, whatever the batching; bad rows are reported
with their ids; Parquet in and out; an interrupted run resumes with every id exactly once."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow", reason="batch scoring needs pyarrow (fastrnn[predict])")
pq = pytest.importorskip("pyarrow.parquet")

import fastrnn  # noqa: E402
from fastrnn import predict as P  # noqa: E402
from fastrnn.__main__ import main  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ragged(rows, features, rng, max_length=30, dtype=np.float32):
    """(list of (T, F) arrays, list<list<float>> Arrow array of them)."""
    lengths = rng.integers(1, max_length + 1, rows)
    seqs = [rng.standard_normal((n, features)).astype(dtype) for n in lengths]
    return seqs, pa.array([s.tolist() for s in seqs], pa.list_(pa.list_(pa.from_numpy_dtype(
        np.dtype(dtype)))))


def direct(layers, seq, reduce="last"):
    """One row scored alone: each layer called on (1, T, F), no padding, no lengths."""
    x = seq[None]
    for layer in layers:
        x, _ = layer(x)
    return x[0, -1] if reduce == "last" else x[0]


def outputs_of(table, reduce="last"):
    col = table.column(P.OUTPUT_COLUMN).to_pylist()
    return [None if v is None else np.array(v, dtype=np.float32) for v in col]


def assert_bitwise(got, want):
    assert got is not None
    want = np.asarray(want)
    assert got.shape == want.shape
    assert np.array_equal(got.view(np.uint32), want.astype(np.float32).view(np.uint32))


LAYERS = {
    "lstm": lambda: [fastrnn.LSTM(5, 12, seed=1)],
    "gru_bidirectional_2": lambda: [fastrnn.GRU(5, 7, bidirectional=True, num_layers=2,
                                                seed=2)],
    "lstm_carry_reverse": lambda: [fastrnn.LSTM(5, 6, masked_output="carry", reverse=True,
                                                seed=3)],
    "stack_lstm_gru": lambda: [fastrnn.LSTM(5, 9, seed=4), fastrnn.GRU(9, 4, seed=5)],
}


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("reduce", ["last", "all"])
@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_batched_rows_are_bitwise_the_rows_scored_alone(kind, reduce, threads):
    layers = LAYERS[kind]()
    rng = np.random.default_rng(len(kind))
    seqs, column = ragged(57, 5, rng)
    table = pa.table({"steps": column})
    before = fastrnn.get_num_threads()
    fastrnn.set_num_threads(threads)
    try:
        want = [direct(layers, s, reduce) for s in seqs]
        for group in (True, False):
            for batch_size in (1, 8, 64):
                out, bad, stats = P.predict_table(P.Model(layers), table, reduce=reduce,
                                                  batch_size=batch_size, group=group)
                assert bad == [] and stats.rows == 57
                for got, w in zip(outputs_of(out), want):
                    assert_bitwise(got, w)
    finally:
        fastrnn.set_num_threads(before)
    assert out.column("row").to_pylist() == list(range(57))
    assert out.column(P.ERROR_COLUMN).null_count == 57


def _forms(seqs):
    """The same rows in every column layout predict_table reads."""
    f32 = pa.float32()
    n, F = len(seqs), seqs[0].shape[1]
    nested = [s.tolist() for s in seqs]
    forms = {
        "list<list<float32>>": pa.array(nested, pa.list_(pa.list_(f32))),
        "large_list<list<float64>>": pa.array(nested, pa.large_list(pa.list_(pa.float64()))),
        "list<fixed_size_list>": pa.array(nested, pa.list_(pa.list_(f32, F))),
    }
    T = seqs[0].shape[0]
    if all(s.shape[0] == T for s in seqs):
        forms["fixed_size_list<fixed_size_list>"] = pa.array(nested, pa.list_(pa.list_(f32, F), T))
        forms["fixed_shape_tensor"] = pa.FixedShapeTensorArray.from_numpy_ndarray(
            np.stack(seqs))
    return forms


@pytest.mark.parametrize("equal_lengths", [False, True])
def test_every_column_layout_gives_the_same_bits(equal_lengths):
    layer = fastrnn.GRU(3, 5, seed=0)
    rng = np.random.default_rng(7)
    seqs = [rng.standard_normal((6 if equal_lengths else rng.integers(1, 9), 3))
            .astype(np.float32) for _ in range(11)]
    forms = _forms(seqs)
    assert len(forms) == (5 if equal_lengths else 3)
    for name, column in forms.items():
        out, bad, _ = P.predict_table(layer, pa.table({"x": column}), batch_size=4)
        assert bad == [], name
        for got, s in zip(outputs_of(out), seqs):
            assert_bitwise(got, direct([layer], s))


def test_one_feature_models_read_a_list_of_numbers():
    layer = fastrnn.LSTM(1, 4, seed=0)
    rows = [[0.5, -1.0, 2.0], [3.0], [1, 2]]
    out, bad, _ = P.predict_table(layer, pa.table({"x": pa.array(rows)}))
    assert bad == []
    for got, r in zip(outputs_of(out), rows):
        assert_bitwise(got, direct([layer], np.array(r, np.float32)[:, None]))


def test_bad_rows_are_reported_with_their_ids_and_the_others_scored():
    layer = fastrnn.LSTM(2, 3, seed=0)
    ok = [[1.0, 2.0], [3.0, 4.0]]
    rows = [ok, [[1.0, 2.0], [3.0]], [[1.0, float("nan")]], [], None, [[1.0, float("inf")]],
            [[1.0, 2.0], None], [[1.0, None]], [[0.5, 0.25]], [[1.0, 2.0, 3.0]]]
    ids = [f"r{i}" for i in range(len(rows))]
    table = pa.table({"id": ids, "x": pa.array(rows, pa.list_(pa.list_(pa.float64())))})
    out, bad, stats = P.predict_table(layer, table, id_column="id", batch_size=3,
                                      first_row=100)
    reasons = {b.id: b.reason for b in bad}
    assert sorted(reasons) == ["r1", "r2", "r3", "r4", "r5", "r6", "r7", "r9"]
    assert reasons["r1"] == "step 1 has 1 features, the model expects input_size=2"
    assert reasons["r9"] == "step 0 has 3 features, the model expects input_size=2"
    assert "NaN" in reasons["r2"] and "NaN" in reasons["r5"] and "NaN" in reasons["r7"]
    assert reasons["r3"] == "empty sequence" and reasons["r4"] == "missing sequence (null)"
    assert reasons["r6"] == "step 1 is missing (null)"
    assert [b.row for b in bad] == [101, 102, 103, 104, 105, 106, 107, 109]
    assert stats.rows == 10 and stats.bad_rows == 8
    assert out.column("id").to_pylist() == ids
    errors = out.column(P.ERROR_COLUMN).to_pylist()
    assert [e is None for e in errors] == [True] + [False] * 7 + [True, False]
    got = outputs_of(out)
    assert [g is None for g in got] == [e is not None for e in errors]
    assert_bitwise(got[0], direct([layer], np.array(ok, np.float32)))
    assert_bitwise(got[8], direct([layer], np.array([[0.5, 0.25]], np.float32)))
    with pytest.raises(P.BadRowError, match="r1") as exc:
        P.predict_table(layer, table, id_column="id", strict=True)
    assert exc.value.row_id == "r1" and exc.value.row == 1


def test_bad_steps_are_located_within_their_rows():
    layer = fastrnn.GRU(2, 3, seed=2)
    good = [[0.1, 0.2]] * 4
    rows = [good, good[:3] + [[1.0]], good, good[:2] + [[float("nan"), 0.0]] + good,
            [[1.0, 2.0, 3.0]] + good, good[:1]]
    out, bad, _ = P.predict_table(layer, pa.table({"x": pa.array(rows)}), batch_size=2)
    assert [(b.row, b.reason) for b in bad] == [
        (1, "step 3 has 1 features, the model expects input_size=2"),
        (3, "NaN, infinite or missing value at step 2"),
        (4, "step 0 has 3 features, the model expects input_size=2")]
    for i in (0, 2, 5):
        assert_bitwise(outputs_of(out)[i], direct([layer], np.array(rows[i], np.float32)))


def test_reduce_all_keeps_bad_rows_null():
    layer = fastrnn.GRU(2, 3, seed=1)
    rows = [[[1.0, 2.0], [0.0, 1.0]], [], [[1.0, 1.0]]]
    out, bad, _ = P.predict_table(layer, pa.table({"x": pa.array(rows)}), reduce="all")
    assert [b.row for b in bad] == [1]
    got = outputs_of(out)
    assert got[1] is None
    assert_bitwise(got[0], direct([layer], np.array(rows[0], np.float32), "all"))
    assert_bitwise(got[2], direct([layer], np.array(rows[2], np.float32), "all"))
    assert out.schema.field(P.OUTPUT_COLUMN).type == P.output_type(P.Model(layer), "all")


def test_a_column_whose_type_fixes_another_feature_size_is_an_error():
    layer = fastrnn.LSTM(3, 2)
    column = pa.array([[[1.0, 2.0]]], pa.list_(pa.list_(pa.float32(), 2)))
    with pytest.raises(ValueError, match="2 features .* input_size=3"):
        P.predict_table(layer, pa.table({"x": column}))


def test_columns_are_found_or_named_clearly():
    layer = fastrnn.LSTM(1, 2)
    seq = pa.array([[[1.0]]])
    with pytest.raises(KeyError, match="no column 'y' in the input; its columns are id, x"):
        P.predict_table(layer, pa.table({"id": [1], "x": seq}), column="y")
    with pytest.raises(KeyError, match="no id column 'key'"):
        P.predict_table(layer, pa.table({"id": [1], "x": seq}), id_column="key")
    with pytest.raises(ValueError, match="several columns hold sequences \\(a, b\\)"):
        P.predict_table(layer, pa.table({"a": seq, "b": seq}))
    with pytest.raises(ValueError, match="'id' is int64, not a sequence"):
        P.predict_table(layer, pa.table({"id": [1], "x": seq}), column="id")
    with pytest.raises(ValueError, match="no column of the input holds sequences"):
        P.predict_table(layer, pa.table({"id": [1]}))
    with pytest.raises(ValueError, match="reduce must be one of last, all"):
        P.predict_table(layer, pa.table({"x": seq}), reduce="mean")
    with pytest.raises(ValueError, match="batch_size"):
        P.predict_table(layer, pa.table({"x": seq}), batch_size=0)


def test_padding_counts():
    lengths = np.array([1, 10, 1, 10, 5])
    grouped = P.plan_batches(lengths, np.arange(5), 2, group=True)
    assert [b.tolist() for b in grouped] == [[0, 2], [4, 1], [3]]
    assert P.padded_steps(lengths, grouped) == 2 * 1 + 2 * 10 + 10
    ungrouped = P.plan_batches(lengths, np.arange(5), 2, group=False)
    assert P.padded_steps(lengths, ungrouped) == 2 * 10 + 2 * 10 + 5
    layer = fastrnn.LSTM(1, 2)
    rows = [[[0.0]] * n for n in lengths]
    _, _, stats = P.predict_table(layer, pa.table({"x": rows}), batch_size=2)
    assert (stats.steps, stats.computed_steps, stats.ungrouped_steps) == (27, 32, 45)
    assert stats.padding_ratio == pytest.approx(5 / 32)
    assert stats.ungrouped_padding_ratio == pytest.approx(18 / 45)
    assert (stats + stats).computed_steps == 64


# ---------------------------------------------------------------------------------------------
# Models from files

def test_a_file_with_several_layers_runs_as_a_stack_or_one_by_name(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = torch.nn.LSTM(4, 6, batch_first=True)
            self.decoder = torch.nn.GRU(6, 3, batch_first=True)

    path = tmp_path / "net.pt"
    torch.save(Net().state_dict(), path)
    encoder, decoder = (fastrnn.load(path, name=n) for n in ("encoder", "decoder"))
    rng = np.random.default_rng(0)
    seqs, column = ragged(9, 4, rng, max_length=12)
    table = pa.table({"x": column})
    for source in (str(path), path.read_bytes(), P.ModelSource(path)):
        model = P.load_model(source)
        assert [type(layer).__name__ for layer in model.layers] == ["LSTM", "GRU"]
        out, _, _ = P.predict_table(model, table, batch_size=4)
        for got, s in zip(outputs_of(out), seqs):
            assert_bitwise(got, direct([encoder, decoder], s))
    for one in (P.load_model(path, name="encoder"), P.as_source(P.ModelSource(path),
                                                                name="encoder").load()):
        out, _, _ = P.predict_table(one, table)
        for got, s in zip(outputs_of(out), seqs):
            assert_bitwise(got, direct([encoder], s))
    with pytest.raises(ValueError, match="cannot run these layers as a stack.*name="):
        P.Model([decoder, encoder])


def test_model_source_of_layers_in_memory_loads_the_same_layers():
    layers = [fastrnn.LSTM(3, 4, seed=0), fastrnn.GRU(4, 2, bidirectional=True, seed=1)]
    source = P.ModelSource(layers)
    assert source.digest == P.ModelSource(layers).digest
    assert source.digest != P.ModelSource(layers[:1]).digest
    loaded = source.load()
    rng = np.random.default_rng(1)
    seqs, column = ragged(5, 3, rng)
    a, _, _ = P.predict_table(loaded, pa.table({"x": column}))
    for got, s in zip(outputs_of(a), seqs):
        assert_bitwise(got, direct(layers, s))
    with pytest.raises(TypeError, match="fastrnn.LSTM / GRU layers"):
        P.Model([layers[0], "not a layer"])
    with pytest.raises(FileNotFoundError):
        P.ModelSource("/nonexistent/model.npz")


@pytest.mark.parametrize("scheme", ["int8", "bf16"])
def test_quantized_layers_score_as_they_run(scheme):
    layer = fastrnn.LSTM(3, 16, seed=1).quantize(scheme)
    rng = np.random.default_rng(2)
    seqs, column = ragged(13, 3, rng)
    for model in (layer, P.ModelSource(layer)):  # in memory, and through its .npz bytes
        out, _, _ = P.predict_table(P.load_model(model), pa.table({"x": column}), batch_size=4)
        for got, s in zip(outputs_of(out), seqs):
            assert_bitwise(got, direct([layer], s))


def test_missing_pyarrow_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(ImportError, match=r'pip install "fastrnn\[predict\]"'):
        P.require_pyarrow()


# ---------------------------------------------------------------------------------------------
# Parquet files and directories

@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """3 Parquet files (small row groups) of 130 ragged rows with string ids, a bad row in
    the middle, and the model file; with the rows' direct outputs."""
    root = tmp_path_factory.mktemp("data")
    layer = fastrnn.LSTM(4, 8, num_layers=2, seed=0)
    fastrnn.save(layer, root / "model.npz")
    rng = np.random.default_rng(3)
    seqs, _ = ragged(130, 4, rng, max_length=25)
    seqs[77] = seqs[77][:, :3]  # wrong feature size
    os.makedirs(root / "in")
    ids = [f"id-{i:04d}" for i in range(130)]
    for k, (lo, hi) in enumerate([(0, 50), (50, 51), (51, 130)]):
        table = pa.table({"id": ids[lo:hi], "steps": pa.array(
            [s.tolist() for s in seqs[lo:hi]], pa.list_(pa.list_(pa.float32())))})
        pq.write_table(table, root / "in" / f"part-{k}.parquet", row_group_size=16)
    want = {ids[i]: (None if i == 77 else direct([layer], s)) for i, s in enumerate(seqs)}
    return root, ids, want


def check_output(directory, ids, want):
    table = pq.read_table(directory)
    assert sorted(table.column("id").to_pylist()) == sorted(ids)  # each id exactly once
    for i, got in zip(table.column("id").to_pylist(), outputs_of(table)):
        if want[i] is None:
            assert got is None
        else:
            assert_bitwise(got, want[i])
    return table


def test_predict_parquet_directory_in_chunks(dataset, tmp_path):
    root, ids, want = dataset
    seen = []
    report = P.predict_parquet(root / "model.npz", root / "in", tmp_path / "out",
                               id_column="id", chunk_rows=23, batch_size=5,
                               progress=lambda d, t: seen.append((d, t)),
                               on_bad_row=lambda b: seen.append(b))
    table = check_output(tmp_path / "out", ids, want)
    assert table.column("error").to_pylist()[77] == \
        "step 0 has 3 features, the model expects input_size=4"
    assert report.stats.rows == 130 and report.stats.bad_rows == 1
    assert [b.id for b in report.bad_rows] == ["id-0077"]
    assert P.BadRow("id-0077", 77, table.column("error").to_pylist()[77]) in seen
    # 50 rows: 3 chunks, 1 row: 1, 79 rows: 4 -> 8 part files
    assert len(report.parts) == 8 and report.resumed_chunks == 0
    progress = [s for s in seen if isinstance(s, tuple)]
    assert progress[0] == (0, 130) and progress[-1] == (130, 130)
    assert report.stats.padding_ratio < report.stats.ungrouped_padding_ratio
    manifest = json.loads((tmp_path / "out" / P.MANIFEST).read_text())
    ranges = sorted(tuple(e["rows"]) for e in manifest["done"].values())
    assert ranges[0][0] == 0 and ranges[-1][1] == 130
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))  # no gap, no overlap
    with pytest.raises(FileExistsError, match="not empty"):
        P.predict_parquet(root / "model.npz", root / "in", tmp_path / "out", id_column="id")


def test_an_interrupted_run_resumes_without_duplicates_or_losses(dataset, tmp_path):
    root, ids, want = dataset
    out = tmp_path / "out"

    class Interrupt(Exception):
        pass

    def stop_after_three(chunk):
        if chunk.index == 2:
            raise Interrupt
    with pytest.raises(Interrupt):
        P.predict_parquet(root / "model.npz", root / "in", out, id_column="id", chunk_rows=17,
                          _after_chunk=stop_after_three)
    assert len([n for n in os.listdir(out) if n.startswith("part-")]) == 3
    (out / ".part-00002-000001.parquet.tmp-1").write_bytes(b"half a file")  # a killed write
    with pytest.raises(ValueError, match="other settings .*chunk_rows: 17 then, 20 now"):
        P.predict_parquet(root / "model.npz", root / "in", out, id_column="id", chunk_rows=20,
                          resume=True)
    report = P.predict_parquet(root / "model.npz", root / "in", out, id_column="id",
                               chunk_rows=17, resume=True)
    assert report.resumed_chunks == 3 and report.stats.rows == 130
    assert report.new_rows == 130 - 50  # the first file: chunks of 17, 17 and 16 rows
    assert not [n for n in os.listdir(out) if n.startswith(".")]
    check_output(out, ids, want)


def test_cli_killed_mid_run_then_resumed_writes_every_id_once(tmp_path):
    """A real kill (SIGKILL) of `fastrnn predict` between or during part writes."""
    layer = fastrnn.LSTM(16, 96, seed=0)
    fastrnn.save(layer, tmp_path / "model.npz")
    rng = np.random.default_rng(5)
    n = 6000  # about 0.6 s of scoring in 120 chunks: time to kill it after the third
    lengths = rng.integers(20, 60, n)
    values = rng.standard_normal((int(lengths.sum()), 16)).astype(np.float32)
    steps = pa.ListArray.from_arrays(np.arange(0, values.size + 1, 16, dtype=np.int32),
                                     pa.array(values.reshape(-1)))
    rows = pa.ListArray.from_arrays(np.r_[0, np.cumsum(lengths)].astype(np.int32), steps)
    pq.write_table(pa.table({"key": np.arange(n) * 7, "seq": rows}), tmp_path / "in.parquet")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "fastrnn", "predict", str(tmp_path / "model.npz"),
               str(tmp_path / "in.parquet"), "-o", str(out), "--id-column", "key",
               "--chunk-rows", "50", "--threads", "1", "--no-progress"]
    proc = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if out.is_dir() and len([p for p in os.listdir(out) if p.startswith("part-")]) >= 3:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    written = len([p for p in os.listdir(out) if p.startswith("part-")])
    assert 3 <= written < n // 50
    resumed = subprocess.run(command + ["--resume"], cwd=tmp_path, capture_output=True,
                             text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert "chunks from before kept" in resumed.stdout
    table = pq.read_table(out)
    assert sorted(table.column("key").to_pylist()) == list(np.arange(n) * 7)
    got = dict(zip(table.column("key").to_pylist(), outputs_of(table)))
    x = values
    starts = np.r_[0, np.cumsum(lengths)]
    for i in rng.choice(n, 40, replace=False):  # spot checks: direct calls are slow-ish
        assert_bitwise(got[i * 7], direct([layer], x[starts[i]:starts[i + 1]]))


# ---------------------------------------------------------------------------------------------
# The command

def test_cli_predict_reports_bad_rows_and_padding(dataset, tmp_path, capsys):
    root, ids, want = dataset
    out = tmp_path / "out"
    status = main(["predict", str(root / "model.npz"), str(root / "in"), "-o", str(out),
                   "--id-column", "id", "--chunk-rows", "40", "--no-progress"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert captured.err == ("fastrnn predict: bad row 77 (id id-0077): step 0 has 3 features, "
                            "the model expects input_size=4\n")
    assert captured.out.startswith(f"wrote {out}: 130 rows (129 scored, 1 bad); padding ")
    assert "without length grouping" in captured.out
    check_output(out, ids, want)


def test_cli_strict_stops_at_a_bad_row_with_status_1(dataset, tmp_path, capsys):
    root, _, _ = dataset
    status = main(["predict", str(root / "model.npz"), str(root / "in"), "-o",
                   str(tmp_path / "out"), "--id-column", "id", "--strict", "--no-progress"])
    err = capsys.readouterr().err
    assert status == 1
    assert err.startswith("fastrnn predict: row 77 (id 'id-0077'): step 0 has 3 features")


def test_cli_reduce_all_and_row_numbers(dataset, tmp_path, capsys):
    root, ids, _ = dataset
    out = tmp_path / "out"
    assert main(["predict", str(root / "model.npz"), str(root / "in" / "part-0.parquet"),
                 "-o", str(out), "--reduce", "all", "--no-progress"]) == 0
    table = pq.read_table(out)
    assert table.column_names == ["row", "output", "error"]
    assert sorted(table.column("row").to_pylist()) == list(range(50))
    layer = fastrnn.load(root / "model.npz")
    first = pq.read_table(root / "in" / "part-0.parquet").column("steps")[0].as_py()
    assert_bitwise(outputs_of(table.sort_by("row"))[0],
                   direct([layer], np.array(first, np.float32), "all"))


@pytest.mark.parametrize("argv, message", [
    (["--workers", "2"], "--workers and --address apply to --engine ray or dask"),
    (["--batch-size", "0"], "expected a positive integer, got '0'"),
    (["--reduce", "mean"], "invalid choice: 'mean'"),
    (["--engine", "spark"], "invalid choice: 'spark'"),
])
def test_cli_usage_errors_exit_2(dataset, tmp_path, capsys, argv, message):
    root, _, _ = dataset
    with pytest.raises(SystemExit) as exc:
        main(["predict", str(root / "model.npz"), str(root / "in"), "-o",
              str(tmp_path / "out"), *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--column", "nope"], "no column nope in the input; its columns are id, steps"),
    (["--id-column", "steps"], "the only sequence column, steps, is the id column; give the "
                               "rows' ids in another column"),
    (["--id-column", "steps", "--column", "steps"],
     "steps cannot be both the sequence column and the id column"),
])
def test_cli_work_errors_exit_1(dataset, tmp_path, capsys, argv, message):
    root, _, _ = dataset
    status = main(["predict", str(root / "model.npz"), str(root / "in"), "-o",
                   str(tmp_path / "out"), "--no-progress", *argv])
    err = capsys.readouterr().err
    assert status == 1 and err == f"fastrnn predict: {message}\n"


def test_cli_missing_input_exits_1(dataset, tmp_path, capsys):
    root, _, _ = dataset
    status = main(["predict", str(root / "model.npz"), str(tmp_path / "absent"), "-o",
                   str(tmp_path / "out"), "--no-progress"])
    assert status == 1
    assert capsys.readouterr().err == (f"fastrnn predict: {tmp_path / 'absent'}: No such file "
                                       "or directory\n")


# ---------------------------------------------------------------------------------------------
# Progress

class _Stream:
    def __init__(self, tty):
        self.tty, self.text = tty, ""

    def isatty(self):
        return self.tty

    def write(self, text):
        self.text += text

    def flush(self):
        pass


def test_progress_draws_a_bar_on_a_terminal_and_lines_in_logs():
    bar = P.Progress(_Stream(True))
    bar(0, 1000)
    bar(500, 1000)
    bar(1000, 1000)
    bar.finish()
    frames = bar.stream.text.split("\r")[1:]
    assert len(frames) == 3 and frames[-1].endswith("\n")
    assert frames[1].startswith("[" + "#" * 15 + " " * 15 + "] 500/1,000 rows (50%)")
    assert "rows/s" in frames[1] and "ETA 0:00:" in frames[1]
    log = P.Progress(_Stream(False), interval=3600)
    for done in (0, 10, 20, 30):
        log(done, 30)
    lines = log.stream.text.splitlines()
    assert len(lines) == 2  # the first, then none until the interval or the end
    assert lines[0].startswith("0/30 rows (0%)") and lines[1].startswith("30/30 rows (100%)")
    assert "\r" not in log.stream.text and "[" not in log.stream.text


# ---------------------------------------------------------------------------------------------
# The README's example data set

def test_example_data_set_runs_through_the_command(tmp_path, capsys):
    script = os.path.join(ROOT, "examples", "make_sequences.py")
    made = subprocess.run([sys.executable, script, str(tmp_path / "data"), "--rows", "300",
                           "--files", "2", "--max-length", "40"], capture_output=True,
                          text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    assert main(["predict", str(tmp_path / "data" / "model.npz"),
                 str(tmp_path / "data" / "sequences"), "-o", str(tmp_path / "scores"),
                 "--id-column", "id", "--no-progress"]) == 0
    assert "300 rows (300 scored, 0 bad)" in capsys.readouterr().out
    table = pq.read_table(tmp_path / "scores")
    assert sorted(table.column("id").to_pylist()) == [f"seq-{i:07d}" for i in range(300)]
    assert table.schema.field("output").type.list_size == 64


def test_read_ahead_keeps_order_passes_errors_and_stops_when_closed():
    import threading
    assert list(P.read_ahead(iter(range(50)), depth=3)) == list(range(50))

    def failing():
        yield 1
        raise OSError("disk gone")
    it = P.read_ahead(failing())
    assert next(it) == 1
    with pytest.raises(OSError, match="disk gone"):
        next(it)
    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1
    it = P.read_ahead(endless(), depth=2)
    assert [next(it), next(it)] == [0, 1]
    it.close()
    assert not [t for t in threading.enumerate() if t.name == "fastrnn-read-ahead"]
    assert len(produced) <= 5  # read at most depth ahead, then stopped


def test_empty_tables_and_inputs(tmp_path):
    layer = fastrnn.LSTM(2, 3)
    empty = pa.table({"id": pa.array([], pa.string()),
                      "x": pa.array([], pa.list_(pa.list_(pa.float32())))})
    for reduce in ("last", "all"):
        out, bad, stats = P.predict_table(layer, empty, id_column="id", reduce=reduce)
        assert out.num_rows == 0 and bad == [] and stats.rows == 0
        assert out.schema == P.output_schema(P.Model(layer), pa.string(), id_column="id",
                                             reduce=reduce)
    pq.write_table(empty, tmp_path / "empty.parquet")
    fastrnn.save(layer, tmp_path / "m.npz")
    report = P.predict_parquet(tmp_path / "m.npz", tmp_path / "empty.parquet", tmp_path / "o",
                               id_column="id")
    assert report.stats.rows == 0 and report.parts == []
    assert os.listdir(tmp_path / "o") == [P.MANIFEST]  # a run's directory, resumable
    again = P.predict_parquet(tmp_path / "m.npz", tmp_path / "empty.parquet", tmp_path / "o",
                              id_column="id", resume=True)
    assert again.stats.rows == 0


def test_optional_modules_are_imported_only_when_used():
    code = ("import sys, fastrnn, fastrnn.predict, fastrnn.ray, fastrnn.dask, fastrnn.__main__; "
            "print(sorted({'pyarrow', 'ray', 'dask', 'distributed', 'pandas'} & "
            "set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[]\n"


def test_command_without_pyarrow_says_how_to_install_it(tmp_path):
    code = ("import sys; sys.modules['pyarrow'] = None; from fastrnn.__main__ import main; "
            f"sys.exit(main(['predict', 'm.npz', 'in', '-o', 'out', '--no-progress']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == ("fastrnn predict: batch scoring reads and writes Arrow / Parquet "
                             "data with pyarrow, which is not installed: pip install "
                             "\"fastrnn[predict]\"\n")


@pytest.mark.parametrize("row_group_size", [1, 7, 20, 23, 50, 1000])
@pytest.mark.parametrize("chunk_rows", [1, 20, 23])
def test_chunk_reads_give_the_rows_read_chunks_gives(tmp_path, row_group_size, chunk_rows):
    """What a worker reads for a chunk (ChunkRead: whole row groups, then a slice) is the
    table the driver cuts out of the file front to back, for aligned and straddling row
    groups; plan_reads declines (None) when that would decode over twice the rows."""
    rng = np.random.default_rng(8)
    seqs, _ = ragged(130, 4, rng, max_length=6)
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": [f"r{i}" for i in range(130)], "steps": pa.array(
        [s.tolist() for s in seqs], pa.list_(pa.list_(pa.float32())))}), path,
        row_group_size=row_group_size)
    files = [str(path)]
    chunks = P.plan_chunks(files, chunk_rows)
    reads = P.plan_reads(files[0], chunks, ["steps", "id"])
    groups = -(-130 // row_group_size)
    decoded = 0
    for c in chunks:  # rows of the row groups each chunk overlaps, counted independently
        first, last = c.start // row_group_size, (c.stop - 1) // row_group_size
        decoded += min(130, (last + 1) * row_group_size) - first * row_group_size
    if decoded > 2 * 130:
        assert reads is None
        return
    assert reads is not None and len(reads) == len(chunks)
    for (chunk, table), read in zip(P.read_chunks(files, chunks, ["steps", "id"], chunk_rows),
                                    reads):
        assert read.path == os.path.abspath(path) and max(read.row_groups) < groups
        got = P.chunk_table(read)
        assert got.num_rows == chunk.stop - chunk.start
        assert got.equals(table)
    assert P.chunk_table(table) is table  # a table passes through
