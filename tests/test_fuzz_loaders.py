"""A bounded run of the loader fuzzer (tools/fuzz_loaders.py): mutated framework-written files
and fastrnn's own formats must load or raise ValueError / ImportError - no other exception, no
crash, no hang. Longer runs: `python tools/fuzz_loaders.py --seconds 300`."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
import fuzz_loaders  # noqa: E402


def test_bounded_fuzz_run_finds_nothing(tmp_path, capsys):
    pytest.importorskip("h5py")
    pytest.importorskip("onnx")
    rc = fuzz_loaders.main(["--iterations", "126", "--seed", "1", "--out", str(tmp_path)])
    out = capsys.readouterr()
    assert rc == 0, out.err[-3000:]
    assert "126 inputs" in out.out and "0 findings" in out.out


FINDINGS = os.path.join(os.path.dirname(__file__), "..", "fuzz-findings")


@pytest.mark.parametrize("name", sorted(os.listdir(FINDINGS)) if os.path.isdir(FINDINGS) else [])
def test_earlier_findings_load_or_raise_value_error(name):
    """Inputs the fuzzer once flagged (kept in fuzz-findings/): each now loads or is refused with
    a ValueError / ImportError. E.g. node names of invalid UTF-8, which protobuf hands over as
    bytes, and an index file under a name without ".index"."""
    import fastrnn
    if name.split(".")[-2] in ("onnx",):
        pytest.importorskip("onnx")
    try:
        fastrnn.load(os.path.join(FINDINGS, name))
    except (ValueError, ImportError):
        pass
