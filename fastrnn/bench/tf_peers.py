"""TensorFlow 2 (Keras 3 on the TF backend, in a `tf.function`, with and without XLA) and
LiteRT (a converted float32 model) as benchmark peers.

They run in a child process (fastrnn.bench._tf_worker): Keras 3 picks one backend per process
and the Keras peer here runs on torch; TensorFlow's thread pools are also fixed once per
process, so there is one child per thread count, restarted when the count changes and stopped
when the run ends. The child times its own calls (`self_timed`: the harness uses the time it
reports, so the pipe's round trip is never charged to TensorFlow); fastrnn is timed in this
process, interleaved with those requests as with every peer."""
import contextlib
import itertools
import multiprocessing
import os

import numpy as np

from fastrnn.bench.peers import PeerFailed, Unsupported

TIMEOUT_S = 600  # building and XLA-compiling a case, or one timed block


class _Worker:
    """The child process of one thread count."""

    def __init__(self, threads):
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        from fastrnn.bench import _tf_worker
        self.proc = ctx.Process(target=_tf_worker.run_worker, args=(child, threads),
                                daemon=True, name=f"fastrnn-bench-tf-{threads}")
        env_before = os.environ.get("KERAS_BACKEND")
        os.environ["KERAS_BACKEND"] = "tensorflow"   # inherited by the child at spawn
        try:
            self.proc.start()
        finally:
            if env_before is None:
                os.environ.pop("KERAS_BACKEND", None)
            else:
                os.environ["KERAS_BACKEND"] = env_before
        child.close()
        self.threads = threads
        status, info = self._recv()
        self.versions = info if status == "ready" else None
        self.error = None if status == "ready" else info

    def _recv(self):
        if not self.conn.poll(TIMEOUT_S):
            self.close()
            return "error", f"no answer from the TensorFlow process within {TIMEOUT_S} s"
        try:
            return self._unpack(self.conn.recv())
        except (EOFError, OSError) as e:
            self.close()
            return "error", f"the TensorFlow process ended ({type(e).__name__})"

    @staticmethod
    def _unpack(msg):
        """("ready" | "error", info) or ("ok", value, extra) -> (status, payload)."""
        return (msg[0], msg[1]) if len(msg) == 2 else (msg[0], msg[1:])

    def request(self, *msg):
        """Send a request; returns its payload or raises Unsupported with the child's note."""
        if not self.proc.is_alive():
            raise Unsupported("the TensorFlow process is not running")
        self.conn.send(msg)
        status, payload = self._recv()
        if status != "ok":
            raise Unsupported(str(payload))
        return payload

    def close(self):
        if self.proc.is_alive():
            try:
                self.conn.send(("stop",))
            except (OSError, BrokenPipeError):
                pass
            self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        self.conn.close()


class _Workers:
    """One child at a time, for the thread count in use; all stopped by `close`."""

    def __init__(self):
        self.worker = None

    def get(self, threads):
        if self.worker is not None and self.worker.threads != threads:
            self.close()
        if self.worker is None:
            self.worker = _Worker(threads)
        return self.worker

    def close(self):
        if self.worker is not None:
            self.worker.close()
            self.worker = None


_WORKERS = _Workers()
_KEYS = itertools.count(1)  # one key per prepared call, unique across the peers sharing a child


def _importable(name):
    import importlib.util
    return importlib.util.find_spec(name) is not None


class TensorFlowPeer:
    """Keras 3 LSTM / GRU on the TensorFlow backend inside `tf.function` (jit_compile=True for
    the XLA row), intra-op threads = the row's thread count, one inter-op thread. Forward,
    masked (a boolean mask; outputs compared at valid steps, where Keras's carried outputs
    and fastrnn's zeros do not differ in meaning) and step (the Keras LSTMCell / GRUCell in a
    tf.function called once per time step, the state passed back in). No training rows."""

    def __init__(self, xla=False):
        self.engine = "xla" if xla else "tf"
        self.name = "tensorflow-xla" if xla else "tensorflow"
        self.nthreads = 1

    def setup(self):
        if not _importable("tensorflow"):
            return "TensorFlow not installed (pip install fastrnn[bench-all])"
        w = _WORKERS.get(self.nthreads)
        if w.error:
            return f"TensorFlow unavailable: {w.error}"
        self.version = w.versions.get("tensorflow")
        return None

    @contextlib.contextmanager
    def threads(self, n):
        before, self.nthreads = self.nthreads, n
        try:
            yield
        finally:
            self.nthreads = before
            _WORKERS.close()  # the next thread count starts its own process

    def _spec(self, case, layer, data):
        if case.variant:
            raise Unsupported("the TensorFlow peers run the plain cell only")
        if layer.dtype != np.float32:
            raise Unsupported("the TensorFlow peers run float32")
        spec = {"cell": case.cell, "reset_after": case.reset_after, "kind": case.kind,
                "hidden_size": layer.hidden_size, "input_size": layer.input_size,
                "batch": case.B, "time": case.T, "weights": layer.to_keras(),
                "x": data["x"]}
        if case.kind == "masked":
            spec["mask"] = np.arange(case.T)[None, :] < np.asarray(data["lengths"])[:, None]
        return spec

    def prepare(self, case, layer, data):
        if case.kind not in ("forward", "masked", "step"):
            raise Unsupported(f"TensorFlow {case.kind} not benchmarked")
        spec = self._spec(case, layer, data)
        worker = _WORKERS.get(self.nthreads)
        if worker.error:
            raise Unsupported(worker.error)
        key = next(_KEYS)
        y, extra = worker.request("prepare", key, spec, self.engine)
        if "ops" in extra:
            self.ops = extra["ops"]
        if case.kind == "masked":
            y = y * spec["mask"][:, :, None]   # valid steps only (see the class note)
        out = {"h": y} if case.kind == "step" else {"y": y}

        name = self.name

        def run(min_time=0.0):
            try:
                seconds, _ = worker.request("time", key, min_time)
            except Unsupported as e:
                raise PeerFailed(name, str(e)) from None
            return seconds
        run.self_timed = True
        return run, lambda: out


class LiteRtPeer(TensorFlowPeer):
    """LiteRT (TensorFlow Lite): the Keras layer, unrolled over its fixed T, exported as a
    SavedModel and converted by TFLiteConverter (builtin ops only) to a float32 flat buffer,
    run by `ai_edge_litert`'s Interpreter (XNNPACK delegate) with num_threads = the row's
    thread count; input set once outside the timed region, `invoke()` timed.

    No fused UNIDIRECTIONAL_SEQUENCE_LSTM op: the converter fuses only functions carrying the
    `api_implements` annotation of tf_keras (Keras 2) LSTM layers, which Keras 3 layers do not
    carry. Keras 3's recurrent loop left rolled fails to convert to builtins (its TensorList
    ops need a static element shape; checked with TensorFlow 2.21), so the layer is unrolled:
    the flat buffer holds per-step FULLY_CONNECTED, LOGISTIC, TANH, MUL and ADD ops (GRU
    alike). Forward cases only (B and T are fixed at conversion), T <= MAX_T (the unrolled
    graph, and its conversion time, grows with T: about 2 s at T=50, 10 s at T=150)."""

    MAX_T = 200

    def __init__(self):
        super().__init__()
        self.engine = "litert"
        self.name = "litert"

    def setup(self):
        if not _importable("ai_edge_litert"):
            return "LiteRT not installed (pip install ai-edge-litert; fastrnn[bench-all])"
        note = super().setup()
        if note:
            return note
        self.version = _WORKERS.get(self.nthreads).versions.get("litert")
        return None

    def prepare(self, case, layer, data):
        if case.kind != "forward":
            raise Unsupported("LiteRT runs the forward cases (B and T fixed at conversion)")
        if case.T > self.MAX_T:
            raise Unsupported(f"LiteRT: the layer is unrolled for conversion; T > {self.MAX_T}")
        return super().prepare(case, layer, data)


def close_workers():
    """Stop the child process (the runner calls it at the end of a run)."""
    _WORKERS.close()
