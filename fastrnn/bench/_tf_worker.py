"""The TensorFlow / LiteRT peers' child process (fastrnn.bench.tf_peers).

Keras 3 binds one backend per process, and the benchmark's Keras peer runs on torch, so
Keras-on-TensorFlow and the LiteRT interpreter run here, in a process of their own started
with the thread count fixed (TensorFlow's thread pools are set once, before its first op).
The parent sends one case at a time; this process builds the model, returns its output for
the correctness check, and times its own calls (so that the pipe's round trip is never
charged to the peer). Messages are tuples over a multiprocessing Pipe."""
import os
import time


def _keras_layer(keras, spec):
    cell, H, unroll = spec["cell"], spec["hidden_size"], spec.get("unroll", False)
    if cell == "lstm":
        layer = keras.layers.LSTM(H, return_sequences=True, unroll=unroll)
    else:
        layer = keras.layers.GRU(H, return_sequences=True, reset_after=spec["reset_after"],
                                 unroll=unroll)
    layer.build((spec["batch"], spec["time"], spec["input_size"]))
    layer.set_weights(spec["weights"])
    return layer


def _tf_call(tf, keras, spec, jit):
    """The case as a tf.function: returns (run, output) where run() makes one call."""
    layer = _keras_layer(keras, spec)
    x = tf.constant(spec["x"])
    if spec["kind"] == "masked":
        m = tf.constant(spec["mask"])
        fn = tf.function(lambda x, m: layer(x, mask=m, training=False), jit_compile=jit)
        args = (x, m)
    else:
        fn = tf.function(lambda x: layer(x, training=False), jit_compile=jit)
        args = (x,)
    y = fn(*args).numpy()  # traces (and compiles with XLA) outside any timing
    return (lambda: fn(*args).numpy()), y


def _tf_step_call(tf, keras, spec, jit):
    """Streaming: the Keras cell (LSTMCell / GRUCell) as a tf.function called once per time
    step, the state passed back in, as a streaming application calls it. run() makes the T
    calls of the case and returns the last h."""
    H, B = spec["hidden_size"], spec["batch"]
    if spec["cell"] == "lstm":
        cell = keras.layers.LSTMCell(H)
    else:
        cell = keras.layers.GRUCell(H, reset_after=spec["reset_after"])
    cell.build((B, spec["input_size"]))
    cell.set_weights(spec["weights"])
    steps = [tf.constant(spec["x"][:, t]) for t in range(spec["time"])]
    zero = tf.zeros((B, H), steps[0].dtype)
    if spec["cell"] == "lstm":
        fn = tf.function(lambda x, h, c: cell(x, [h, c], training=False)[1], jit_compile=jit)
        state0 = (zero, zero)
    else:
        fn = tf.function(lambda x, h: cell(x, [h], training=False)[1], jit_compile=jit)
        state0 = (zero,)

    def run():
        state = state0
        for x_t in steps:
            state = fn(x_t, *state)
        return state[0].numpy()
    return run, run()


def _litert_call(tf, keras, spec, threads):
    """The case converted to a float32 LiteRT model and run by its interpreter. Keras 3's
    recurrent loop does not convert to LiteRT's builtin ops (TensorList ops), so the layer is
    unrolled over its fixed T: the flat buffer then holds per-step FULLY_CONNECTED, LOGISTIC,
    TANH, MUL and ADD ops, which the interpreter runs through its XNNPACK delegate (no fused
    UNIDIRECTIONAL_SEQUENCE_LSTM: the converter fuses tf_keras (Keras 2) layers only)."""
    import tempfile

    from ai_edge_litert.interpreter import Interpreter

    B, T, I = spec["batch"], spec["time"], spec["input_size"]
    layer = _keras_layer(keras, dict(spec, unroll=True))
    inp = keras.Input((T, I), batch_size=B)
    model = keras.Model(inp, layer(inp))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "saved_model")
        model.export(path, format="tf_saved_model", verbose=False)
        flat = tf.lite.TFLiteConverter.from_saved_model(path).convert()
    interp = Interpreter(model_content=flat, num_threads=threads)
    inp_index = interp.get_input_details()[0]["index"]
    interp.resize_tensor_input(inp_index, [B, T, I])
    interp.allocate_tensors()
    out = interp.get_output_details()[0]["index"]
    interp.set_tensor(inp_index, spec["x"])
    ops = sorted({op["op_name"] for op in interp._get_ops_details()}) \
        if hasattr(interp, "_get_ops_details") else []

    def run():
        interp.invoke()
        return interp.get_tensor(out)
    run()
    return run, run().copy(), ops


def main(conn, threads):
    os.environ["KERAS_BACKEND"] = "tensorflow"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import tensorflow as tf
        tf.get_logger().setLevel("ERROR")  # one tf.function per case is by design: no
        # retracing warnings
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        import keras
        if keras.backend.backend() != "tensorflow":
            raise ImportError(f"keras runs on {keras.backend.backend()} here")
    except Exception as e:  # noqa: BLE001 - reported to the parent as the peer's note
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    versions = {"tensorflow": tf.__version__, "keras": keras.__version__}
    try:
        import ai_edge_litert
        versions["litert"] = getattr(ai_edge_litert, "__version__", "installed")
    except ImportError:
        versions["litert"] = None
    conn.send(("ready", versions))
    calls = {}
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        op = msg[0]
        try:
            if op == "stop":
                return
            if op == "prepare":
                _, key, spec, engine = msg
                extra = {}
                if engine == "litert":
                    run, y, ops = _litert_call(tf, keras, spec, threads)
                    extra["ops"] = ops
                elif spec["kind"] == "step":
                    run, y = _tf_step_call(tf, keras, spec, jit=engine == "xla")
                else:
                    run, y = _tf_call(tf, keras, spec, jit=engine == "xla")
                calls[key] = run  # the case's calls of every engine (tf, xla, litert)
                while len(calls) > 3:  # earlier cases are done: free their models
                    del calls[next(iter(calls))]
                conn.send(("ok", y, extra))
            elif op == "time":
                _, key, min_time = msg
                run = calls[key]
                n, t0 = 0, time.perf_counter()
                while True:
                    run()
                    n += 1
                    dt = time.perf_counter() - t0
                    if dt >= min_time:
                        break
                conn.send(("ok", dt / n, {}))
            else:
                conn.send(("error", f"unknown request {op!r}"))
        except Exception as e:  # noqa: BLE001 - the parent skips the case with this note
            msg = str(e).strip().splitlines()
            conn.send(("error", f"{type(e).__name__}: {msg[0][:200] if msg else ''}"))


def run_worker(conn, threads):
    """multiprocessing entry point."""
    try:
        main(conn, threads)
    finally:
        conn.close()


if __name__ == "__main__":  # pragma: no cover - started through multiprocessing
    raise SystemExit("started by fastrnn.bench.tf_peers")

