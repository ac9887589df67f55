"""Packaging: the cibuildwheel configuration in pyproject.toml, and an sdist that holds every
file a wheel is built from (docs/wheels.md). Fast (a few seconds): nothing is compiled."""
import fnmatch
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VERSIONS = ("3.10", "3.11", "3.12", "3.13", "3.14")
PLATFORMS = {  # identifier suffixes cibuildwheel gives each (platform, arch) we release
    "linux": ["manylinux_x86_64", "manylinux_aarch64", "musllinux_x86_64", "musllinux_aarch64"],
    "macos": ["macosx_x86_64", "macosx_arm64"],
    "windows": ["win_amd64"],
}
# interpreters cibuildwheel could otherwise build, none of which is released (other
# architectures are left out by the archs lists: test_platform_archs)
NOT_RELEASED = ["pp310-manylinux_x86_64", "pp311-macosx_arm64", "cp39-manylinux_x86_64",
                "cp314t-manylinux_x86_64", "cp313t-macosx_arm64", "cp315-manylinux_x86_64",
                "cp315-macosx_arm64"]


@pytest.fixture(scope="module")
def pyproject():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


@pytest.fixture(scope="module")
def cibw(pyproject):
    assert "cibuildwheel" in pyproject.get("tool", {}), "pyproject.toml: no [tool.cibuildwheel]"
    return pyproject["tool"]["cibuildwheel"]


def _patterns(value):
    """A cibuildwheel selector: a space-separated string or a list of them."""
    items = [value] if isinstance(value, str) else list(value)
    return [p for item in items for p in item.split()]


def _selected(cibw, identifier):
    build = _patterns(cibw.get("build", "*"))
    skip = _patterns(cibw.get("skip", ""))
    return (any(fnmatch.fnmatch(identifier, p) for p in build)
            and not any(fnmatch.fnmatch(identifier, p) for p in skip))


def _tag(version):
    return "cp" + version.replace(".", "")


def test_build_selector_names_cpython_310_to_314(cibw):
    build = _patterns(cibw["build"])
    assert sorted(build) == sorted(f"{_tag(v)}-*" for v in VERSIONS), build
    for ident in NOT_RELEASED:
        assert not _selected(cibw, ident), f"{ident} would be built"


def test_build_versions_satisfy_requires_python(pyproject, cibw):
    spec = pyproject["project"]["requires-python"]
    m = re.fullmatch(r"\s*>=\s*3\.(\d+)\s*", spec)
    assert m, f"requires-python {spec!r}: this test reads only '>=3.N'"
    minimum = int(m.group(1))
    for pattern in _patterns(cibw["build"]):
        pm = re.fullmatch(r"cp3(\d+)-\*", pattern)
        assert pm, f"build selector {pattern!r} is not cp3N-*"
        assert int(pm.group(1)) >= minimum, f"{pattern} is older than requires-python {spec}"
    assert f"3.{minimum}" == VERSIONS[0], "the oldest wheel should be the oldest supported Python"


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_platform_archs(cibw, platform):
    archs = cibw.get(platform, {}).get("archs")
    assert archs, f"[tool.cibuildwheel.{platform}] archs not set (the runner's default varies)"
    archs = _patterns(archs)
    wanted = {"linux": {"x86_64", "aarch64"}, "macos": {"x86_64", "arm64"},
              "windows": {"AMD64"}}[platform]
    assert set(archs) == wanted, archs


@pytest.mark.parametrize("platform", ["linux", "macos"])
def test_every_release_wheel_is_selected(cibw, platform):
    missing = [f"{_tag(v)}-{suffix}" for v in VERSIONS for suffix in PLATFORMS[platform]
               if not _selected(cibw, f"{_tag(v)}-{suffix}")]
    assert not missing, f"not built: {missing}"


def test_windows_either_built_or_documented_gap(cibw):
    built = [v for v in VERSIONS if _selected(cibw, f"{_tag(v)}-win_amd64")]
    if len(built) == len(VERSIONS):
        return
    assert not built, f"Windows wheels for some versions only: {built}"
    with open(os.path.join(ROOT, "docs", "wheels.md")) as f:
        doc = f.read()
    assert "Windows" in doc and "MSVC" in doc, \
        "Windows wheels are skipped: docs/wheels.md must say why (MSVC)"


def test_smoke_test_is_wired(cibw):
    commands = _patterns(" ".join(cibw["test-command"]) if isinstance(cibw["test-command"], list)
                         else cibw["test-command"])
    assert "tools/wheel_smoke.py" in commands, cibw["test-command"]
    assert "fastrnn" in commands, "test-command runs no `fastrnn` command"
    for path in cibw.get("test-sources", []):
        assert os.path.isfile(os.path.join(ROOT, path)), f"test-sources: {path} does not exist"
    assert "tests/reference.py" in cibw.get("test-sources", []), \
        "the smoke test compares with tests/reference.py: ship it in test-sources"


def test_environment_keys_are_read_by_setup_py(cibw):
    with open(os.path.join(ROOT, "setup.py")) as f:
        setup_py = f.read()
    for platform in ("linux", "macos", "windows"):
        for key in cibw.get(platform, {}).get("environment", {}):
            if key.startswith("FASTRNN_"):
                assert key in setup_py, f"{platform} environment sets {key}, setup.py ignores it"


def test_smoke_symbols_exist_in_the_extension():
    """The x86 kernel symbols tools/wheel_smoke.py looks for are those the built extension
    exports (a renamed kernel would otherwise fail every release build)."""
    fastrnn = pytest.importorskip("fastrnn")
    import platform
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("x86-64 kernel variants only")
    spec = importlib.util.spec_from_file_location(
        "wheel_smoke", os.path.join(ROOT, "tools", "wheel_smoke.py"))
    smoke = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(smoke)
    with open(fastrnn._core.__file__, "rb") as f:
        data = f.read()
    missing = [s for s in smoke.X86_VARIANT_SYMBOLS if s.encode() + b"\0" not in data]
    assert not missing, f"not in {fastrnn._core.__file__}: {missing}"


# ---- sdist ----------------------------------------------------------------------------------

def _source_copy(dest):
    """The working tree as git sees it (tracked and untracked, not ignored), plus the generated
    fastrnn/_core.c with its time stamp so that Cython does not run again."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             cwd=ROOT, capture_output=True, check=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        pytest.skip("git not available to list the source files")
    names = [n for n in out.decode().split("\0") if n]
    names += [n for n in ("fastrnn/_core.c",) if os.path.isfile(os.path.join(ROOT, n))]
    for name in names:
        src = os.path.join(ROOT, name)
        if not os.path.isfile(src):  # deleted in the working tree
            continue
        os.makedirs(os.path.dirname(os.path.join(dest, name)), exist_ok=True)
        shutil.copy2(src, os.path.join(dest, name))


@pytest.fixture(scope="module")
def sdist_members(tmp_path_factory):
    """Build an sdist of a copy of the working tree (no isolation: this environment's setuptools,
    Cython and numpy) and return its member names, relative to its top folder."""
    for module in ("setuptools", "Cython", "numpy"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed: cannot build an sdist without isolation")
    tmp = tmp_path_factory.mktemp("sdist")
    src, out = tmp / "src", tmp / "dist"
    _source_copy(src)
    if importlib.util.find_spec("build") is not None:
        cmd = [sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(out),
               str(src)]
    else:  # the PEP 517 hook that `python -m build --sdist --no-isolation` calls
        cmd = [sys.executable, "-c", "import sys, setuptools.build_meta as b; "
               "b.build_sdist(sys.argv[1])", str(out)]
    r = subprocess.run(cmd, cwd=src, capture_output=True, text=True, timeout=50)
    assert r.returncode == 0, f"sdist build failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    (archive,) = out.glob("fastrnn-*.tar.gz")
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    top = names[0].split("/")[0]
    return {n[len(top) + 1:] for n in names if n.startswith(top + "/")}


def test_sdist_holds_the_c_core_and_bindings(sdist_members):
    core = os.path.join(ROOT, "src", "fastrnn")
    wanted = {f"src/fastrnn/{n}" for n in os.listdir(core)
              if n.endswith((".c", ".h", ".inc"))}
    wanted |= {"fastrnn/_core.pyx", "fastrnn/_capi.pxd", "setup.py", "pyproject.toml",
               "README.md", "tools/wheel_smoke.py", "tests/reference.py"}
    missing = sorted(wanted - sdist_members)
    assert not missing, f"missing from the sdist: {missing}"


def test_sdist_holds_every_file_setup_py_compiles(sdist_members):
    with open(os.path.join(ROOT, "setup.py")) as f:
        setup_py = f.read()
    compiled = set(re.findall(r'os\.path\.join\(CORE, "([\w.]+\.c)"\)', setup_py))
    assert len(compiled) >= 10, f"setup.py's kernel list not recognised: {sorted(compiled)}"
    missing = sorted(f"src/fastrnn/{n}" for n in compiled if f"src/fastrnn/{n}" not in sdist_members)
    assert not missing, f"setup.py compiles files the sdist lacks: {missing}"


def test_sdist_holds_no_build_products(sdist_members):
    products = sorted(n for n in sdist_members
                      if n.endswith((".o", ".a", ".so", ".pyd", ".dylib", ".pyc"))
                      or n.startswith("src/build/") or n == "fastrnn/_core.c")
    assert not products, f"build products in the sdist: {products}"
