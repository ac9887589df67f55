"""Recorded benchmark results: latest run per suite, one history line per run, the README's
generated "where it stands" block (fastrnn.bench.record)."""
import json
import os

import pytest

from fastrnn.bench import record

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _doc(suite="batch", quick=False, geo=1.25, low=0.9):
    return {"date": "2026-12-04T02:00:00+00:00", "settings": {"suite": suite, "quick": quick},
            "machine": {"cpu": "Test CPU", "cpu_family": 26, "cpu_model": 2,
                        "usable_cores": 2, "kernel_variant": "avx512"},
            "peers": {"torch": {"available": True, "version": "2.13.0"},
                      "openvino": {"available": False, "version": None}},
            "summary": [{"suite": suite, "threads": 1, "cases": 3,
                         "geomean_vs_best_peer": geo, "min_vs_best_peer": low,
                         "min_case": "lstm forward B=8"},
                        {"suite": suite, "threads": 2, "cases": 3,
                         "geomean_vs_best_peer": 2 * geo, "min_vs_best_peer": 2 * low,
                         "min_case": "gru forward B=8"}]}


def test_record_keeps_the_latest_run_and_appends_history(tmp_path):
    record.record(_doc(geo=1.25), "table one", str(tmp_path), commit="abc1234")
    record.record(_doc(geo=1.5), "table two", str(tmp_path), commit="def5678")
    assert (tmp_path / "batch-latest.md").read_text() == "table two\n"
    latest = json.loads((tmp_path / "batch-latest.json").read_text())
    assert latest["summary"][0]["geomean_vs_best_peer"] == 1.5
    assert latest["commit"] == "def5678"
    history = (tmp_path / record.HISTORY).read_text().splitlines()
    assert sum(line.startswith("# Benchmark history") for line in history) == 1
    rows = [line for line in history if line.startswith("| 2026")]
    assert rows == [
        "| 2026-12-04 02:00 | Test CPU (family 26 model 2), 2 cores | abc1234 | batch | "
        "t1 1.25x / 0.90x; t2 2.50x / 1.80x |",
        "| 2026-12-04 02:00 | Test CPU (family 26 model 2), 2 cores | def5678 | batch | "
        "t1 1.50x / 0.90x; t2 3.00x / 1.80x |"]


def test_quick_runs_and_own_suites_are_told_apart():
    assert record.summary_cells(_doc(quick=True))[0][0] == "batch (quick)"
    own = {"settings": {"suite": "dropin"}, "summary": {"geomean": 2.5, "min": 1.6}}
    assert record.summary_cells(own) == [("dropin", "2.50x / 1.60x")]
    q = {"settings": {"suite": "quantized"},
         "summary": {"int8 vs float32": {"geomean": 4.0, "min": 2.0, "rows": 3}}}
    assert record.summary_cells(q) == [("quantized", "int8 vs float32 4.00x / 2.00x")]


def test_update_readme_replaces_only_the_generated_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{record.README_BEGIN}\nold\n{record.README_END}\noutro\n")
    record.update_readme(str(readme), _doc(suite="all"), "bench/results/all-latest.json")
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("\noutro\n") and "old" not in text
    assert "| all | 1 | 3 | 1.25x | 0.90x (lstm forward B=8) |" in text
    assert "Peers in that run: torch 2.13.0." in text
    (tmp_path / "bare.md").write_text("no block")
    with pytest.raises(ValueError, match="no generated"):
        record.update_readme(str(tmp_path / "bare.md"), _doc(), "x")


def test_the_readme_shows_the_latest_full_run():
    """README.md's block is what record.readme_block renders from the recorded full run."""
    latest = os.path.join(ROOT, "bench", "results", "all-latest.json")
    if not os.path.exists(latest):
        pytest.skip("no recorded full run in bench/results")
    with open(latest) as f:
        doc = json.load(f)
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    assert record.readme_block(doc, "bench/results/all-latest.json") in readme


def test_cli_refuses_a_missing_record_folder(tmp_path, capsys):
    from fastrnn.bench import cli
    with pytest.raises(SystemExit) as e:
        cli.main(["--suite", "batch", "--quick", "--record", str(tmp_path / "nope")])
    assert e.value.code == 2
    assert "not a folder" in capsys.readouterr().err
