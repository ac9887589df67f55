"""The error raised when `fastrnn._core`, the compiled extension, cannot be imported.

The common case: after `pip install .`, Python started in the repository root imports the
source tree (the current directory comes first on sys.path), which has no compiled extension,
instead of the installed copy; Python itself only says "cannot import name '_core' from
partially initialized module 'fastrnn' (most likely due to a circular import)".
"""
import glob
import os


def explain(error, init_file):
    """The ImportError to raise for `error`, raised while importing `fastrnn._core` from the
    package whose `__init__.py` is `init_file`: `error` itself when a compiled `_core` file is
    there (it exists but does not load, and Python's message says why), else one saying where
    fastrnn was imported from and what to do."""
    package_dir = os.path.dirname(os.path.abspath(init_file))
    if any(glob.glob(os.path.join(package_dir, f"_core*{ext}")) for ext in (".so", ".pyd")):
        return error
    parent = os.path.dirname(package_dir)
    if any(os.path.exists(os.path.join(parent, f)) for f in ("pyproject.toml", "setup.py")):
        first = ("the current directory" if os.path.abspath(os.getcwd()) == parent
                 else parent)
        return ImportError(
            f"fastrnn is being imported from its source tree at {package_dir}, which has no "
            f"compiled extension (the installed copy is shadowed because {first} comes first "
            "on sys.path); run Python from another directory, or build in place with "
            "`pip install -e .`")
    return ImportError(
        f"fastrnn at {package_dir} has no compiled extension (_core); reinstall it with "
        "`pip install --force-reinstall fastrnn`, or build it from source with `pip install .`")
