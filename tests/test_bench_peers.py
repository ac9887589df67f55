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


def _run(case, peers, threads=1):
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
            return runner.run_case(case, threads, impl, peers, dtype="float32", repeats=2,
                                   min_time=0.001)
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
    for case in (SMALL, MASKED):
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
    for case in (SMALL, MASKED):
        res = _run(case, [peer])
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


def test_litert_runs_the_batch_one_cases(tensorflow_available):
    pytest.importorskip("ai_edge_litert", reason="LiteRT not installed (fastrnn[bench-all])")
    from fastrnn.bench.tf_peers import LiteRtPeer
    res = _run(SMALL_GRU, [LiteRtPeer()])
    entry = res["peers"]["litert"]
    assert entry["ok"], entry["note"]
    assert entry["max_abs_err"] <= 1e-5
    res = _run(SMALL, [LiteRtPeer()])    # B = 2: not a LiteRT case
    assert res["peers"]["litert"]["note"].startswith("skipped: LiteRT runs the batch-1")
