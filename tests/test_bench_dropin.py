"""`fastrnn bench --suite dropin`: whole PyTorch / Keras models, stock vs accelerated.

The checks each case runs before timing are parity tests of whole models (embedding or front
end, recurrent layers, head; for training the loss and every parameter after one optimizer
step), so they run here on every case; timing is only smoke-tested (one repeat)."""
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")

from fastrnn.bench import cli, dropin, suites  # noqa: E402

CASES = {c.name: c for c in dropin.CASES}


def _needs(case):
    pytest.importorskip("torch")
    if case.framework == "keras":
        keras = pytest.importorskip("keras")
        if keras.backend.backend() != "torch":
            pytest.skip("the Keras rows time the torch backend")


@pytest.mark.parametrize("name", sorted(CASES))
def test_accelerated_model_matches_stock_before_timing(name):
    case = CASES[name]
    _needs(case)
    stock, fast, check = dropin.BUILDERS[name](dropin._framework_dtype(case, "float32"))
    ref, got = check()
    assert ref.shape == got.shape and ref.size > 0
    # the models computed something (not zeros), and the same thing
    assert np.max(np.abs(ref)) > 1e-3
    assert np.max(np.abs(ref - got)) <= 1e-4 * max(1.0, np.max(np.abs(ref)))


def test_a_case_runs_and_is_timed():
    _needs(CASES["stream-gru"])
    doc = dropin.run_dropin([1], cases=[CASES["stream-gru"]], repeats=1, min_time=0.0)
    (row,) = doc["results"]
    assert row["ratio"] and row["stock"]["median_s"] > 0 and row["fastrnn"]["median_s"] > 0
    assert row["ratio"] == pytest.approx(row["stock"]["median_s"] / row["fastrnn"]["median_s"])
    assert doc["failures"] == [] and doc["summary"]["cases"] == 1
    table = dropin.format_table(doc)
    assert "stream-gru" in table and doc["machine"]["cpu"] in table


def test_a_disagreeing_model_is_reported_and_not_timed():
    torch = pytest.importorskip("torch")
    case = CASES["stream-gru"]

    def wrong(dtype):
        stock, fast, check = dropin.BUILDERS["stream-gru"](dtype)

        def bad_check():
            ref, got = check()
            return ref, got + 0.01 * (1 + np.abs(ref))
        timed = []
        return (lambda: timed.append(1)), (lambda: timed.append(1)), bad_check

    doc = dropin.run_dropin([1], cases=[case], builders={"stream-gru": wrong}, repeats=1)
    (row,) = doc["results"]
    assert row["note"].startswith("FAILED") and row["ratio"] is None and row["stock"] is None
    assert len(doc["failures"]) == 1 and doc["summary"] is None


def test_a_missing_framework_is_a_skip_with_its_reason():
    def missing(dtype):
        raise dropin.Skip("Keras 3 is not installed")
    case = dropin.DropinCase("x", "keras", "inference", "d", 2.0)
    doc = dropin.run_dropin([1], cases=[case], builders={"x": missing})
    (row,) = doc["results"]
    assert row["note"] == "skipped: Keras 3 is not installed" and doc["failures"] == []


def test_thread_counts_are_restored():
    import fastrnn
    torch = pytest.importorskip("torch")
    before, torch_before = fastrnn.get_num_threads(), torch.get_num_threads()
    dropin.run_dropin([1], cases=[CASES["stream-gru"]], repeats=1, min_time=0.0)
    assert fastrnn.get_num_threads() == before and torch.get_num_threads() == torch_before


def test_cli_knows_the_suite_and_layer_grids_refuse_it(capsys):
    assert "dropin" in suites.SUITE_CHOICES
    assert all(c.suite != "dropin" for c in suites.select("all"))
    with pytest.raises(ValueError, match="whole models"):
        suites.select("dropin")
    assert cli.main(["--suite", "dropin", "--plot", "x.png", "--no-progress"]) in (1, 2)


def test_cli_runs_the_quick_suite_and_writes_json(tmp_path, monkeypatch, capsys):
    _needs(CASES["stream-gru"])
    # one cheap case keeps the test short; the CLI path is the same for all
    monkeypatch.setattr(dropin, "CASES", (CASES["stream-gru"],))
    out = tmp_path / "d.json"
    assert cli.main(["--suite", "dropin", "--quick", "--threads", "1", "--repeats", "1",
                     "--no-progress", "--json", str(out)]) == 0
    import json
    doc = json.loads(out.read_text())
    assert doc["schema"] == dropin.SCHEMA and doc["results"][0]["case"] == "stream-gru"
    assert "stream-gru" in capsys.readouterr().out
