"""The C core builds and runs on its own, without Python (src/Makefile, src/tests)."""
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(shutil.which("make") is None or shutil.which("cc") is None,
                    reason="needs make and a C compiler")
@pytest.mark.parametrize("openmp", ["-fopenmp", ""], ids=["openmp", "no-openmp"])
def test_c_core_standalone(tmp_path, openmp):
    """The C test compares the core with a naive C reference; without OpenMP the same
    results must come out of a single-threaded build."""
    src = os.path.join(ROOT, "src")
    build = tmp_path / "src"
    shutil.copytree(src, build, ignore=shutil.ignore_patterns("build"))
    proc = subprocess.run(["make", "-C", str(build), "test", f"OPENMP={openmp}"],
                          capture_output=True, text=True, timeout=600)
    print(proc.stdout[-3000:], proc.stderr[-3000:])
    assert proc.returncode == 0
    # One "N passed, M failed" line per C test program, with at least this many checks.
    least = {"test_core": 1000, "test_backward": 1000, "test_stream": 1000, "test_qgemm": 1000,
             "test_team": 100, "frnn_fuzz": 1000}
    summaries = [line for line in proc.stdout.splitlines()
                 if line.endswith(" failed") and ", " in line]
    assert len(summaries) == len(least), summaries
    for (program, minimum), line in zip(least.items(), summaries):
        passed, failed = (int(part.split()[0]) for part in line.split(","))
        assert failed == 0 and passed >= minimum, (program, line)
    # The core never includes Python.h.
    for root, _, files in os.walk(src):
        for name in files:
            if name.endswith((".c", ".h", ".inc")):
                with open(os.path.join(root, name)) as f:
                    assert "Python.h" not in f.read(), name
