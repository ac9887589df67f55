"""The optional peers of `fastrnn bench` (OpenVINO, TensorFlow with and without XLA, LiteRT):
each runs a small case, agrees with fastrnn before it is timed, and leaves nothing running.
Skipped with the reason where the package is not installed (`pip install fastrnn[bench-all]`).
Also the self-timed protocol of the timing harness that the child-process peers use."""
import multiprocessing
import time

import pytest

from fastrnn.bench import runner
from fastrnn.bench.suites import Case
from fastrnn.bench.timing import interleaved

SMALL = Case("test", "forward", "lstm", 2, 7, 5, 24)
SMALL_GRU = Case("test", "forward", "gru", 1, 6, 3, 16)
MASKED = Case("test", "masked", "gru", 3, 8, 4, 16)
STEP = Case("test", "step", "lstm", 2, 5, 3, 8)
STEP_GRU_RB = Case("test", "step", "gru", 1, 4, 3, 8, reset_after=False)


def _run(case, peers, threads=1):
    return _run_cases([case], peers, threads)[0]


def _run_cases(cases, peers, threads=1):
    """The cases one after the other at one thread count (one TensorFlow child for them all)."""
    impl = runner.FastrnnImpl()
    for p in peers:
        note = p.setup()
        if note:
            pytest.skip(note)
    try:
        import contextlib
        with contextlib.ExitStack() as stack:
            for p in [impl, *peers]:
                stack.enter_context(p.threads(threads))
            return [runner.run_case(case, threads, impl, peers, dtype="float32", repeats=2,
                                    min_time=0.001) for case in cases]
    finally:
        from fastrnn.bench.tf_peers import close_workers
        close_workers()


def test_self_timed_callables_report_their_own_time():
    calls = []

    def remote(min_time=0.0):
        calls.append(min_time)
        time.sleep(0.02)          # the request's round trip: must not be recorded
        return 0.001              # what the other process measured per call
    remote.self_timed = True
    times = interleaved({"remote": remote, "local": lambda: time.sleep(0.001)}, repeats=3,
                        min_time=0.005)
    assert list(times["remote"]) == [0.001, 0.001, 0.001]
    assert all(m == 0.005 for m in calls[1:])   # warm-up first, then timed blocks
    assert times["local"].min() >= 0.001


def test_openvino_matches_and_its_bf16_default_is_never_the_best_peer():
    pytest.importorskip("openvino", reason="OpenVINO not installed (fastrnn[bench-all])")
    from fastrnn.bench.peers import OnnxRuntimePeer, OpenVinoPeer
    for case in (SMALL, MASKED, STEP):
        res = _run(case, [OpenVinoPeer("f32")])
        entry = res["peers"]["openvino"]
        assert entry["ok"], entry["note"]
        assert entry["max_abs_err"] <= 1e-5
    default = OpenVinoPeer(None)
    note = default.setup()
    if note:  # this CPU's default is float32: the row is skipped, saying so
        assert "same computation" in note
        return
    res = _run(SMALL, [OnnxRuntimePeer(), default])
    assert res["peers"]["openvino-default"]["ok"]
    assert res["peers"]["openvino-default"]["reduced_precision"]
    assert res["best_peer"] == "onnxruntime"


@pytest.fixture(scope="module")
def tensorflow_available():
    pytest.importorskip("tensorflow", reason="TensorFlow not installed (fastrnn[bench-all])")


@pytest.mark.parametrize("xla", [False, True])
def test_tensorflow_peers_match_and_stop_their_process(tensorflow_available, xla):
    from fastrnn.bench.tf_peers import TensorFlowPeer
    peer = TensorFlowPeer(xla=xla)
    for res in _run_cases((SMALL, MASKED, STEP, STEP_GRU_RB), [peer]):
        entry = res["peers"][peer.name]
        assert entry["ok"], entry["note"]
        assert entry["max_abs_err"] <= 1e-5
        assert entry["median_s"] > 0
    assert not [p for p in multiprocessing.active_children()
                if p.name.startswith("fastrnn-bench-tf")]


def test_tensorflow_peers_share_their_process_in_one_case(tensorflow_available):
    """tf and XLA (and LiteRT) prepare one after the other in the same child, then every one
    is timed: each must still find its own call."""
    from fastrnn.bench.tf_peers import LiteRtPeer, TensorFlowPeer
    peers = [TensorFlowPeer(), TensorFlowPeer(xla=True)]
    try:
        import ai_edge_litert  # noqa: F401
        peers.append(LiteRtPeer())
    except ImportError:
        pass
    res = _run(SMALL_GRU, peers)
    for p in peers:
        assert res["peers"][p.name]["ok"], res["peers"][p.name]["note"]


def test_litert_runs_the_forward_cases(tensorflow_available):
    pytest.importorskip("ai_edge_litert", reason="LiteRT not installed (fastrnn[bench-all])")
    from fastrnn.bench.tf_peers import LiteRtPeer
    one, two, masked = _run_cases((SMALL_GRU, SMALL, MASKED), [LiteRtPeer()])
    for res in (one, two):   # B = 1 and B = 2
        entry = res["peers"]["litert"]
        assert entry["ok"], entry["note"]
        assert entry["max_abs_err"] <= 1e-5
    # not a LiteRT case: skipped, saying why
    assert masked["peers"]["litert"]["note"].startswith("skipped: LiteRT runs the forward")


def test_a_benchmark_run_leaves_no_tensorflow_process(tensorflow_available):
    """One child per thread count during `run_benchmark`, none once it returns."""
    from fastrnn.bench.tf_peers import TensorFlowPeer

    def children():
        return [p for p in multiprocessing.active_children()
                if p.name.startswith("fastrnn-bench-tf")]
    doc = runner.run_benchmark([SMALL], [1, 2], repeats=2, min_time=0.001,
                               peers=[TensorFlowPeer()], progress=False, square_n=64)
    rows = doc["results"]
    assert [r["threads"] for r in rows] == [1, 2]
    assert all(r["peers"]["tensorflow"]["ok"] for r in rows), rows
    assert not children()
