"""`fastrnn bench --suite quantized`: structure, error checks before timing, CLI conventions.
(Timings are measured, never asserted.)"""
import numpy as np
import pytest

from fastrnn.bench import quantized
from fastrnn.bench.cli import main as bench_main

TINY = quantized.QuantCase("lstm", 2, 3, 16)


def test_run_case_checks_errors_and_times_every_implementation(tmp_path):
    res = quantized.run_case(TINY, 1, str(tmp_path), repeats=2, min_time=0.0)
    assert {"float32", "int8", "bf16"} <= set(res["results"])
    for name, r in res["results"].items():
        assert r["median_s"] > 0 and r["max_abs_err"] <= quantized.MAX_ERROR, name
    assert res["results"]["int8"]["max_abs_err"] > 0  # really quantized
    assert {"int8 vs float32", "bf16 vs float32"} <= set(res["ratios"])
    for peer in ("torch-qint8", "ort-dynamic"):
        assert peer in res["results"] or any(n.startswith(peer) for n in res["notes"])


def test_openvino_bf16_is_the_peer_of_fastrnn_bf16(tmp_path):
    pytest.importorskip("openvino", reason="OpenVINO not installed (fastrnn[bench-all])")
    res = quantized.run_case(TINY, 1, str(tmp_path), repeats=2, min_time=0.0)
    if "openvino-bf16" not in res["results"]:  # no bf16 on this CPU: said so
        assert any(n.startswith("openvino-bf16 skipped") for n in res["notes"])
        return
    r = res["results"]["openvino-bf16"]
    assert 0 < r["max_abs_err"] <= quantized.MAX_ERROR   # bf16, not float32
    assert "bf16 vs openvino-bf16" in res["ratios"]
    assert "int8 vs openvino-bf16" not in res["ratios"]


def test_a_peer_that_disagrees_is_reported_and_not_timed(tmp_path, monkeypatch):
    monkeypatch.setattr(quantized, "_torch_qint8",
                        lambda layer: (lambda x: np.zeros((2, 3, 16), np.float32) + 1.0, ""))
    res = quantized.run_case(TINY, 1, str(tmp_path), repeats=2, min_time=0.0)
    assert "torch-qint8" not in res["results"]
    assert any("torch-qint8 FAILED" in n for n in res["notes"])


def test_run_quantized_document_and_table(monkeypatch):
    monkeypatch.setattr(quantized, "CASES", (TINY,))
    doc = quantized.run_quantized([1], repeats=2, min_time=0.0)
    assert doc["schema"] == quantized.SCHEMA and doc["machine"]["int8_kernel"].startswith("int8-")
    assert doc["machine"]["bf16_kernel"].startswith("bf16-")
    table = quantized.format_table(doc)
    assert "| lstm-B2-H16-T3 | 1 |" in table and "bf16 vs f32" in table


@pytest.mark.parametrize("args", [["--plot", "x.png"], ["--dtype", "float64"]])
def test_cli_refuses_what_the_suite_cannot_do(args, capsys):
    assert bench_main(["--suite", "quantized", *args]) == 2
