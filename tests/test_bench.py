"""The benchmark suite's machinery on a tiny grid: JSON schema, FLOP counts, error checks against
every peer, skipped peers, the FMA peak loop and the command line."""
import importlib.util
import io
import json
import re
import sys

import numpy as np
import pytest

import fastrnn
from fastrnn import _core
from fastrnn.__main__ import main as fastrnn_main
from fastrnn.bench import peers as bench_peers
from fastrnn.bench import runner, suites
from fastrnn.bench.suites import Case

TINY = [Case("tiny", "forward", "lstm", 2, 6, 3, 5),
        Case("tiny", "forward", "gru", 1, 4, 2, 3),
        Case("tiny", "masked", "lstm", 3, 7, 4, 5),
        Case("tiny", "step", "gru", 1, 5, 2, 4),
        Case("tiny", "training", "lstm", 2, 3, 2, 3)]


def _has(module):
    return importlib.util.find_spec(module) is not None


def _run(cases, peers, tmp_path=None, **kw):
    doc = runner.run_benchmark(cases, [1], repeats=2, min_time=0.0, peers=peers,
                               progress=False, square_n=32, **kw)
    if tmp_path is not None:  # everything must survive a JSON round trip
        path = tmp_path / "bench.json"
        runner.write_json(doc, path)
        doc = json.loads(path.read_text())
    return doc


def test_flop_convention():
    lstm = Case("s", "forward", "lstm", 2, 3, 4, 5)
    assert runner.case_flops(lstm) == 2 * 3 * 2 * 4 * 5 * (4 + 5)
    gru = Case("s", "forward", "gru", 2, 3, 4, 5)
    assert runner.case_flops(gru) == 2 * 3 * 2 * 3 * 5 * (4 + 5)
    masked = Case("s", "masked", "lstm", 2, 3, 4, 5)
    assert runner.case_flops(masked, np.array([3, 1])) == 2 * 4 * 4 * 5 * (4 + 5)
    step = Case("s", "step", "gru", 1, 50, 4, 5)
    assert runner.case_flops(step) == 2 * 1 * 3 * 5 * (4 + 5)
    train = Case("s", "training", "lstm", 2, 3, 4, 5)
    assert runner.case_flops(train) == 3 * runner.case_flops(lstm)


def test_tiny_grid_json_schema_and_errors(tmp_path):
    peers = [bench_peers.NumpyPeer()]
    if _has("torch"):
        peers.append(bench_peers.TorchPeer())
    doc = _run(TINY, peers, tmp_path)
    assert doc["schema"] == runner.SCHEMA
    for key in ("date", "machine", "settings", "flop_convention", "limits", "peers", "notes",
                "failures", "results"):
        assert key in doc
    assert doc["failures"] == []
    assert doc["limits"]["1"]["fma_peak_gflops"] > 0
    assert doc["limits"]["1"]["gemm_square_gflops"] > 0
    assert len(doc["results"]) == len(TINY)
    by_label = {r["label"]: r for r in doc["results"]}
    for case in TINY:
        r = by_label[case.label]
        assert (r["B"], r["T"], r["I"], r["H"], r["threads"]) == (case.B, case.T, case.I, case.H, 1)
        if case.kind == "training" and not hasattr(fastrnn.LSTM, "backward"):
            assert r["fastrnn"] is None and "backward" in " ".join(r["notes"])
            continue
        f = r["fastrnn"]
        assert 0 < f["min_s"] <= f["median_s"] <= f["max_s"]
        assert f["gflops"] == pytest.approx(r["flops"] / f["median_s"] / 1e9)
        assert 0 < r["fraction_fma_peak"] < 10
        compared = [e for e in r["peers"].values() if e["ok"]]
        if case.kind in ("forward", "masked"):
            assert r["peers"]["numpy"]["ok"]
        if case.kind == "step" and "torch" in r["peers"]:
            assert r["peers"]["torch"]["ok"]
        for e in compared:
            assert 0 <= e["max_abs_err"] < 1e-5
            assert e["ratio"] == pytest.approx(e["median_s"] / f["median_s"])
        if compared:
            best = min(compared, key=lambda e: e["median_s"])
            assert r["vs_best_peer"] == pytest.approx(best["ratio"])
    masked = by_label[TINY[2].label]
    assert masked["masked_over_full"] > 0 and 0 < masked["mean_length_over_T"] <= 1
    assert "weight_gbytes_per_s" in by_label[TINY[1].label]     # B = 1
    assert "weight_gbytes_per_s" not in by_label[TINY[0].label]
    (summary,) = doc["summary"]
    ratios = [r["vs_best_peer"] for r in doc["results"] if r["vs_best_peer"]]
    assert summary["cases"] == len(ratios)
    assert summary["geomean_vs_best_peer"] == pytest.approx(np.exp(np.mean(np.log(ratios))))
    assert summary["min_vs_best_peer"] == pytest.approx(min(ratios))
    table = runner.format_table(doc)
    assert "FLOPs = 2*T*B*G*H*(I+H)" in table
    header = next(line for line in table.splitlines() if line.startswith("| case"))
    assert " numpy " in header and "vs best" in header and "%peak" in header
    assert TINY[0].label in table


class _WrongNumpyPeer(bench_peers.NumpyPeer):
    """Computes something else: its output must be caught and the peer not timed."""
    name = "wrong"

    def prepare(self, case, layer, data):
        run, result = super().prepare(case, layer, data)
        return run, lambda: {k: v + 0.01 for k, v in result().items()}


def test_disagreeing_peer_is_reported_as_failure():
    doc = _run(TINY[:1], [bench_peers.NumpyPeer(), _WrongNumpyPeer()])
    entry = doc["results"][0]["peers"]["wrong"]
    assert not entry["ok"] and entry["note"].startswith("FAILED")
    assert entry["max_abs_err"] == pytest.approx(0.01, rel=1e-3)
    assert "median_s" not in entry and "ratio" not in entry
    assert doc["results"][0]["best_peer"] == "numpy"
    assert len(doc["failures"]) == 1 and "wrong" in doc["failures"][0]
    assert "FAILURES" in runner.format_table(doc)


class _Missing:
    name = "missing"

    def setup(self):
        return "not installed (pip install something)"


def test_missing_peers_are_skipped_with_a_note(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)     # import fails

    class OtherBackend:
        class backend:
            @staticmethod
            def backend():
                return "jax"
    monkeypatch.setitem(sys.modules, "keras", OtherBackend)
    doc = _run(TINY[:1], [bench_peers.NumpyPeer(), bench_peers.OnnxRuntimePeer(),
                          bench_peers.KerasPeer(), _Missing()])
    for name in ("onnxruntime", "keras", "missing"):
        assert doc["peers"][name]["available"] is False
        assert doc["peers"][name]["note"]
        assert name not in doc["results"][0]["peers"]
    assert "jax" in doc["peers"]["keras"]["note"]
    assert doc["failures"] == [] and doc["results"][0]["peers"]["numpy"]["ok"]
    assert "Note: missing skipped" in runner.format_table(doc)


@pytest.mark.skipif(not (_has("onnxruntime") and _has("onnx")), reason="needs onnxruntime")
def test_onnxruntime_peer_matches_on_tiny_cases():
    doc = _run(TINY[:4], [bench_peers.OnnxRuntimePeer()])
    for r in doc["results"]:
        assert r["peers"]["onnxruntime"]["ok"], r["peers"]["onnxruntime"]
        assert r["peers"]["onnxruntime"]["max_abs_err"] < 1e-5


def test_fma_peak_is_positive_plausible_and_quick():
    g = _core.fma_peak_gflops(1, 0.05)
    assert 0.5 < g < 1e4       # any CPU: from a slow core's scalar rate to far beyond AVX-512
    with pytest.raises(ValueError):
        _core.fma_peak_gflops(0, 0.05)
    with pytest.raises(ValueError):
        _core.fma_peak_gflops(1, 0.0)


def test_suite_selection():
    quick = suites.select("quick-default")
    assert {c.suite for c in quick} == set(suites.SUITES)
    assert all(c.quick for c in quick)
    assert len(suites.select("all")) > len(quick)
    embedded = suites.select("embedded")
    assert {16, 32, 64, 128, 256} <= {c.H for c in embedded} and {c.B for c in embedded} == {1}
    assert {c.kind for c in embedded} == {"forward", "step"}
    with pytest.raises(ValueError, match="unknown suite"):
        suites.select("nope")


@pytest.mark.parametrize("args, message", [
    (["--threads", "0"], "positive"),
    (["--threads", "a,b"], "thread counts"),
    (["--repeats", "0"], "positive"),
    (["--suite", "nope"], "invalid choice"),
    (["--dtype", "float16"], "invalid choice"),
])
def test_cli_argument_errors_are_clean(capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        fastrnn_main(["bench", *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cli_unknown_command(capsys):
    assert fastrnn_main(["nonsense"]) == 2
    assert "unknown command" in capsys.readouterr().err


def test_plot_is_written(tmp_path):
    pytest.importorskip("matplotlib")
    doc = _run(TINY[:2], [bench_peers.NumpyPeer()])
    path = tmp_path / "bench.png"
    runner.write_plot(doc, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _torch_dx(layer, x, grad):
    """dL/dx of sum(y * grad) from torch autograd: an independent stand-in backward."""
    import torch
    from fastrnn.bench._convert import to_torch_module

    xt = torch.from_numpy(x).requires_grad_(True)
    to_torch_module(layer)(xt)[0].backward(torch.from_numpy(grad))
    return xt.grad.numpy()


@pytest.mark.parametrize("offset, ok", [(0.0, True), (0.5, False)])
def test_training_path_compares_forward_and_dx(monkeypatch, offset, ok):
    """The training suite's code path, with a stand-in `backward` (the real one returns dx the
    same way): forward outputs and dx are checked against torch autograd."""
    pytest.importorskip("torch")
    state = {}

    def call(self, x, **kw):
        state["x"] = np.asarray(x, self.dtype)
        return fastrnn.layers._Recurrent.__call__(self, x, **kw)

    def backward(self, grad):
        return _torch_dx(self, state["x"], grad) + offset

    monkeypatch.setattr(fastrnn.LSTM, "__call__", call, raising=False)
    monkeypatch.setattr(fastrnn.LSTM, "backward", backward, raising=False)
    doc = _run([TINY[4]], [bench_peers.TorchPeer()])
    (r,) = doc["results"]
    assert r["fastrnn"] is not None
    entry = r["peers"]["torch"]
    assert entry["ok"] is ok
    assert entry["max_abs_err"] == pytest.approx(offset, abs=1e-5)


def test_interleaved_time_budget_keeps_min_repeats():
    import time
    from fastrnn.bench.timing import interleaved

    calls = []
    t = interleaved({"a": lambda: calls.append(time.sleep(0.005)), "b": lambda: None},
                    repeats=100, warmup=1, budget=0.03)
    assert 3 <= len(t["a"]) == len(t["b"]) < 100
    t = interleaved({"a": lambda: None}, repeats=5, budget=None)
    assert len(t["a"]) == 5


class _CrashingPeer(bench_peers.NumpyPeer):
    name = "crashing"

    def prepare(self, case, layer, data):
        raise RuntimeError("kernel not implemented for this case")


def test_peer_error_skips_that_peer_only():
    doc = _run(TINY[:1], [_CrashingPeer(), bench_peers.NumpyPeer()])
    (r,) = doc["results"]
    assert not r["peers"]["crashing"]["ok"]
    assert "RuntimeError: kernel not implemented" in r["peers"]["crashing"]["note"]
    assert r["peers"]["numpy"]["ok"] and doc["failures"] == []


def test_variant_cases_flops_layers_and_peers():
    """The variants suite: projection FLOPs counted independently, the layer built with the
    case's keywords, peers that cannot express a variant skipped with a reason, and torch's
    nn.LSTM(proj_size) compared and timed."""
    proj = Case("t", "forward", "lstm", 2, 3, 5, 8, variant=(("proj_size", 4),))
    # gates: x (5) and h (4) into 4*8 units; projection 8 -> 4; both counted twice
    assert runner.case_flops(proj) == 2 * 3 * 2 * (4 * 8 * (5 + 4) + 8 * 4)
    assert "proj_size=4" in proj.label and proj.P == 4
    peep = Case("t", "forward", "lstm", 2, 3, 5, 8, variant=(("peepholes", True),))
    layer = runner.make_layer(peep, "float32")
    assert layer.peepholes and np.any(layer.gate("input").peephole != 0)
    res = runner.run_case(peep, 1, bench_peers.FastrnnImpl(), [bench_peers.NumpyPeer()],
                          dtype="float32", repeats=1, min_time=0.0)
    assert res["fastrnn"] is not None and not res["peers"]["numpy"]["ok"]
    assert "plain cell" in res["peers"]["numpy"]["note"]
    torch_peer = bench_peers.TorchPeer()
    if torch_peer.setup() is None:
        res = runner.run_case(proj, 1, bench_peers.FastrnnImpl(), [torch_peer],
                              dtype="float32", repeats=1, min_time=0.0)
        assert res["peers"]["torch"]["ok"], res["peers"]["torch"]


_BAR = re.compile(r"\[([#.]*)\] (\d+)/(\d+) ")


def test_progress_counter_ends_exactly_at_its_total():
    """Two cases at two thread counts: four ticks, never past the total, the bar within its
    frame (the counter once ran on to 33/22)."""
    stream = io.StringIO()
    runner.run_benchmark(TINY[:2], [1, 2], repeats=1, min_time=0.0,
                         peers=[bench_peers.NumpyPeer()], progress=stream, square_n=32)
    bars = [(bar, int(done), int(total)) for bar, done, total in _BAR.findall(stream.getvalue())]
    assert bars, stream.getvalue()
    assert {total for _, _, total in bars} == {4}
    assert all(done <= total and len(bar) == 30 for bar, done, total in bars)
    assert bars[-1][:2] == ("#" * 30, 4)
    ticks = [done for _, done, _ in bars]
    assert ticks == sorted(ticks) and set(ticks) == {0, 1, 2, 3, 4}


def test_unpinned_numpy_blas_threads_are_reported(monkeypatch, tmp_path):
    """Without threadpoolctl, numpy's BLAS runs at its own thread count: the document and the
    table say so instead of labelling the GEMM limit with the row's thread count."""
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)     # import fails
    doc = _run(TINY[:1], [bench_peers.NumpyPeer()], tmp_path)
    assert doc["settings"]["numpy_blas_threads_pinned"] is False
    assert doc["limits"]["1"]["gemm_blas_threads"] is None
    assert doc["results"][0]["gemm_blas_threads"] is None
    (note,) = [n for n in doc["notes"] if "BLAS" in n]
    assert "unpinned" in note and "threadpoolctl" in note
    table = runner.format_table(doc)
    limit_line = next(line for line in table.splitlines() if line.startswith("Limit at 1"))
    assert "unpinned" in limit_line and "1 BLAS thread" not in limit_line
    gemm_legend = next(line for line in table.splitlines() if line.startswith("- %GEMM:"))
    assert "unpinned" in gemm_legend
    assert f"Note: {note}" in table


def test_pinned_numpy_blas_threads(tmp_path):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if not any(lib["user_api"] == "blas" for lib in threadpoolctl.threadpool_info()):
        pytest.skip("threadpoolctl cannot control this numpy's BLAS")
    with bench_peers.NumpyPeer().threads(1):
        assert {lib["num_threads"] for lib in threadpoolctl.threadpool_info()
                if lib["user_api"] == "blas"} == {1}
    doc = _run(TINY[:1], [bench_peers.NumpyPeer()], tmp_path)
    assert doc["settings"]["numpy_blas_threads_pinned"] is True
    assert doc["limits"]["1"]["gemm_blas_threads"] == 1
    assert not [n for n in doc["notes"] if "BLAS" in n]
    assert "(1 BLAS thread(s))" in runner.format_table(doc)


def test_every_column_and_case_label_is_explained():
    cases = [Case("tiny", "forward", "gru", 1, 4, 2, 3, reset_after=False), TINY[0]]
    doc = _run(cases, [bench_peers.NumpyPeer()])
    lines = runner.format_table(doc).splitlines()
    header = next(line for line in lines if line.startswith("| case"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    explained = {}
    for line in lines:
        if line.startswith("- ") and ": " in line:
            names, meaning = line[2:].split(": ", 1)
            explained.update((name.strip(), meaning) for name in names.split(","))
    assert [c for c in columns if c not in explained] == []
    assert "gru(rb) forward" in header or any(line.startswith("| gru(rb)") for line in lines)
    assert "gru(rb) is reset_after=False" in explained["case"]
    assert "Above 100%" in explained["%GEMM"]
    for fraction, shown in ((1.5, "| 150% |"), (168.13, "| >999% |")):
        doc["results"][0]["fraction_gemm_own_shapes"] = fraction
        row = next(line for line in runner.format_table(doc).splitlines()
                   if line.startswith(f"| {doc['results'][0]['label']} |"))
        assert shown in row
