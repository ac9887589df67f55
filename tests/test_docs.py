"""The documentation users read: docstrings of every public name (what help() shows), the
links in README.md and docs/*.md, docs/api.md covering the Python and C API, and the C install
(`make -C src install` with its pkg-config file) building examples/c/stream.c as documented."""
import inspect
import os
import pydoc
import re
import shutil
import subprocess

import numpy as np
import pytest

import fastrnn
import fastrnn.io

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = [os.path.join(ROOT, "README.md")] + sorted(
    os.path.join(ROOT, "docs", name) for name in os.listdir(os.path.join(ROOT, "docs"))
    if name.endswith(".md"))


def _read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


# ---------------------------------------------------------------------------------------------
# Docstrings

def _public_methods(cls):
    """Public methods and properties of a layer class, with `__call__`: (name, object)."""
    out = []
    for name in sorted(dir(cls)):
        if name.startswith("_") and name != "__call__":
            continue
        attr = inspect.getattr_static(cls, name)
        if isinstance(attr, (staticmethod, classmethod)):
            attr = attr.__func__
        if isinstance(attr, property) or inspect.isfunction(attr):
            out.append((f"{cls.__name__}.{name}", attr))
    return out


def _documented_names():
    names = []
    for name in fastrnn.__all__:
        obj = getattr(fastrnn, name)
        if not isinstance(obj, str):  # __version__
            names.append((f"fastrnn.{name}", obj))
    names += [(f"fastrnn.io.{name}", getattr(fastrnn.io, name)) for name in fastrnn.io.__all__]
    for cls in (fastrnn.LSTM, fastrnn.GRU):
        names += _public_methods(cls)
    return names


def _parameters(obj):
    """Parameter names a docstring must mention. For a class, those of its constructor,
    following **kwargs into the base classes' constructors."""
    if inspect.isclass(obj):
        names = []
        for klass in obj.__mro__:
            init = klass.__dict__.get("__init__")
            if init is None or klass is object:
                continue
            params = list(inspect.signature(init).parameters.values())[1:]
            names += [p.name for p in params if p.kind is not p.VAR_KEYWORD]
            if not any(p.kind is p.VAR_KEYWORD for p in params):
                break
        return names
    if isinstance(obj, property):
        return []
    params = list(inspect.signature(obj).parameters.values())
    return [p.name for p in params if p.name != "self"]


@pytest.mark.parametrize("qualname, obj", [pytest.param(q, o, id=q) for q, o in
                                            _documented_names()])
def test_public_name_has_a_real_docstring(qualname, obj):
    """A docstring of its own (not object's), more than one line, naming every parameter."""
    doc = obj.__doc__
    assert doc and doc.strip(), f"{qualname} has no docstring"
    short = qualname.rsplit(".", 1)[-1]
    inherited = getattr(object, short, None)
    assert inherited is None or doc != inherited.__doc__, \
        f"{qualname} shows object's docstring {doc!r}"
    if isinstance(obj, property):
        return  # an attribute: one line says what it is
    assert len(inspect.cleandoc(doc).splitlines()) > 1, \
        f"{qualname}: a one-line docstring; give arguments, returns, errors and an example"
    missing = [p for p in _parameters(obj) if not re.search(rf"\b{re.escape(p)}\b", doc)]
    assert not missing, f"{qualname}: the docstring does not mention the parameters {missing}"


def test_torch_dropin_names_have_real_docstrings():
    """fastrnn.torch (the nn.LSTM / nn.GRU drop-ins), by the same rules."""
    pytest.importorskip("torch")
    import fastrnn.torch
    for name in fastrnn.torch.__all__:
        test_public_name_has_a_real_docstring(f"fastrnn.torch.{name}",
                                              getattr(fastrnn.torch, name))
    assert "fastrnn.torch" in _read(os.path.join(ROOT, "docs", "api.md"))


def test_keras_dropin_names_have_real_docstrings():
    """fastrnn.keras (the Keras 3 LSTM / GRU drop-ins), by the same rules."""
    pytest.importorskip("keras")
    import fastrnn.keras
    for name in fastrnn.keras.__all__:
        test_public_name_has_a_real_docstring(f"fastrnn.keras.{name}",
                                              getattr(fastrnn.keras, name))
    assert "fastrnn.keras.accelerate" in _read(os.path.join(ROOT, "docs", "api.md"))


def test_documented_names_cover_the_call_and_the_exports():
    """The walk above reaches what users call most (a guard against it silently shrinking)."""
    names = {qualname for qualname, _ in _documented_names()}
    for expected in ("LSTM.__call__", "GRU.backward", "LSTM.step", "LSTM.state_dict",
                     "LSTM.load_state_dict", "LSTM.gate", "LSTM.variant_config", "LSTM.to_torch",
                     "LSTM.to_onnx", "LSTM.save", "fastrnn.load", "fastrnn.io.inspect",
                     "fastrnn.mask_from_values", "fastrnn.learning_phase"):
        assert any(n.endswith(expected) for n in names), expected


@pytest.mark.parametrize("cls", [fastrnn.LSTM, fastrnn.GRU])
def test_help_of_a_layer_documents_the_call(cls):
    text = pydoc.render_doc(cls, renderer=pydoc.plaintext)
    assert "Call self as a function" not in text
    call = text[text.index("__call__("):]
    for word in ("mask", "lengths", "initial_state", "training"):
        assert word in call[:3000], word


# ---------------------------------------------------------------------------------------------
# Markdown: links and coverage

_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading):
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path):
    text = re.sub(r"```.*?```", "", _read(path), flags=re.S)  # no headings inside code blocks
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.*)$", text, flags=re.M)}


@pytest.mark.parametrize("path", DOCS, ids=lambda p: os.path.relpath(p, ROOT))
def test_relative_links_point_to_files_that_exist(path):
    text = re.sub(r"```.*?```", "", _read(path), flags=re.S)
    broken = []
    for target in _LINK.findall(text):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) \
            if file_part else path
        if not os.path.exists(dest):
            broken.append(target)
        elif anchor and dest.endswith(".md") and anchor not in _anchors(dest):
            broken.append(target)
    assert not broken, f"{os.path.relpath(path, ROOT)}: broken links {broken}"


def test_readme_links_the_reference_documents():
    readme = _read(os.path.join(ROOT, "README.md"))
    for doc in ("docs/api.md", "docs/variants.md", "docs/frnn-format.md"):
        assert f"]({doc}" in readme, doc
    assert "shared material" not in readme


def test_readme_keeps_the_two_setup_commands():
    """CI (.ci/run) runs the README's commands: they must stay as they are."""
    readme = _read(os.path.join(ROOT, "README.md"))
    for command in (
            'python3 -m venv .venv && . .venv/bin/activate && pip install ".[bench]" && '
            'fastrnn bench --quick',
            'python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[test]" && '
            'python -m pytest'):
        assert command in readme


def test_api_md_names_every_public_python_name():
    api = _read(os.path.join(ROOT, "docs", "api.md"))
    names = [n for n in fastrnn.__all__] + list(fastrnn.io.__all__)
    names += [q.split(".", 1)[1] for q, _ in _public_methods(fastrnn.LSTM)
              + _public_methods(fastrnn.GRU) if not q.endswith("__call__")]
    missing = sorted({n for n in names if not re.search(rf"\b{re.escape(n)}\b", api)})
    assert not missing, f"docs/api.md does not mention {missing}"


def test_api_md_names_every_c_function_and_status_code():
    header = _read(os.path.join(ROOT, "src", "fastrnn", "fastrnn.h"))
    api = _read(os.path.join(ROOT, "docs", "api.md"))
    functions = set(re.findall(r"\b(fr_\w+)\s*\(", header))
    codes = set(re.findall(r"^\s*(FR_E\w+)\s*=", header, flags=re.M))
    assert len(functions) > 30 and len(codes) >= 8
    missing = sorted(n for n in functions | codes if not re.search(rf"\b{n}\b", api))
    assert not missing, f"docs/api.md does not mention {missing}"


def test_readme_and_stream_example_write_frnn_the_same_way():
    """Both tell a C user how to write a .frnn file from Python, and it works as written."""
    how = 'layer.save("model.frnn")'
    assert how in _read(os.path.join(ROOT, "README.md"))
    assert how in _read(os.path.join(ROOT, "examples", "c", "stream.c"))
    assert how in _read(os.path.join(ROOT, "docs", "api.md"))


# ---------------------------------------------------------------------------------------------
# C install and pkg-config

def _have_c_toolchain():
    return all(shutil.which(tool) for tool in ("make", "cc", "pkg-config"))


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """`make install` of a scratch copy of src/ (the tree's own build/ is left alone). The
    copy keeps build/'s objects with their times, so make rebuilds only what is out of date
    (a full build takes minutes on a small machine; tests/test_c_core.py does that)."""
    if not _have_c_toolchain():
        pytest.skip("needs make, a C compiler and pkg-config")
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"
    shutil.copytree(os.path.join(ROOT, "src"), src,
                    ignore=shutil.ignore_patterns("*.pc", "test_*", "frnn_fuzz"))
    prefix = tmp / "prefix"
    proc = subprocess.run(["make", "-C", str(src), f"-j{min(8, os.cpu_count() or 1)}",
                           "install", f"PREFIX={prefix}"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return src, prefix


def _pkg_config(prefix, *args):
    env = dict(os.environ, PKG_CONFIG_PATH=str(prefix / "lib" / "pkgconfig"))
    proc = subprocess.run(["pkg-config", *args, "fastrnn"], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_install_puts_header_libraries_and_pc_file_in_prefix(installed):
    _, prefix = installed
    for rel in ("include/fastrnn.h", "lib/libfastrnn.a", "lib/libfastrnn.so",
                "lib/pkgconfig/fastrnn.pc"):
        assert (prefix / rel).is_file(), rel
    assert _pkg_config(prefix, "--modversion") == [fastrnn.__version__]
    assert _pkg_config(prefix, "--cflags") == [f"-I{prefix}/include"]
    assert _pkg_config(prefix, "--libs") == [f"-L{prefix}/lib", "-lfastrnn"]
    static = _pkg_config(prefix, "--static", "--libs")
    assert "-fopenmp" in static and "-lm" in static


def test_pc_file_of_a_build_without_openmp_asks_for_no_openmp(installed, tmp_path):
    src, _ = installed
    prefix = tmp_path / "prefix"
    proc = subprocess.run(["make", "-C", str(src), "build/fastrnn.pc", "OPENMP=",
                           f"PREFIX={prefix}"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    text = (src / "build" / "fastrnn.pc").read_text()
    assert re.search(r"^Libs.private:\s*-lm\s*$", text, flags=re.M), text
    assert f"prefix={prefix}" in text


def _run_stream(exe, model, x, tmp_path, env=None):
    x_path, y_path = tmp_path / "in.bin", tmp_path / "out.bin"
    x.tofile(x_path)
    proc = subprocess.run([str(exe), str(model), str(x_path), str(y_path)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return np.fromfile(y_path, dtype=x.dtype)


@pytest.mark.parametrize("linkage", ["shared", "static"])
def test_stream_example_builds_against_the_install(installed, tmp_path, linkage):
    """examples/c/stream.c compiled with the documented commands runs a .frnn file written
    with layer.save and gives the layer's outputs (a numpy LSTM recurrence is the reference)."""
    _, prefix = installed
    exe = tmp_path / "stream"
    example = os.path.join(ROOT, "examples", "c", "stream.c")
    if linkage == "shared":
        flags = _pkg_config(prefix, "--cflags", "--libs")
    else:
        libdir = _pkg_config(prefix, "--variable=libdir")[0]
        flags = _pkg_config(prefix, "--cflags") + [os.path.join(libdir, "libfastrnn.a"),
                                                   "-fopenmp"]
    proc = subprocess.run(["cc", "-O2", example, *flags, "-lm", "-o", str(exe)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    env = dict(os.environ, LD_LIBRARY_PATH=str(prefix / "lib"))
    if linkage == "shared" and shutil.which("ldd"):
        linked = subprocess.run(["ldd", str(exe)], capture_output=True, text=True, env=env).stdout
        assert str(prefix / "lib" / "libfastrnn.so") in linked, linked

    layer = fastrnn.LSTM(3, 5, seed=1, dtype="float64")
    model = tmp_path / "model.frnn"
    layer.save(str(model))
    x = np.random.default_rng(0).standard_normal((40, 3))
    y = _run_stream(exe, model, x, tmp_path, env).reshape(40, 5)

    w = {g: layer.gate(g) for g in ("input", "forget", "cell", "output")}
    sig = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    h, c, expected = np.zeros(5), np.zeros(5), []
    for x_t in x:
        pre = {g: x_t @ p.kernel + h @ p.recurrent + p.bias for g, p in w.items()}
        c = sig(pre["forget"]) * c + sig(pre["input"]) * np.tanh(pre["cell"])
        h = sig(pre["output"]) * np.tanh(c)
        expected.append(h)
    np.testing.assert_allclose(y, np.array(expected), rtol=1e-10, atol=1e-12)
