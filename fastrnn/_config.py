"""Threads and build configuration."""
import os
import platform
import sys
import threading

from . import _core

_lock = threading.Lock()
_num_threads = None  # None: not resolved yet


def _default_threads():
    # omp_get_max_threads() already honours OMP_NUM_THREADS; never exceed the usable cores.
    n = _core.openmp_max_threads()
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    if "OMP_NUM_THREADS" not in os.environ:
        n = min(n, cores)
    return max(1, n)


def set_num_threads(n):
    """Set the number of threads fastrnn kernels may use (process-wide).

    Calls already running keep the count they started with; it is safe to call at any time,
    from any thread. Results do not depend on the count (bitwise).

    Args:
        n (int): threads, >= 1. A build without OpenMP stays single-threaded.

    Raises:
        ValueError: n is not a positive int.

    Example:
        >>> fastrnn.set_num_threads(2); fastrnn.get_num_threads()
        2
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"num_threads must be a positive int, got {n!r}")
    global _num_threads
    with _lock:
        _num_threads = n if _core.openmp_enabled() else 1


def get_num_threads():
    """The number of threads fastrnn kernels use.

    Returns:
        int: the value of `set_num_threads()`, else `OMP_NUM_THREADS`, else the cores this
        process may run on (1 in a build without OpenMP).

    Example:
        >>> fastrnn.get_num_threads() >= 1
        True
    """
    global _num_threads
    n = _num_threads
    if n is None:
        with _lock:
            if _num_threads is None:
                _num_threads = _default_threads()
            n = _num_threads
    return n


def get_contention():
    """How fastrnn's threads fared on busy cores (README, "Running next to other runtimes").

    In a multi-threaded forward call, a thread that stops running for longer than a step (and
    250 us) has its rows or hidden units taken over by the others (its core was taken by
    another runtime's threads). After two such calls in a row, the following calls use at most
    the threads that kept up: 4 calls at first, twice as many each time it happens again (at
    most 256), then every thread again. Outputs are the same bits whichever threads ran them.

    Returns:
        dict: ``calls`` (multi-threaded forward calls), ``contended`` (of those, calls in which
        work moved to another thread), ``capped`` (calls run with fewer threads because of
        that), ``cap_threads`` (the cap now, 0 = none), ``cap_calls`` (calls left under it),
        ``last_threads`` and ``last_taken`` (the last forward call's threads and the parts
        taken over in it). Process-wide counters since the start or `reset_contention()`.

    Example:
        >>> sorted(fastrnn.get_contention())[:3]
        ['calls', 'cap_calls', 'cap_threads']
    """
    return _core.contention()


def reset_contention():
    """Zero `get_contention()`'s counters and lift a cap on threads now in force, so that the
    next call uses every thread (`set_num_threads`) again; for a benchmark that measures
    blocks of calls apart, or after the busy neighbour has gone.

    Returns:
        None.

    Example:
        >>> fastrnn.reset_contention(); fastrnn.get_contention()["cap_threads"]
        0
    """
    _core.reset_contention()


# Threaded runtimes whose idle workers may keep spinning on the cores fastrnn's threads use
# (README, "Running next to other runtimes"): shared-library names as they appear in
# /proc/self/maps.
_OPENMP_LIBS = ("libgomp", "libiomp5", "libomp")


def _loaded_libraries(maps_path="/proc/self/maps"):
    """Paths of the shared libraries mapped into this process (Linux); [] where unknown."""
    try:
        with open(maps_path) as f:
            fields = [line.split(None, 5) for line in f]
        paths = {parts[5].strip() for parts in fields if len(parts) == 6}
    except OSError:
        return []
    return sorted(p for p in paths if ".so" in os.path.basename(p))


def runtime_warnings(libraries=None, modules=None):
    """Warnings about other threaded runtimes in this process that can slow fastrnn's
    multi-threaded calls, or that fastrnn's threads can slow: another OpenMP runtime next to
    fastrnn's own, ONNX Runtime or OpenVINO imported. Detected from the libraries mapped into
    the process (Linux) and the imported modules; their settings cannot be read, so these say
    what to check. numpy's BLAS is always there (and threaded): the README says what it costs
    instead. [] with one thread."""
    libraries = _loaded_libraries() if libraries is None else libraries
    modules = sys.modules if modules is None else modules
    if get_num_threads() < 2:
        return []
    names = [os.path.basename(p) for p in libraries]
    out = []
    omp = sorted({n for n in names if n.startswith(_OPENMP_LIBS)})
    if len(omp) > 1:
        out.append(f"{len(omp)} OpenMP runtimes in this process ({', '.join(omp)}): each has its "
                   "own threads, which spin after a call unless OMP_WAIT_POLICY=PASSIVE")
    if "onnxruntime" in modules:
        out.append("onnxruntime is imported: its sessions spin after each run unless "
                   "session.intra_op.allow_spinning is '0'")
    if "openvino" in modules:
        out.append("openvino is imported: give it and fastrnn threads that add up to the cores")
    return out


def show_config(file=None):
    """Print the build and runtime configuration: version of the package and of its C core,
    Python, the machine's architecture, compiler, OpenMP (and its version), the kernel variant
    in use and those the CPU offers, the thread count, OMP_NUM_THREADS, FASTRNN_ISA and
    OMP_WAIT_POLICY, and warnings about other threaded runtimes in the process
    (`runtime_warnings`; `fastrnn config` prints the same).

    Args:
        file: a text stream to print to; None = sys.stdout.

    Example:
        >>> fastrnn.show_config()  # doctest: +SKIP
        fastrnn 0.1.0 (C core 0.1.0)
          ...
    """
    from . import __version__

    omp = _core.openmp_enabled()
    lines = [
        f"fastrnn {__version__} (C core {_core.c_version()})",
        f"  python:          {sys.version.split()[0]}",
        f"  machine:         {platform.machine() or 'unknown'}",
        f"  compiler:        {_core.compiler()}",
        f"  openmp:          {'yes' if omp else 'no'}"
        + (f" (version {_core.openmp_version()})" if omp else " (single-threaded build)"),
        f"  kernel variant:  {_core.get_isa()} (available: {', '.join(_core.available_isas())})",
        f"  threads:         {get_num_threads()}"
        f" (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})",
        f"  FASTRNN_ISA:     {os.environ.get('FASTRNN_ISA', 'unset')}",
        f"  OMP_WAIT_POLICY: {os.environ.get('OMP_WAIT_POLICY', 'unset')}",
    ]
    busy = get_contention()
    if busy["contended"]:
        lines.append(f"  busy cores:      work taken over from a stalled thread in "
                     f"{busy['contended']} of {busy['calls']} multi-threaded calls"
                     + (f"; the next {busy['cap_calls']} calls use at most "
                        f"{busy['cap_threads']} threads" if busy["cap_threads"] else ""))
    lines += [f"  warning:         {w}" for w in runtime_warnings()]
    print("\n".join(lines), file=file)
