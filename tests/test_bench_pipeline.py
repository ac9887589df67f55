"""`fastrnn bench --suite pipeline`: structure, neighbours, thread settings restored, table,
history line and CLI. (Timings are measured, never asserted.)"""
import json

import numpy as np
import pytest

import fastrnn
from fastrnn.bench import pipeline, record, suites
from fastrnn.bench.cli import main as bench_main

# small, but enough work per step for 2 threads (a case run on one thread has no target row)
TINY = pipeline.PipelineCase("lstm", 8, 5, 64, 128, quick=True)
ONE_THREAD = pipeline.PipelineCase("lstm", 2, 5, 16, 16, quick=True)


def test_run_case_times_fastrnn_after_every_available_neighbour():
    before = fastrnn.get_num_threads()
    res = pipeline.run_case(TINY, 2, samples=7, budget=1.0)
    assert fastrnn.get_num_threads() == before  # the block's thread count is restored
    assert res["fastrnn_alone"] > 0 and res["fastrnn_1t"] > 0
    # every neighbour is there: timed, or with the reason it was skipped
    assert {"onnxruntime", "openvino", "torch", "numpy (BLAS)"} <= set(res["neighbours"])
    timed = {k: v for k, v in res["neighbours"].items() if "fastrnn_after" in v}
    assert "numpy (BLAS)" in timed
    for name, n in timed.items():
        assert n["fastrnn_after"] > 0 and n["neighbour_alone"] > 0, name
        assert n["vs_alone"] == pytest.approx(n["fastrnn_after"] / res["fastrnn_alone"])
        assert n["vs_one_thread"] == pytest.approx(n["fastrnn_after"] / res["fastrnn_1t"])
        assert n["spinning"] == (name != "onnxruntime (no spinning)")
    for name, n in res["neighbours"].items():
        if "fastrnn_after" not in n:
            assert n["note"].startswith("skipped: "), name


def test_onnxruntime_neighbours_default_and_not_spinning():
    pytest.importorskip("onnxruntime", reason="ONNX Runtime not installed (fastrnn[bench])")
    pytest.importorskip("onnx", reason="onnx not installed (fastrnn[bench])")
    found = pipeline.neighbours(TINY, 2)
    for name in ("onnxruntime", "onnxruntime (no spinning)"):
        front, note = found[name]
        assert front is not None, note
        y = front()[0]
        assert y.shape == (TINY.B * TINY.T, TINY.I) and (y >= 0).all()  # MatMul + Relu


def test_front_end_is_a_matmul_and_relu():
    pytest.importorskip("onnx", reason="onnx not installed (fastrnn[bench])")
    ort = pytest.importorskip("onnxruntime", reason="ONNX Runtime not installed")
    model, w = pipeline._front_end_onnx(8)
    x = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    got = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, np.maximum(x @ w, 0), rtol=1e-5, atol=1e-6)


def test_document_table_summary_and_history_line(monkeypatch):
    monkeypatch.setattr(pipeline, "CASES", (TINY,))
    doc = pipeline.run_pipeline([1, 2], quick=True, repeats=1, budget=1.0)
    assert doc["schema"] == pipeline.SCHEMA and doc["settings"]["suite"] == "pipeline"
    json.dumps(doc)  # serialisable as it is
    assert [r["threads"] for r in doc["results"]] == [1, 2]
    assert doc["summary"] and all(r["threads"] == 2 for r in doc["summary"])
    for row in doc["summary"]:
        assert row["meets_one_thread"] == (row["vs_one_thread"] <= pipeline.TARGET_VS_ONE_THREAD)
    table = pipeline.format_table(doc)
    assert "| (alone) |" in table and "numpy (BLAS)" in table and "Targets" in table
    (suite, text), = record.summary_cells(doc)
    assert suite == "pipeline" and "targets met" in text


def test_cli_runs_the_suite_and_refuses_plot(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(pipeline, "CASES", (TINY,))
    out = tmp_path / "p.json"
    assert bench_main(["--suite", "pipeline", "--quick", "--threads", "1", "--repeats", "1",
                       "--no-progress", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["settings"]["suite"] == "pipeline"
    assert "fastrnn after another runtime's op" in capsys.readouterr().out
    assert bench_main(["--suite", "pipeline", "--plot", str(tmp_path / "p.png")]) == 2
    assert bench_main(["--suite", "pipeline", "--dtype", "float64"]) == 2  # float32 layers only
    with pytest.raises(ValueError, match="own cases"):
        suites.select("pipeline")


def test_case_too_small_to_split_has_no_target_row(monkeypatch):
    monkeypatch.setattr(pipeline, "CASES", (ONE_THREAD,))
    doc = pipeline.run_pipeline([2], quick=True, repeats=1, budget=1.0)
    assert doc["results"][0]["threads_used"] == 1
    assert doc["summary"] == []
    assert "| 2 (1 used) | (alone) |" in pipeline.format_table(doc)
