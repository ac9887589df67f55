"""The implementations the benchmark times side by side: fastrnn itself and its peers.

Every implementation has the same small interface:

- `setup()` imports what it needs; returns None, or a note saying why it is unavailable (a
  missing peer is skipped with that note, never an error).
- `threads(n)`: context manager running the implementation with exactly n threads and
  restoring the previous setting afterwards.
- `prepare(case, layer, data)` builds everything outside the timed region (weights in the
  peer's format, inputs as its tensors, sessions) and returns `(run, result)`: `run()` is the
  timed work, `result()` runs once more and returns the output compared with fastrnn's
  (a dict of numpy arrays). Raises `Unsupported` with a note when the peer cannot do that case.

Peers use their fastest documented path: torch modules under `torch.inference_mode()`, packed
sequences for ragged batches, `LSTMCell`/`GRUCell` for streaming; ONNX Runtime with sequential
execution, one inter-op thread and `sequence_lens` for ragged batches.
"""
import contextlib
import os
import sys
import warnings

import numpy as np

import fastrnn
from fastrnn.bench import _convert, limits
from fastrnn.bench.numpy_peer import NumpyRNN



@contextlib.contextmanager
def _torch_threads(torch, n):
    """torch's intra-op threads set to n for the block (Keras on the torch backend uses them
    too), restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)

class Unsupported(Exception):
    """This peer cannot run this case (the message says why)."""


class PeerFailed(Exception):
    """A peer failed while being timed (e.g. its child process died): `peer` names it; the
    runner drops it from the case and times the others again."""

    def __init__(self, peer, message):
        super().__init__(message)
        self.peer = peer


class FastrnnImpl:
    name = "fastrnn"

    def setup(self):
        return None

    @contextlib.contextmanager
    def threads(self, n):
        before = fastrnn.get_num_threads()
        fastrnn.set_num_threads(n)
        try:
            yield
        finally:
            fastrnn.set_num_threads(before)

    def prepare(self, case, layer, data):
        x = data["x"]
        if case.kind == "forward":
            return (lambda: layer(x)), lambda: {"y": layer(x)[0]}
        if case.kind == "masked":
            lengths = data["lengths"]
            return (lambda: layer(x, lengths=lengths)), \
                lambda: {"y": layer(x, lengths=lengths)[0]}
        if case.kind == "step":
            steps = [np.ascontiguousarray(x[:, t]) for t in range(x.shape[1])]

            def run():
                state = None
                for x_t in steps:
                    y_t, state = layer.step(x_t, state)
                return y_t
            return run, lambda: {"h": run()}
        if case.kind == "training":
            if not hasattr(layer, "backward"):
                raise Unsupported("fastrnn has no backward pass in this build")
            grad = data["grad"]

            def run():
                y, _ = layer(x, training=True)
                return y, layer.backward(grad)

            def result():
                y, dx = run()
                out = {"y": y}
                # dx alone, first of a tuple, or under "dx"/"x" in a dict of gradients
                if isinstance(dx, dict):
                    dx = dx.get("dx", dx.get("x"))
                elif isinstance(dx, (tuple, list)) and dx:
                    dx = dx[0]
                if isinstance(dx, np.ndarray) and dx.shape == x.shape:
                    out["dx"] = dx
                return out
            return run, result
        raise Unsupported(f"unknown kind {case.kind}")


class NumpyPeer:
    """Plain numpy, one BLAS matmul per step: always available. BLAS threads via threadpoolctl
    (without it, BLAS keeps its own default thread count; the report says so)."""
    name = "numpy"

    def setup(self):
        return None

    @contextlib.contextmanager
    def threads(self, n):
        with limits.blas_threads(n):
            yield

    def prepare(self, case, layer, data):
        if case.kind not in ("forward", "masked"):
            raise Unsupported(f"no numpy {case.kind} path")
        if case.variant:
            raise Unsupported("the numpy peer runs the plain cell only")
        ref = NumpyRNN(case.cell, layer.state_dict(), reset_after=case.reset_after,
                       dtype=layer.dtype)
        x = data["x"]
        if case.kind == "forward":
            return (lambda: ref(x)), lambda: {"y": ref(x)}
        # Ragged batch: plain numpy has no masking; run each row at its own length.
        rows = [(b, int(n), np.ascontiguousarray(x[b:b + 1, :int(n)]))
                for b, n in enumerate(data["lengths"]) if n > 0]

        def run():
            y = np.zeros((x.shape[0], x.shape[1], layer.hidden_size), layer.dtype)
            for b, n, xb in rows:
                y[b, :n] = ref(xb)[0]
            return y
        return run, lambda: {"y": run()}


class TorchPeer:
    name = "torch"

    def setup(self):
        try:
            import torch
        except ImportError:
            return "PyTorch not installed (pip install fastrnn[bench])"
        self.torch = torch
        self.version = torch.__version__
        # torch runs nn.LSTM(proj_size) without oneDNN and says so at every first call
        warnings.filterwarnings("ignore", message="LSTM with projections is not supported")
        return None

    def threads(self, n):
        return _torch_threads(self.torch, n)

    def prepare(self, case, layer, data):
        torch = self.torch
        if case.cell == "gru" and not case.reset_after:
            raise Unsupported("torch GRU is reset-after only")
        try:
            mod = _convert.to_torch_module(layer)
        except ValueError as e:  # a cell variant torch has no equivalent of
            raise Unsupported(str(e).split(":")[0]) from None
        x = torch.from_numpy(data["x"])
        if case.kind == "forward":
            def run():
                with torch.inference_mode():
                    return mod(x)[0]
            return run, lambda: {"y": run().numpy()}
        if case.kind == "masked":
            from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
            lengths = torch.from_numpy(np.asarray(data["lengths"], np.int64))
            if int(lengths.min()) < 1:
                raise Unsupported("torch packed sequences need lengths >= 1")
            T = x.shape[1]

            def run():  # packing and unpacking are part of torch's ragged-batch path
                with torch.inference_mode():
                    packed = pack_padded_sequence(x, lengths, batch_first=True,
                                                  enforce_sorted=False)
                    return pad_packed_sequence(mod(packed)[0], batch_first=True,
                                               total_length=T)[0]
            return run, lambda: {"y": run().numpy()}
        if case.kind == "step":
            cls = torch.nn.LSTMCell if case.cell == "lstm" else torch.nn.GRUCell
            cell = cls(layer.input_size, layer.hidden_size).to(mod.weight_ih_l0.dtype)
            with torch.no_grad():
                for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(cell, p).copy_(getattr(mod, p + "_l0"))
            steps = [x[:, t].contiguous() for t in range(x.shape[1])]
            lstm = case.cell == "lstm"

            def run():
                with torch.inference_mode():
                    state = None
                    for x_t in steps:
                        state = cell(x_t, state)
                    return state[0] if lstm else state
            return run, lambda: {"h": run().numpy()}
        if case.kind == "training":
            xg = x.clone().requires_grad_(True)
            grad = torch.from_numpy(data["grad"])
            params = list(mod.parameters())

            def run():
                for p in params:
                    p.grad = None
                xg.grad = None
                y = mod(xg)[0]
                y.backward(grad)
                return y

            def result():
                y = run()
                return {"y": y.detach().numpy(), "dx": xg.grad.numpy().copy()}
            return run, result
        raise Unsupported(f"unknown kind {case.kind}")


def _onnx_node(model):
    nodes = [n for n in model.graph.node if n.op_type in ("LSTM", "GRU")]
    if len(nodes) != 1:
        raise Unsupported("expected exactly one LSTM/GRU node in the ONNX model")
    return nodes[0]


def _onnx_batch_first(node):
    return any(a.name == "layout" and a.i == 1 for a in node.attribute)


def _onnx_add_input(model, node, index, name, elem, shape):
    """Wire a graph input into optional input slot `index` of the node; returns the name to
    feed (the model's own input if the slot is already wired to one)."""
    from onnx import helper

    while len(node.input) <= index:
        node.input.append("")
    if node.input[index] in {i.name for i in model.graph.input}:
        return node.input[index]
    node.input[index] = name
    model.graph.input.append(helper.make_tensor_value_info(name, elem, shape))
    return name


def _onnx_expose_outputs(model, node):
    """Make sure Y, Y_h (and Y_c) of the node are graph outputs, under known names."""
    from onnx import helper

    names = {o.name for o in model.graph.output}
    wanted = ("Y", "Y_h", "Y_c") if node.op_type == "LSTM" else ("Y", "Y_h")
    result = {}
    while len(node.output) < len(wanted):
        node.output.append("")
    for i, role in enumerate(wanted):
        if not node.output[i]:
            node.output[i] = f"bench_{role}"
        if node.output[i] not in names:
            model.graph.output.append(helper.make_empty_tensor_value_info(node.output[i]))
        result[role] = node.output[i]
    return result


class OnnxRuntimePeer:
    name = "onnxruntime"

    def setup(self):
        try:
            import onnx  # noqa: F401
            import onnxruntime
        except ImportError:
            return "ONNX Runtime or onnx not installed (pip install fastrnn[bench])"
        self.ort = onnxruntime
        self.version = onnxruntime.__version__
        self.nthreads = 1
        return None

    @contextlib.contextmanager
    def threads(self, n):  # applied to every session built inside
        before, self.nthreads = self.nthreads, n
        try:
            yield
        finally:
            self.nthreads = before

    def _session(self, model):
        so = self.ort.SessionOptions()
        so.intra_op_num_threads = self.nthreads
        so.inter_op_num_threads = 1
        so.execution_mode = self.ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        try:
            return self.ort.InferenceSession(model.SerializeToString(), so,
                                             providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - e.g. a dtype this runtime has no kernel for
            raise Unsupported(f"ONNX Runtime cannot run this model: {str(e).splitlines()[0]}")

    def prepare(self, case, layer, data):
        from onnx import TensorProto

        if case.kind == "training":
            raise Unsupported("no training in ONNX Runtime")
        if layer.dtype == np.float64:
            raise Unsupported("ONNX Runtime's CPU LSTM/GRU kernels are float32 only")
        try:
            model = _convert.to_onnx_model(layer)
        except ValueError as e:  # a cell variant the ONNX node cannot express
            raise Unsupported(str(e).split(";")[0]) from None
        node = _onnx_node(model)
        batch_first = _onnx_batch_first(node)
        elem = TensorProto.DOUBLE if layer.dtype == np.float64 else TensorProto.FLOAT
        x_name = node.input[0]
        x = data["x"]
        B, T, H = x.shape[0], x.shape[1], layer.hidden_size
        # Seq-first models get the input transposed here, outside the timed region.
        feed_x = x if batch_first else np.ascontiguousarray(x.transpose(1, 0, 2))

        def to_batch_first(Y):  # [T, D, B, H] or [B, T, D, H] -> (B, T, H), not timed
            return Y[:, :, 0] if batch_first else Y[:, 0].transpose(1, 0, 2)

        if case.kind in ("forward", "masked"):
            feed = {x_name: feed_x}
            if case.kind == "masked":
                lens = _onnx_add_input(model, node, 4, "bench_sequence_lens", TensorProto.INT32,
                                       [B])
                feed[lens] = np.asarray(data["lengths"], np.int32)
            out = _onnx_expose_outputs(model, node)
            sess = self._session(model)
            return (lambda: sess.run([out["Y"]], feed)), \
                lambda: {"y": to_batch_first(sess.run([out["Y"]], feed)[0])}
        if case.kind == "step":
            lstm = case.cell == "lstm"
            shape = [B, 1, H] if batch_first else [1, B, H]
            h0 = _onnx_add_input(model, node, 5, "bench_h0", elem, shape)
            c0 = _onnx_add_input(model, node, 6, "bench_c0", elem, shape) if lstm else None
            out = _onnx_expose_outputs(model, node)
            sess = self._session(model)
            names = [out["Y_h"]] + ([out["Y_c"]] if lstm else [])
            steps = [np.ascontiguousarray(feed_x[:, t:t + 1] if batch_first else feed_x[t:t + 1])
                     for t in range(T)]
            zero = np.zeros(shape, layer.dtype)

            def run():
                h = c = zero
                for x_t in steps:
                    feed = {x_name: x_t, h0: h}
                    if lstm:
                        feed[c0] = c
                        h, c = sess.run(names, feed)
                    else:
                        (h,) = sess.run(names, feed)
                return h
            return run, lambda: {"h": run().reshape(B, H)}
        raise Unsupported(f"unknown kind {case.kind}")


class _OpenVinoSession:
    """An OpenVINO model behind ONNX Runtime's `run(output_names, feed)` call, so the ONNX
    Runtime peer's model building, feeds and checks serve OpenVINO unchanged. The model is
    compiled at its first call with the feed's shapes made static (the ONNX model's batch and
    time dims are symbolic; OpenVINO's CPU plugin runs static shapes faster: measured 10-15 us
    less per call at B=1), once per set of shapes. One infer request per compiled model,
    reused for every call (OpenVINO's synchronous path), with `share_inputs=True`: the numpy
    inputs are read in place, as ONNX Runtime reads them; outputs are copies, as ONNX
    Runtime's are."""

    def __init__(self, core, onnx_bytes, config):
        self.core, self.onnx_bytes, self.config = core, onnx_bytes, config
        self.compiled = {}   # input shapes -> (infer request, {output name: port})
        self.last = None     # (shapes, request, ports) of the previous call

    def _compile(self, shapes):
        import openvino as ov

        try:
            model = self.core.read_model(self.onnx_bytes, b"")
            model.reshape({name: ov.PartialShape(list(shape)) for name, shape in shapes})
            compiled = self.core.compile_model(model, "CPU", self.config)
        except Exception as e:  # noqa: BLE001 - a model this plugin cannot compile
            raise Unsupported(f"OpenVINO cannot run this model: {str(e).splitlines()[0][:150]}")
        ports = {}
        for port in compiled.outputs:
            for name in port.get_names():
                ports[name] = port
        return compiled.create_infer_request(), ports

    def run(self, names, feed):
        shapes = tuple((k, v.shape) for k, v in feed.items())
        if self.last is None or self.last[0] != shapes:
            if shapes not in self.compiled:
                self.compiled[shapes] = self._compile(shapes)
            self.last = (shapes, *self.compiled[shapes])
        _, request, ports = self.last
        result = request.infer(feed, share_inputs=True)
        return [result[ports[n]] for n in names]


class OpenVinoPeer(OnnxRuntimePeer):
    """OpenVINO's CPU plugin on the same ONNX model as the ONNX Runtime peer (its own
    LSTMSequence / GRUSequence kernels after conversion), compiled with
    INFERENCE_NUM_THREADS = the row's thread count, PERFORMANCE_HINT=LATENCY, one stream, and
    INFERENCE_PRECISION_HINT=f32 (`precision="f32"`) or the plugin's default
    (`precision=None`: on CPUs with AVX-512 BF16 or AMX that default is bf16, so that row
    computes in bfloat16 and is checked against a looser tolerance, 2e-2). The model is compiled
    with the case's shapes made static, and inputs are shared, not copied (_OpenVinoSession).
    No float64 rows: the plugin computes a float64 model in float32 (or lower)."""

    def __init__(self, precision="f32"):
        self.precision = precision
        self.name = "openvino" if precision == "f32" else "openvino-default"
        self.tolerance = None if precision == "f32" else 2e-2
        # a bf16 computation is not a peer of fastrnn's float32: shown, never "best peer"
        # (fastrnn's own bf16 layers: --suite quantized)
        self.reduced_precision = precision != "f32"

    def setup(self):
        try:
            import onnx  # noqa: F401
            import openvino
        except ImportError:
            return "OpenVINO or onnx not installed (pip install fastrnn[bench-all])"
        self.ov = openvino
        self.core = openvino.Core()
        self.version = openvino.__version__
        self.nthreads = 1
        if self.precision is None:
            default = str(self.core.get_property("CPU", "INFERENCE_PRECISION_HINT"))
            if "'" in default:  # "<Type: 'bfloat16'>" -> "bfloat16"
                default = default.split("'")[1]
            self.default_precision = default
            if "f32" in default or "float32" in default:
                return (f"OpenVINO's default precision on this CPU is {default}: the same "
                        "computation as the openvino row")
            self.version += f" (precision {default})"
            self.reduced_precision = "32" not in default
        return None

    def prepare(self, case, layer, data):
        if layer.dtype == np.float64:  # it runs them, with float64 tensors at its edges only
            raise Unsupported("OpenVINO's CPU plugin computes float64 models in float32 (or "
                              "its bf16 default)")
        run, result = super().prepare(case, layer, data)
        if case.kind != "masked":
            return run, result
        # OpenVINO leaves the outputs past a row's sequence_lens as they come (ONNX says
        # zeros; measured: nonzero): compare the valid steps, where both must agree.
        valid = (np.arange(case.T)[None, :] < np.asarray(data["lengths"])[:, None])[:, :, None]
        return run, lambda: {"y": result()["y"] * valid}

    def _session(self, model):
        config = {"INFERENCE_NUM_THREADS": self.nthreads, "PERFORMANCE_HINT": "LATENCY",
                  "NUM_STREAMS": 1}
        if self.precision:
            config["INFERENCE_PRECISION_HINT"] = self.precision
        return _OpenVinoSession(self.core, model.SerializeToString(), config)


class KerasPeer:
    """Keras 3 on its torch backend (inference through the layer call, training=False)."""
    name = "keras"

    def setup(self):
        if "keras" in sys.modules:
            keras = sys.modules["keras"]
            backend = keras.backend.backend()
            if backend != "torch":
                return f"keras already imported with the {backend!r} backend (needs torch)"
        else:
            if os.environ.get("KERAS_BACKEND", "torch") != "torch":
                return f"KERAS_BACKEND={os.environ['KERAS_BACKEND']} (the benchmark needs torch)"
            try:
                import torch  # noqa: F401
            except ImportError:
                return "Keras needs PyTorch as its backend here (pip install fastrnn[bench])"
            os.environ["KERAS_BACKEND"] = "torch"
            try:
                import keras
            except ImportError:
                return "Keras not installed (pip install keras)"
        import torch
        self.keras, self.torch = keras, torch
        self.version = keras.__version__
        return None

    def threads(self, n):
        return _torch_threads(self.torch, n)

    def prepare(self, case, layer, data):
        torch = self.torch
        if case.kind != "forward":
            raise Unsupported(f"Keras {case.kind} not benchmarked")
        if case.variant:
            raise Unsupported("the Keras peer is built for the plain cell only")
        klayer = _convert.to_keras_layer(layer)
        x = torch.from_numpy(data["x"])

        def run():
            with torch.inference_mode():
                return klayer(x, training=False)[0]
        return run, lambda: {"y": run().numpy()}


def all_peers():
    """The peers in table order (fastrnn itself is not a peer)."""
    from fastrnn.bench.tf_peers import LiteRtPeer, TensorFlowPeer
    return [NumpyPeer(), TorchPeer(), OnnxRuntimePeer(), OpenVinoPeer("f32"),
            OpenVinoPeer(None), KerasPeer(), TensorFlowPeer(), TensorFlowPeer(xla=True),
            LiteRtPeer()]
