"""show_config's warnings about other threaded runtimes in the process (README, "Running next
to other runtimes"): what is detected from mapped libraries and imported modules."""
import io

import pytest

import fastrnn
from fastrnn import _config


@pytest.fixture
def two_threads():
    before = fastrnn.get_num_threads()
    fastrnn.set_num_threads(2)
    yield
    fastrnn.set_num_threads(before)


def test_a_second_openmp_runtime_is_reported(two_threads):
    libs = ["/usr/lib/x86_64-linux-gnu/libgomp.so.1", "/opt/x/lib/libiomp5.so", "/lib/libc.so.6"]
    (w,) = _config.runtime_warnings(libraries=libs, modules={})
    assert "2 OpenMP runtimes" in w and "libgomp.so.1" in w and "libiomp5.so" in w
    assert "OMP_WAIT_POLICY=PASSIVE" in w


def test_one_openmp_runtime_and_nothing_imported_is_quiet(two_threads):
    libs = ["/usr/lib/x86_64-linux-gnu/libgomp.so.1", "/lib/libm.so.6"]
    assert _config.runtime_warnings(libraries=libs, modules={}) == []


def test_onnxruntime_and_openvino_imported_are_reported(two_threads):
    ws = _config.runtime_warnings(libraries=[], modules={"onnxruntime": object(),
                                                         "openvino": object()})
    assert any("session.intra_op.allow_spinning" in w for w in ws)
    assert any(w.startswith("openvino is imported") for w in ws)


def test_one_thread_never_warns():
    before = fastrnn.get_num_threads()
    fastrnn.set_num_threads(1)
    try:
        libs = ["/a/libgomp.so.1", "/b/libomp.so"]
        assert _config.runtime_warnings(libraries=libs, modules={"onnxruntime": 1}) == []
    finally:
        fastrnn.set_num_threads(before)


def test_mapped_libraries_are_read_from_proc(tmp_path):
    maps = tmp_path / "maps"
    maps.write_text(
        "7f00-7f01 r-xp 00000000 08:01 123 /usr/lib/libgomp.so.1\n"
        "7f02-7f03 r--p 00000000 00:00 0 \n"
        "7f04-7f05 r-xp 00000000 08:01 124 /usr/lib/libgomp.so.1\n"
        "7f06-7f07 r-xp 00000000 08:01 125 /opt/a b/libfoo.so.2\n"
        "7f08-7f09 rw-p 00000000 00:00 0 [heap]\n")
    assert _config._loaded_libraries(str(maps)) == ["/opt/a b/libfoo.so.2", "/usr/lib/libgomp.so.1"]
    assert _config._loaded_libraries(str(tmp_path / "missing")) == []


def test_show_config_prints_the_wait_policy_and_the_warnings(two_threads, monkeypatch):
    monkeypatch.setattr(_config, "runtime_warnings", lambda: ["something to check"])
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    out = io.StringIO()
    fastrnn.show_config(file=out)
    text = out.getvalue()
    assert "OMP_WAIT_POLICY: PASSIVE" in text and "warning:         something to check" in text
