"""pytest-benchmark grid options: --bench-suite picks the grid (default quick-default),
--bench-threads the thread counts (default 1 and all usable cores)."""
import os

import pytest

from fastrnn.bench import suites


def pytest_addoption(parser):
    parser.addoption("--bench-suite", default="quick-default", choices=suites.SUITE_CHOICES)
    parser.addoption("--bench-threads", default=None, help="comma-separated, e.g. 1,2")


def pytest_generate_tests(metafunc):
    config = metafunc.config
    if "case" in metafunc.fixturenames:
        cases = suites.select(config.getoption("--bench-suite"))
        metafunc.parametrize("case", cases, ids=[c.label.replace(" ", "-") for c in cases])
    if "threads" in metafunc.fixturenames:
        text = config.getoption("--bench-threads")
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        threads = ([int(t) for t in text.split(",")] if text else sorted({1, cores or 1}))
        metafunc.parametrize("threads", threads, ids=[f"threads{n}" for n in threads])


@pytest.fixture
def dtype():
    return "float32"
