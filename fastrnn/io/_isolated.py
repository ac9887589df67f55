"""Keras files read in a child process with a time limit.

libhdf5 can loop forever on some damaged HDF5 files (found by fuzzing: one corrupted root
attribute made a read never return), and a `.keras` zip carries an HDF5 file too. A loader must
never hang, so `fastrnn.io.keras.from_keras` parses file contents here: a child Python process
runs the ordinary in-process parser on the bytes and hands the layers back in fastrnn's own
`.npz` format (read with allow_pickle=False), and the parent gives up after `timeout` seconds
(default 60, or the environment variable FASTRNN_HDF5_TIMEOUT) with a clear error.
"""
import json
import os
import subprocess
import sys
import tempfile

_CHILD_FLAG = "FASTRNN_IO_CHILD"
_CHILD = """
import json, os, sys
from fastrnn.io.keras import _parse_bytes
from fastrnn.io.npz import save_npz
out, label, dtype = sys.argv[1], sys.argv[2], sys.argv[3] or None
try:
    layers = _parse_bytes(sys.stdin.buffer.read(), label, dtype)
except ImportError as exc:
    print(exc, file=sys.stderr); sys.exit(3)
except ValueError as exc:
    print(exc, file=sys.stderr); sys.exit(2)
names = list(layers)
for i, name in enumerate(names):
    save_npz(layers[name], os.path.join(out, f"{i}.npz"))
with open(os.path.join(out, "names.json"), "w") as f:
    json.dump(names, f)
"""


def in_child():
    """True inside the worker (it parses in process)."""
    return os.environ.get(_CHILD_FLAG) == "1"


def parse_keras_bytes(data, label, dtype, timeout=None):
    """{user name: layer} parsed from `.keras` / `.h5` bytes in a child process."""
    from .npz import load_npz

    if timeout is None:
        timeout = float(os.environ.get("FASTRNN_HDF5_TIMEOUT", "60"))
    env = dict(os.environ, **{_CHILD_FLAG: "1"})
    with tempfile.TemporaryDirectory(prefix="fastrnn-keras-") as out:
        try:
            proc = subprocess.run([sys.executable, "-c", _CHILD, out, label, dtype or ""],
                                  input=data, capture_output=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            raise ValueError(f"{label}: reading the HDF5 data did not finish within {timeout:g} s "
                             "(a damaged file can make libhdf5 loop; FASTRNN_HDF5_TIMEOUT sets "
                             "the limit)") from None
        message = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        message = message[-1] if message else f"exit status {proc.returncode}"
        if proc.returncode == 3:
            raise ImportError(message)
        if proc.returncode != 0:
            if proc.returncode == 2:
                raise ValueError(message)
            raise ValueError(f"{label}: the HDF5 reader failed ({message})")
        with open(os.path.join(out, "names.json")) as f:
            names = json.load(f)
        return {name: load_npz(os.path.join(out, f"{i}.npz"))
                for i, name in enumerate(names)}
