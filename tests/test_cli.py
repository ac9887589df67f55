"""The `fastrnn` command: help and version, exit statuses (0 done, 1 failed, 2 misused), errors
worded for the command line, `convert` options, and the error of a source tree without its
compiled extension."""
import argparse
import importlib.machinery
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastrnn
from fastrnn import io as fio
from fastrnn.__main__ import COMMANDS, build_parser, cli_message, main


def _python(*args, cwd, env=None):
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"fastrnn {fastrnn.__version__}\n"


def test_python_dash_m_version(tmp_path):
    result = _python("-m", "fastrnn", "--version", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout == "fastrnn 0.1.0\n"


def test_bare_command_prints_help_to_stderr_and_exits_2(capsys):
    assert main([]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("usage: fastrnn")
    assert all(command in err for command in COMMANDS)


@pytest.mark.parametrize("argv", [["-h"], ["--help"], ["convert", "--help"],
                                  ["bench", "--help"], ["demo", "--help"]])
def test_help_exits_0_on_stdout(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    out, err = capsys.readouterr()
    assert out.startswith("usage: fastrnn") and err == ""


def test_unknown_command_exits_2_naming_the_commands(capsys):
    assert main(["nonsense"]) == 2
    err = capsys.readouterr().err
    assert "unknown command nonsense" in err and "convert" in err and "'" not in err


def test_every_command_and_argument_has_help():
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    helped = {a.dest: a.help for a in commands._choices_actions}
    assert set(commands.choices) == set(COMMANDS) == {c for c in helped if helped[c]}
    missing = [(name, action.dest) for name, sub in commands.choices.items()
               for action in sub._actions if not action.help]
    assert missing == []
    assert [a.dest for a in parser._actions if not a.help] == ["command"]


@pytest.fixture
def npz_file(tmp_path):
    path = tmp_path / "lstm.npz"
    fastrnn.save(fastrnn.LSTM(3, 4, seed=0), path)
    return path


def test_inspect_lists_the_layers(capsys, npz_file):
    assert main(["inspect", str(npz_file)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{npz_file}: npz\n") and "LSTM" in out


def test_missing_file_is_a_runtime_error_without_quotes(capsys, tmp_path):
    missing = tmp_path / "missing.pt"
    for argv in (["inspect", str(missing)], ["convert", str(missing), "-o", "x.npz"]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err == f"fastrnn {argv[0]}: {missing}: No such file or directory\n"


def test_library_keywords_are_worded_as_flags(capsys, monkeypatch, npz_file):
    def refuse(source, out, **kw):
        raise ValueError(f"{source!r} holds 2 recurrent layers (enc, dec): choose one with "
                         "name=..., or load them all with fastrnn.load_all(); or format=")
    monkeypatch.setattr(fio, "convert", refuse)
    assert main(["convert", str(npz_file), "-o", "x.npz"]) == 1
    err = capsys.readouterr().err
    assert err == (f"fastrnn convert: {npz_file} holds 2 recurrent layers (enc, dec): choose "
                   "one with --name NAME; or --format FORMAT\n")


def test_cli_message_leaves_other_keywords_and_values_alone():
    exc = ValueError("proj_size=4 and layer_name='x'; filename= is not name=abc")
    assert cli_message(exc) == str(exc)
    assert cli_message(KeyError("no layer enc")) == "no layer enc"
    listed = ValueError("found ['a', 'b/c']; shape [3, 4]")
    assert cli_message(listed) == "found a, b/c; shape [3, 4]"


def test_file_with_several_layers_asks_for_name(capsys, tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "two.pt"
    torch.save({"enc.weight_ih_l0": torch.randn(16, 3), "enc.weight_hh_l0": torch.randn(16, 4),
                "dec.weight_ih_l0": torch.randn(12, 4), "dec.weight_hh_l0": torch.randn(12, 4)},
               path)
    out = tmp_path / "enc.npz"
    assert main(["convert", str(path), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "--name NAME" in err and "enc" in err and "name=" not in err and "'" not in err
    assert main(["convert", str(path), "-o", str(out), "--name", "nope"]) == 1
    err = capsys.readouterr().err
    assert "nope" in err and "enc, dec" in err and "'" not in err
    assert main(["convert", str(path), "-o", str(out), "--name", "enc"]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {out}: LSTM(3, 4")
    input_gate_rows = torch.load(path, weights_only=True)["enc.weight_ih_l0"][:4]
    np.testing.assert_array_equal(fastrnn.load(out).state_dict()["layer0.forward.input.kernel"],
                                  input_gate_rows.numpy().T)


@pytest.mark.parametrize("argv, message", [
    (["-o", "out.xyz"], "give --format FORMAT"),
    (["-o", "out.pt", "--sequence-lens"], "--sequence-lens applies to onnx output only"),
    (["-o", "out.onnx", "--format", "npz", "--sequence-lens"], "--sequence-lens applies"),
    (["-o", "out.npz", "--format", "bogus"], "invalid choice"),
    ([], "required: -o/--output"),
])
def test_convert_usage_errors_exit_2(capsys, npz_file, argv, message):
    with pytest.raises(SystemExit) as exc:
        main(["convert", str(npz_file), *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_convert_sequence_lens_reaches_the_onnx_writer(capsys, npz_file, tmp_path):
    onnx = pytest.importorskip("onnx")
    plain, ragged = tmp_path / "plain.onnx", tmp_path / "ragged.onnx"
    assert main(["convert", str(npz_file), "-o", str(plain)]) == 0
    assert main(["convert", str(npz_file), "-o", str(ragged), "--sequence-lens"]) == 0
    inputs = {path: onnx.load(path).graph.input for path in (plain, ragged)}
    int32 = onnx.TensorProto.INT32
    assert not [i for i in inputs[plain] if i.type.tensor_type.elem_type == int32]
    (lens,) = [i for i in inputs[ragged] if i.type.tensor_type.elem_type == int32]
    assert len(lens.type.tensor_type.shape.dim) == 1


def test_convert_writes_the_format_asked_for(capsys, npz_file, tmp_path):
    out = tmp_path / "lstm.weights"
    assert main(["convert", str(npz_file), "-o", str(out), "--format", "frnn"]) == 0
    assert fio.detect_format(out) == "frnn"


def test_bench_refuses_a_missing_output_folder_before_running(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--json", str(tmp_path / "no" / "bench.json")])
    assert exc.value.code == 2
    assert "does not exist" in capsys.readouterr().err


def test_bench_plot_without_matplotlib_is_a_runtime_error(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)    # import fails
    assert main(["bench", "--plot", str(tmp_path / "bench.png")]) == 1
    assert "pip install fastrnn[plot]" in capsys.readouterr().err


def _package_without_extension(root):
    """A copy of the fastrnn package under root/fastrnn without its compiled extension, next
    to a pyproject.toml as in a source checkout."""
    source = Path(fastrnn.__file__).parent
    shutil.copytree(source, root / "fastrnn",
                    ignore=shutil.ignore_patterns("_core*.so", "_core*.pyd", "__pycache__"))
    (root / "pyproject.toml").write_text('[project]\nname = "fastrnn"\n')
    return root / "fastrnn"


def _import_fastrnn(cwd, first_on_path):
    """`import fastrnn` in a fresh Python with `first_on_path` at the head of sys.path, its
    site-packages after it, and without site's .pth hooks: an editable install's finder would
    otherwise supply the missing extension from the development tree."""
    path = [str(first_on_path), *site.getsitepackages()]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    return _python("-S", "-c", "import fastrnn", cwd=cwd, env=env)


def test_source_tree_without_extension_says_so(tmp_path):
    """`import fastrnn` in a checkout's root after a non-editable install: the checkout (no
    compiled _core) shadows the installed copy; the error says where and what to do."""
    package = _package_without_extension(tmp_path)
    result = _import_fastrnn(tmp_path, tmp_path)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last == (f"ImportError: fastrnn is being imported from its source tree at {package}, "
                    "which has no compiled extension (the installed copy is shadowed because "
                    "the current directory comes first on sys.path); run Python from another "
                    "directory, or build in place with `pip install -e .`")
    assert "circular import" not in result.stderr

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = _import_fastrnn(elsewhere, tmp_path)
    assert f"because {tmp_path} comes first on sys.path" in result.stderr


def test_extension_that_fails_to_load_keeps_its_own_error(tmp_path):
    package = _package_without_extension(tmp_path)
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    (package / f"_core{suffix}").write_bytes(b"not a shared object")
    result = _import_fastrnn(tmp_path, tmp_path)
    assert result.returncode == 1
    assert "ImportError" in result.stderr and "source tree" not in result.stderr
