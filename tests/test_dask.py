"""fastrnn.dask on a real dask.distributed LocalCluster (2 worker processes, 1 thread each,
started once for the file): rows bitwise equal to the layer called on each row alone, the
model sent once per worker, a killed worker still giving every row exactly once, bad rows
reported with their ids; DataFrames with ragged list columns, Bags, and the command's
engine."""
import os
import signal
import sys

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow", reason="batch scoring needs pyarrow (fastrnn[predict])")
pq = pytest.importorskip("pyarrow.parquet")
dd = pytest.importorskip("dask.dataframe", reason="the Dask engine needs fastrnn[dask]")
distributed = pytest.importorskip("distributed", reason="the Dask engine needs fastrnn[dask]")
pd = pytest.importorskip("pandas")
import dask.bag as db  # noqa: E402

import fastrnn  # noqa: E402
import fastrnn.dask  # noqa: E402
from fastrnn import predict as P  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning",
                                        "ignore::ResourceWarning")


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=":0")
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "lstm.npz"
    fastrnn.save(fastrnn.LSTM(3, 8, num_layers=2, seed=4), path)
    return path, fastrnn.load(path)


def rows(n, rng, features=3, max_length=20):
    return [rng.standard_normal((rng.integers(1, max_length + 1), features)).astype(np.float32)
            for _ in range(n)]


def direct(layer, seq, reduce="last"):
    out, _ = layer(seq[None])
    return out[0, -1] if reduce == "last" else out[0]


def same_bits(got, want):
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    return got.shape == want.shape and np.array_equal(got.view(np.uint32), want.view(np.uint32))


def check(ids_out, outputs, errors, seqs, ids, layer, bad=(), reduce="last"):
    assert sorted(ids_out) == sorted(ids)  # every id exactly once
    by_id = {i: (o, e) for i, o, e in zip(ids_out, outputs, errors)}
    for i, s in zip(ids, seqs):
        out, err = by_id[i]
        if i in bad:
            assert out is None and err
        else:
            assert err is None and same_bits(out, direct(layer, s, reduce)), i
    return {i: e for i, (_, e) in by_id.items()}


def ragged_column(nested):
    """Ragged rows as a pyarrow-backed pandas column (dask would turn a column of Python
    lists into strings)."""
    return pd.arrays.ArrowExtensionArray(pa.array(nested, pa.list_(pa.list_(pa.float32()))))


def frame(seqs, ids):
    return pd.DataFrame({"id": ids, "steps": ragged_column([s.tolist() for s in seqs])})


@pytest.mark.parametrize("reduce", ["last", "all"])
def test_dataframe_rows_are_bitwise_the_rows_scored_alone(client, model_file, reduce):
    path, layer = model_file
    rng = np.random.default_rng(0)
    seqs = rows(150, rng)
    ids = [f"d{i}" for i in range(150)]
    ddf = dd.from_pandas(frame(seqs, ids), npartitions=6)
    scored = fastrnn.dask.predict(ddf, path, id_column="id", reduce=reduce, batch_size=8)
    assert list(scored.columns) == ["id", "output", "error"]
    result = scored.compute()
    assert isinstance(result["output"].dtype, pd.ArrowDtype)
    table = pa.Table.from_pandas(result, preserve_index=False)
    check(table.column("id").to_pylist(),
          [None if o is None else np.array(o) for o in table.column("output").to_pylist()],
          table.column("error").to_pylist(), seqs, ids, layer, reduce=reduce)


def test_parquet_ragged_columns_through_pyarrow(client, model_file, tmp_path):
    path, layer = model_file
    rng = np.random.default_rng(1)
    seqs = rows(80, rng)
    ids = list(range(80))
    table = pa.table({"id": ids, "steps": pa.array([s.tolist() for s in seqs],
                                                   pa.list_(pa.list_(pa.float32())))})
    pq.write_table(table, tmp_path / "seqs.parquet", row_group_size=20)
    ddf = dd.read_parquet(tmp_path / "seqs.parquet", split_row_groups=True)
    scored = fastrnn.dask.predict(ddf, str(path), id_column="id")
    out = tmp_path / "scores"
    scored.to_parquet(out)
    back = pq.read_table(out)
    check(back.column("id").to_pylist(), back.column("output").to_pylist(),
          back.column("error").to_pylist(), seqs, ids, layer)


def test_the_model_travels_once_per_worker(client, model_file):
    path, _ = model_file
    key = fastrnn.dask.send_model(client, path)
    assert key == fastrnn.dask.send_model(client, path)  # the same model: the same plugin

    def loaded(dask_worker):
        plugin = dask_worker.plugins[key]
        return (plugin.model is not None, id(plugin.model), fastrnn.get_num_threads())
    states = client.run(loaded)
    assert len(states) == 2
    assert all(has and threads == 1 for has, _, threads in states.values())
    ddf = dd.from_pandas(frame(rows(40, np.random.default_rng(2)), list(range(40))),
                         npartitions=8)
    fastrnn.dask.predict(ddf, path, id_column="id").compute()
    assert client.run(loaded) == states  # 8 tasks later: the same model objects, not reloaded


def test_bag_of_records(client, model_file):
    path, layer = model_file
    rng = np.random.default_rng(3)
    seqs = rows(30, rng)
    records = [{"id": i, "steps": s} for i, s in enumerate(seqs)]
    records[5] = {"id": 5, "steps": np.zeros((0, 3), np.float32)}
    bag = db.from_sequence(records, npartitions=4)
    out = fastrnn.dask.predict(bag, path, column="steps", id_column="id").compute()
    errors = check([r["id"] for r in out], [r["output"] for r in out], [r["error"] for r in out],
                   seqs, list(range(30)), layer, bad={5})
    assert errors[5] == "empty sequence"


def test_bad_rows_are_reported_with_ids_and_do_not_stop_the_job(client, model_file):
    path, layer = model_file
    rng = np.random.default_rng(4)
    seqs = rows(40, rng)
    nested = [s.tolist() for s in seqs]
    nested[3] = [[1.0, 2.0]]                  # wrong feature size
    nested[17] = [[0.0, float("inf"), 1.0]]   # infinite
    nested[30] = []                           # empty
    ids = [f"b{i}" for i in range(40)]
    ddf = dd.from_pandas(pd.DataFrame({"id": ids, "steps": ragged_column(nested)}),
                         npartitions=4)
    result = pa.Table.from_pandas(fastrnn.dask.predict(ddf, path, id_column="id").compute(),
                                  preserve_index=False)
    errors = check(result.column("id").to_pylist(), result.column("output").to_pylist(),
                   result.column("error").to_pylist(), seqs, ids, layer,
                   bad={"b3", "b17", "b30"})
    assert errors["b3"] == "step 0 has 2 features, the model expects input_size=3"
    assert "infinite" in errors["b17"] and errors["b30"] == "empty sequence"
    with pytest.raises(P.BadRowError, match="^id 'b(3|17|30)': "):  # whichever comes first
        fastrnn.dask.predict(ddf, path, id_column="id", strict=True).compute()


def _kill_this_worker_once(marker):
    if not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)


def test_dataframe_survives_a_killed_worker(client, model_file, tmp_path):
    path, layer = model_file
    rng = np.random.default_rng(5)
    seqs = rows(120, rng)
    ids = [f"k{i}" for i in range(120)]
    marker = str(tmp_path / "killed")
    ddf = dd.from_pandas(frame(seqs, ids), npartitions=6)
    # a worker dies in the middle of the graph; the scheduler reruns its tasks elsewhere
    ddf = ddf.map_partitions(lambda df: (_kill_this_worker_once(marker), df)[1],
                             meta=ddf._meta)
    result = pa.Table.from_pandas(fastrnn.dask.predict(ddf, path, id_column="id").compute(),
                                  preserve_index=False)
    assert os.path.exists(marker)
    check(result.column("id").to_pylist(), result.column("output").to_pylist(),
          result.column("error").to_pylist(), seqs, ids, layer)
    client.wait_for_workers(2, timeout=60)


@pytest.mark.parametrize("cluster", ["address", "own"])
def test_command_engine_dask_survives_a_killed_worker(client, model_file, tmp_path, cluster):
    """predict_parquet(engine="dask") on this cluster (chunks through its scheduler) or on a
    pool's own LocalCluster (chunks sent straight to the workers), one worker SIGKILLed after
    the first chunk: its chunks are scored again; every id once, bitwise the direct calls."""
    path, layer = model_file
    rng = np.random.default_rng(6)
    seqs = rows(300, rng)
    ids = [f"c{i}" for i in range(300)]
    table = pa.table({"id": ids, "steps": pa.array([s.tolist() for s in seqs],
                                                   pa.list_(pa.list_(pa.float32())))})
    pq.write_table(table, tmp_path / "in.parquet", row_group_size=50)
    pool = None
    if cluster == "own":
        pool = fastrnn.dask.ChunkPool(P.ModelSource(path), workers=2)
        assert pool.direct
        target, engine, address = pool.client, pool, None
    else:
        target, engine, address = client, "dask", client.scheduler.address
    target.wait_for_workers(2, timeout=60)
    killed = []

    def kill_a_worker(chunk):
        if not killed:
            pid = next(iter(target.run(os.getpid).values()))
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    try:
        report = P.predict_parquet(path, tmp_path / "in.parquet", tmp_path / "out",
                                   id_column="id", chunk_rows=20, engine=engine,
                                   address=address, _after_chunk=kill_a_worker)
    finally:
        if pool is not None:
            pool.close()
    assert killed and report.stats.rows == 300 and len(report.parts) == 15
    back = pq.read_table(tmp_path / "out")
    check(back.column("id").to_pylist(), back.column("output").to_pylist(),
          back.column("error").to_pylist(), seqs, ids, layer)
    client.wait_for_workers(2, timeout=60)


@pytest.mark.parametrize("row_group_size,read_in_workers,expect_read",
                         [(20, None, 15), (20, False, 0), (300, None, 0)])
def test_command_engine_workers_read_the_input_when_they_can(
        client, model_file, tmp_path, row_group_size, read_in_workers, expect_read):
    """Workers on this machine read their chunks from the files themselves (ChunkRead) when
    the row groups suit the chunks; row groups over twice a chunk, or read_in_workers=False,
    send the rows from here. The same bits and every id once either way."""
    path, layer = model_file
    seqs = rows(300, np.random.default_rng(12))
    ids = [f"w{i}" for i in range(300)]
    table = pa.table({"id": ids, "steps": pa.array([s.tolist() for s in seqs],
                                                   pa.list_(pa.list_(pa.float32())))})
    pq.write_table(table, tmp_path / "in.parquet", row_group_size=row_group_size)
    pool = fastrnn.dask.ChunkPool(P.ModelSource(path), address=client.scheduler.address,
                                  read_in_workers=read_in_workers)
    try:
        assert pool.reads_files is (read_in_workers is not False)  # loopback workers
        report = P.predict_parquet(path, tmp_path / "in.parquet", tmp_path / "out",
                                   id_column="id", chunk_rows=20, engine=pool)
    finally:
        pool.close()
    assert report.read_in_workers == expect_read and report.stats.rows == 300
    back = pq.read_table(tmp_path / "out")
    check(back.column("id").to_pylist(), back.column("output").to_pylist(),
          back.column("error").to_pylist(), seqs, ids, layer)


def test_workers_on_other_machines_get_the_rows():
    assert fastrnn.dask._on_this_machine(["tcp://127.0.0.1:4000", "tcp://localhost:4001"])
    assert not fastrnn.dask._on_this_machine(["tcp://127.0.0.1:4000", "tcp://10.1.2.3:4001"])
    assert not fastrnn.dask._on_this_machine([])


def test_lists_turned_into_strings_are_refused_with_the_way_out(client, model_file):
    path, _ = model_file
    ddf = dd.from_pandas(pd.DataFrame({"id": [1, 2], "steps": [[[1.0] * 3], [[2.0] * 3]]}),
                         npartitions=1)
    with pytest.raises(ValueError, match="strings.*pd.ArrowDtype"):
        fastrnn.dask.predict(ddf, path, column="steps", id_column="id")


def test_missing_dask_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ImportError, match=r'pip install "fastrnn\[dask\]"'):
        fastrnn.dask._distributed()


def test_command_with_engine_dask_reports_bad_rows(client, model_file, tmp_path, capsys):
    from fastrnn.__main__ import main
    path, _ = model_file
    nested = [[[1.0, 2.0, 3.0]], [[1.0, 2.0]], [[0.5, 0.5, 0.5], [1.0, 1.0, 1.0]]]
    pq.write_table(pa.table({"id": ["a", "b", "c"], "steps": nested}), tmp_path / "in.parquet")
    argv = ["predict", str(path), str(tmp_path / "in.parquet"), "--id-column", "id",
            "--engine", "dask", "--address", client.scheduler.address, "--no-progress"]
    assert main(argv + ["-o", str(tmp_path / "out")]) == 0
    out, err = capsys.readouterr()
    assert err == ("fastrnn predict: bad row 1 (id b): step 0 has 2 features, the model "
                   "expects input_size=3\n")
    assert "3 rows (2 scored, 1 bad)" in out
    assert "1 part file (1 read by the workers themselves)" in out  # loopback workers
    assert main(argv + ["-o", str(tmp_path / "strict"), "--strict"]) == 1
    assert capsys.readouterr().err == ("fastrnn predict: row 1 (id 'b'): step 0 has 2 "
                                       "features, the model expects input_size=3\n")
