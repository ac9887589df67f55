"""fastrnn.ray on a real local Ray cluster (ray.init(num_cpus=2), started once for the file):
rows bitwise equal to the layer called on each row alone, the model loaded once per actor, a
killed worker still giving every row exactly once, bad rows reported with their ids, and a
job whose actors would take every CPU refused at once instead of waiting forever."""
import logging
import os
import signal
import sys
import threading
import warnings

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow", reason="batch scoring needs pyarrow (fastrnn[predict])")
ray = pytest.importorskip("ray", reason='the Ray engine needs Ray Data (fastrnn[ray])')
pytest.importorskip("ray.data", reason='the Ray engine needs Ray Data (fastrnn[ray])')
pq = pytest.importorskip("pyarrow.parquet")

import fastrnn  # noqa: E402
import fastrnn.ray  # noqa: E402
from fastrnn import predict as P  # noqa: E402

# Ray's own modules warn about their internals (deprecations) in some versions
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning",
                                        "ignore::ResourceWarning")


@pytest.fixture(scope="module")
def cluster():
    # the workers unpickle this module's helper classes by value (tests/ is not importable)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    yield
    ray.shutdown()


def rows(n, rng, features=4, max_length=20):
    seqs = [rng.standard_normal((rng.integers(1, max_length + 1), features)).astype(np.float32)
            for _ in range(n)]
    return seqs


def table_of(seqs, ids):
    return pa.table({"id": ids, "steps": pa.array([s.tolist() for s in seqs],
                                                  pa.list_(pa.list_(pa.float32())))})


def direct(layer, seq, reduce="last"):
    out, _ = layer(seq[None])
    return out[0, -1] if reduce == "last" else out[0]


def check(result, seqs, ids, layer, bad=(), reduce="last"):
    """Every id once; each good row bitwise the direct call; bad rows null with a reason."""
    got = dict(zip(result.column("id").to_pylist(), result.column("output").to_pylist()))
    errors = dict(zip(result.column("id").to_pylist(), result.column("error").to_pylist()))
    assert sorted(result.column("id").to_pylist()) == sorted(ids)
    for i, s in zip(ids, seqs):
        if i in bad:
            assert got[i] is None and errors[i]
            continue
        want = direct(layer, s, reduce).astype(np.float32)
        assert errors[i] is None
        assert np.array_equal(np.array(got[i], np.float32).view(np.uint32), want.view(np.uint32))
    return errors


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "gru.npz"
    layer = fastrnn.GRU(4, 10, bidirectional=True, seed=3)
    fastrnn.save(layer, path)
    return path, fastrnn.load(path)


class CountingSource(P.ModelSource):
    """A ModelSource that notes each load (pid) in a file."""

    def __init__(self, model, log):
        super().__init__(model)
        self.log = str(log)

    def load(self):
        with open(self.log, "a") as f:
            f.write(f"{os.getpid()}\n")
        return super().load()


@pytest.mark.parametrize("reduce", ["last", "all"])
def test_ray_data_rows_are_bitwise_the_rows_scored_alone(cluster, model_file, tmp_path, reduce):
    path, layer = model_file
    rng = np.random.default_rng(0)
    seqs = rows(200, rng)
    ids = [f"s{i}" for i in range(200)]
    blocks = [table_of(seqs[i:i + 25], ids[i:i + 25]) for i in range(0, 200, 25)]
    log = tmp_path / "loads"
    ds = ray.data.from_arrow(blocks)
    scored = fastrnn.ray.predict(ds, CountingSource(path, log), id_column="id", reduce=reduce,
                                 concurrency=2, num_cpus=1, rows_per_batch=10, batch_size=4,
                                 leave_cpus=0)  # from_arrow + to_arrow_refs: no tasks
    check(pa.concat_tables(ray.get(scored.to_arrow_refs())), seqs, ids, layer, reduce=reduce)
    pids = log.read_text().split()
    assert 1 <= len(pids) <= 2 and len(set(pids)) == len(pids)  # once per actor, 20 batches


def test_predictor_matches_threads_to_cpus_and_needs_an_id_column(model_file):
    path, layer = model_file
    before = fastrnn.get_num_threads()
    try:
        predictor = fastrnn.ray.Predictor(path, id_column="id", threads=1)
        assert fastrnn.get_num_threads() == 1
        seqs = rows(5, np.random.default_rng(1))
        check(predictor(table_of(seqs, list(range(5)))), seqs, list(range(5)), layer)
    finally:
        fastrnn.set_num_threads(before)
    with pytest.raises(ValueError, match="id_column is required"):
        fastrnn.ray.Predictor(path)


def test_bad_rows_are_reported_with_ids_and_do_not_stop_the_job(cluster, model_file):
    path, layer = model_file
    rng = np.random.default_rng(2)
    seqs = rows(60, rng)
    nested = [s.tolist() for s in seqs]
    nested[7] = [[1.0, 2.0, 3.0]]                      # wrong feature size
    nested[21] = [[float("nan")] * 4]                  # NaN
    nested[40] = []                                    # empty
    ids = list(range(1000, 1060))
    table = pa.table({"id": ids, "steps": pa.array(nested, pa.list_(pa.list_(pa.float32())))})
    blocks = [table.slice(i, 15) for i in range(0, 60, 15)]
    scored = fastrnn.ray.predict(ray.data.from_arrow(blocks), str(path), id_column="id",
                                 concurrency=2, rows_per_batch=16, leave_cpus=0)
    errors = check(pa.concat_tables(ray.get(scored.to_arrow_refs())), seqs, ids, layer,
                   bad={1007, 1021, 1040})
    assert errors[1007] == "step 0 has 3 features, the model expects input_size=4"
    assert "NaN" in errors[1021] and errors[1040] == "empty sequence"


def within(seconds, job):
    """Run job() in a thread; fail (instead of hanging the test run) past `seconds`."""
    failure = []

    def run():
        try:
            job()
        except BaseException as exc:  # noqa: BLE001 - reported below
            failure.append(exc)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"the Ray Data job still runs after {seconds} s: a hang"
    if failure:
        raise failure[0]


def parquet_dir(path, seqs, ids, files=4):
    os.makedirs(path)
    step = -(-len(seqs) // files)
    for f, i in enumerate(range(0, len(seqs), step)):
        pq.write_table(table_of(seqs[i:i + step], ids[i:i + step]), os.path.join(path, f"{f}.parquet"))


# Ray Data warns that 2 actors get fewer input blocks than that (a small data set)
@pytest.mark.filterwarnings("ignore:The minimum number of concurrent actors:UserWarning")
def test_actors_taking_every_cpu_raise_instead_of_hanging(cluster, model_file, tmp_path):
    """read_parquet -> predict -> write_parquet on ray.init(num_cpus=2): 2 actors x 1 CPU
    would leave the read and write tasks no CPU and wait forever (Ray Data's "does not have
    any available CPUs. The Dataset job will hang"): refused at once; with num_cpus=0.5 (one
    fastrnn thread each) or the default concurrency the job finishes."""
    path, layer = model_file
    rng = np.random.default_rng(5)
    seqs = rows(160, rng)
    ids = [f"p{i}" for i in range(160)]
    parquet_dir(str(tmp_path / "in"), seqs, ids)
    ds = ray.data.read_parquet(str(tmp_path / "in"))
    with pytest.raises(ValueError, match=r"2 actor\(s\) x num_cpus=1 .* need 3 CPUs; the Ray "
                       r"cluster has 2\..*wait forever"):
        fastrnn.ray.predict(ds, path, id_column="id", concurrency=2, num_cpus=1)
    with pytest.raises(ValueError, match="wait forever"):
        fastrnn.ray.predict(ds, path, id_column="id", concurrency=(2, 2))
    with pytest.raises(ValueError, match=r"need 2\.5 CPUs; the Ray cluster has 2"):
        fastrnn.ray.predict(ds, path, id_column="id", num_cpus=2, leave_cpus=0.5)  # 1 actor
    fastrnn.ray.predict(ds, path, id_column="id", concurrency=2, leave_cpus=None)  # unchecked

    for n, kwargs in enumerate([dict(concurrency=2, num_cpus=0.5), dict()]):
        out = str(tmp_path / f"out{n}")
        scored = fastrnn.ray.predict(ray.data.read_parquet(str(tmp_path / "in")), path,
                                     id_column="id", rows_per_batch=16, **kwargs)
        within(180, lambda: scored.write_parquet(out))
        check(pq.read_table(out), seqs, ids, layer)


def test_command_engine_with_more_workers_than_cpus_raises(cluster, model_file, tmp_path):
    """predict_parquet(engine="ray") on the 2-CPU cluster with 3 workers: the third actor
    would never start and its chunks would wait forever; refused at once."""
    path, _ = model_file
    pq.write_table(table_of(rows(10, np.random.default_rng(6)), list(range(10))),
                   tmp_path / "in.parquet")
    with pytest.raises(ValueError, match=r"3 Ray worker\(s\) x 1 thread\(s\) need 3 CPUs; "
                       r"the Ray cluster has 2.*wait forever"):
        P.predict_parquet(path, tmp_path / "in.parquet", tmp_path / "out", id_column="id",
                          engine="ray", workers=3)
    with pytest.raises(ValueError, match="need 4 CPUs"):
        fastrnn.ray.ChunkPool(P.ModelSource(path), workers=2, threads=2)
    assert ray.is_initialized()  # the cluster it did not start is left running


def test_predict_uses_no_deprecated_ray_arguments(cluster, model_file):
    """No `ray_remote_args` (named remote parameters) and no `concurrency` (compute=
    ActorPoolStrategy) deprecation from Ray Data for what fastrnn.ray.predict passes."""
    path, _ = model_file
    seen = []

    class Note(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())
    handler = Note(level=logging.WARNING)
    logging.getLogger("ray.data").addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for concurrency in (2, (1, 2)):
                fastrnn.ray.predict(ray.data.from_arrow([table_of([], [])]), path,
                                    id_column="id", concurrency=concurrency, num_cpus=0.5)
    finally:
        logging.getLogger("ray.data").removeHandler(handler)
    said = [str(w.message) for w in caught] + seen
    assert not [m for m in said if "deprecat" in m.lower()], said


class KillOnce(fastrnn.ray.Predictor):
    """Kills its own worker process at its first call while a marker file is absent."""

    marker = None

    def __call__(self, batch):
        if not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return super().__call__(batch)


def test_ray_data_survives_a_killed_worker(cluster, model_file, tmp_path):
    path, layer = model_file
    KillOnce.marker = str(tmp_path / "killed")
    rng = np.random.default_rng(3)
    seqs = rows(120, rng)
    ids = [f"k{i}" for i in range(120)]
    ds = ray.data.from_arrow([table_of(seqs[i:i + 20], ids[i:i + 20]) for i in range(0, 120, 20)])
    scored = fastrnn.ray.predict(ds, str(path), id_column="id", concurrency=2,
                                 rows_per_batch=10, predictor=KillOnce, leave_cpus=0)
    check(pa.concat_tables(ray.get(scored.to_arrow_refs())), seqs, ids, layer)
    assert os.path.exists(KillOnce.marker)


def test_command_engine_ray_survives_a_killed_actor(cluster, model_file, tmp_path):
    """predict_parquet(engine="ray") with one actor SIGKILLed after the first chunk: Ray
    restarts it and reruns its chunks; every id once, bitwise the direct calls."""
    import psutil
    path, layer = model_file
    rng = np.random.default_rng(4)
    seqs = rows(300, rng)
    ids = [f"c{i}" for i in range(300)]
    pq.write_table(table_of(seqs, ids), tmp_path / "in.parquet", row_group_size=50)
    killed = []

    def kill_an_actor(chunk):
        if killed:
            return
        for proc in psutil.process_iter(["cmdline"]):
            if any("_ChunkWorker" in part for part in proc.info["cmdline"] or ()):
                proc.send_signal(signal.SIGKILL)
                killed.append(proc.pid)
                return
    report = P.predict_parquet(path, tmp_path / "in.parquet", tmp_path / "out",
                               id_column="id", chunk_rows=20, engine="ray", workers=2,
                               _after_chunk=kill_an_actor)
    assert killed, "no actor process found to kill"
    assert report.stats.rows == 300 and len(report.parts) == 15
    check(pq.read_table(tmp_path / "out"), seqs, ids, layer)


@pytest.mark.parametrize("read_in_workers,expect_read", [(True, 15), (False, 0)])
def test_command_engine_actors_read_the_input_when_asked(
        cluster, model_file, tmp_path, read_in_workers, expect_read):
    """read_in_workers=True: the actors read their chunks from the files themselves
    (ChunkRead); by default the rows are sent. The same bits either way."""
    path, layer = model_file
    seqs = rows(300, np.random.default_rng(13))
    ids = [f"a{i}" for i in range(300)]
    pq.write_table(table_of(seqs, ids), tmp_path / "in.parquet", row_group_size=20)
    pool = fastrnn.ray.ChunkPool(P.ModelSource(path), workers=2,
                                 read_in_workers=read_in_workers)
    try:
        assert pool.reads_files is read_in_workers
        report = P.predict_parquet(path, tmp_path / "in.parquet", tmp_path / "out",
                                   id_column="id", chunk_rows=20, engine=pool)
    finally:
        pool.close()
    assert report.read_in_workers == expect_read and report.stats.rows == 300
    check(pq.read_table(tmp_path / "out"), seqs, ids, layer)


def test_missing_ray_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError, match=r'pip install "fastrnn\[ray\]"'):
        fastrnn.ray._ray()


def test_command_with_engine_ray_reports_bad_rows(cluster, model_file, tmp_path, capsys):
    from fastrnn.__main__ import main
    path, _ = model_file
    nested = [[[1.0, 2.0, 3.0, 4.0]], [[1.0, 2.0]], [[0.5] * 4, [1.0] * 4]]
    pq.write_table(pa.table({"id": ["a", "b", "c"], "steps": nested}), tmp_path / "in.parquet")
    argv = ["predict", str(path), str(tmp_path / "in.parquet"), "--id-column", "id",
            "--engine", "ray", "--no-progress"]
    assert main(argv + ["-o", str(tmp_path / "out")]) == 0
    out, err = capsys.readouterr()
    assert err == ("fastrnn predict: bad row 1 (id b): step 0 has 2 features, the model "
                   "expects input_size=4\n")
    assert "3 rows (2 scored, 1 bad)" in out
    assert main(argv + ["-o", str(tmp_path / "strict"), "--strict"]) == 1
    assert capsys.readouterr().err == ("fastrnn predict: row 1 (id 'b'): step 0 has 2 "
                                       "features, the model expects input_size=4\n")
