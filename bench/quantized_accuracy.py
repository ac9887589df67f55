"""Accuracy of int8 and bf16 weights (`layer.quantize(...)`) against float32, next to the peers' own
dynamically quantized models built from the same float weights (PyTorch `quantize_dynamic`
qint8, ONNX Runtime `DynamicQuantizeLSTM`), on:

  (a) a trained model: the adding problem (examples/train_adding.py, LSTM and GRU, trained to
      convergence): output error and the task's MSE on a held-out set with ragged lengths;
  (b) a real model's recurrent weights: the LSTM of the Silero VAD model
      (`silero_vad_16k_sequence.onnx` of the `silero-vad` pip package; `--silero PATH` or the
      installed package), run inside the model by ONNX Runtime on 30 s of synthetic audio
      (noise and voiced-like bursts: no speech corpus ships here): LSTM output error and the
      speech-probability difference;
  (c) random Keras-initialised LSTM / GRU, H=256, T=100, batch 16, standard normal inputs.

    python bench/quantized_accuracy.py [--silero PATH] [--steps 1500] > table.md
"""
import argparse
import importlib.util
import os
import sys
import tempfile
import warnings

import numpy as np

import fastrnn

HERE = os.path.dirname(os.path.abspath(__file__))


def _load_example():
    spec = importlib.util.spec_from_file_location(
        "train_adding", os.path.join(HERE, "..", "examples", "train_adding.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _torch_qint8(layer):
    try:
        import torch
    except ImportError:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = torch.ao.quantization.quantize_dynamic(
            torch.nn.Sequential(layer.to_torch()), {torch.nn.LSTM, torch.nn.GRU},
            dtype=torch.qint8)[0]

    def run(x, lengths=None):
        """(out (B, T, H), final h (B, H)) for batch-first x and optional lengths."""
        xt = torch.from_numpy(np.ascontiguousarray(x, np.float32))
        with torch.inference_mode():
            if lengths is None:
                out, state = model(xt)
            else:
                packed = torch.nn.utils.rnn.pack_padded_sequence(
                    xt, torch.as_tensor(lengths), batch_first=True, enforce_sorted=False)
                out, state = model(packed)
                out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True,
                                                                total_length=x.shape[1])
        h = state[0] if isinstance(state, tuple) else state
        return out.numpy(), h[-1].numpy()
    return run


def _ort_dynamic(layer, folder):
    if layer._cell != "lstm":
        return None
    try:
        import onnxruntime as ort
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        return None
    src, dst = os.path.join(folder, "f.onnx"), os.path.join(folder, "q.onnx")
    layer.to_onnx(src, sequence_lens=True)
    import logging
    logging.getLogger().setLevel(logging.ERROR)  # quantize_dynamic's pre-processing advice
    quantize_dynamic(src, dst, op_types_to_quantize=["LSTM"], weight_type=QuantType.QInt8)
    session = ort.InferenceSession(dst, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run(x, lengths=None):
        B, T = x.shape[:2]
        lengths = np.full(B, T, np.int32) if lengths is None else np.asarray(lengths, np.int32)
        feeds = {names[0]: np.ascontiguousarray(x.transpose(1, 0, 2), np.float32),
                 names[1]: lengths}
        y, h = session.run(None, feeds)[:2]
        return y.transpose(1, 0, 2), h[-1]
    return run


def _fastrnn(layer):
    def run(x, lengths=None):
        out, state = layer(x, lengths=lengths)
        h = state[0] if isinstance(state, tuple) else state
        return out, h[-1]
    return run


def _err(a, b, mask=None):
    d = np.abs(np.asarray(a, np.float64) - b)
    if mask is not None:
        d = d[mask]
    return float(d.max()), float(d.mean())


def adding(cell, steps, rows):
    example = _load_example()
    _, rnn, head = example.train(cell, steps=steps, return_model=True)
    rng = np.random.default_rng(123)
    x, lengths, y = example.adding_batch(rng, 2000, 20, 10)
    impls = {"float32": _fastrnn(rnn), "fastrnn int8": _fastrnn(rnn.quantize("int8")),
             "fastrnn bf16": _fastrnn(rnn.quantize("bf16"))}
    with tempfile.TemporaryDirectory() as folder:
        for name, build in (("torch qint8", lambda: _torch_qint8(rnn)),
                            ("ORT DynamicQuantizeLSTM", lambda: _ort_dynamic(rnn, folder))):
            fn = build()
            if fn is not None:
                impls[name] = fn
        results = {name: fn(x, lengths) for name, fn in impls.items()}
    ref_h = results["float32"][1]
    valid = np.arange(x.shape[1])[None, :] < lengths[:, None]
    for name, (out, h) in results.items():
        pred = h @ head["weight"] + head["bias"][0]
        mse = float(np.mean((pred - y) ** 2))
        mx, mean = _err(out, results["float32"][0], valid)
        rows.append((f"(a) adding problem, {cell.upper()} H=32 trained", name, mx, mean,
                     f"MSE {mse:.5f}" + ("" if name == "float32" else
                                         f" ({mse / _mse(results['float32'][1], head, y):.3f}x)")))
    del ref_h


def _mse(h, head, y):
    return float(np.mean((h @ head["weight"] + head["bias"][0] - y) ** 2))


def _synthetic_audio(seconds=30, rate=16000, seed=0):
    """Noise with voiced-like bursts: harmonic tones at 100-250 Hz, modulated at 3-6 Hz."""
    rng = np.random.default_rng(seed)
    n = seconds * rate
    t = np.arange(n) / rate
    audio = 0.01 * rng.standard_normal(n)
    start = 0.5
    while start < seconds - 1:
        dur = rng.uniform(0.4, 2.5)
        f0, rate_mod = rng.uniform(100, 250), rng.uniform(3, 6)
        s = (t >= start) & (t < start + dur)
        env = 0.5 * (1 - np.cos(2 * np.pi * rate_mod * (t[s] - start)))
        voiced = sum(np.sin(2 * np.pi * f0 * k * t[s]) / k for k in range(1, 8))
        audio[s] += 0.3 * env * voiced + 0.02 * rng.standard_normal(s.sum())
        start += dur + rng.uniform(0.3, 2.0)
    return audio.astype(np.float32)


def silero(path, rows):
    import onnx
    import onnxruntime as ort
    from onnx import helper, utils
    from onnxruntime.quantization import QuantType, quantize_dynamic
    model = onnx.load(path)
    lstm_node = next(n for n in model.graph.node if n.op_type == "LSTM")
    x_name, y_name = lstm_node.input[0], lstm_node.output[0]
    with tempfile.TemporaryDirectory() as folder:
        # the encoder output (the LSTM's input) as an extra graph output
        tapped = onnx.load(path)
        tapped.graph.output.append(helper.make_empty_tensor_value_info(x_name))
        tapped_path = os.path.join(folder, "tapped.onnx")
        onnx.save(tapped, tapped_path)
        decoder_path = os.path.join(folder, "decoder.onnx")
        utils.extract_model(path, decoder_path, [y_name], ["speech_probs"])
        q_path = os.path.join(folder, "q.onnx")
        import logging
        logging.getLogger().setLevel(logging.ERROR)
        quantize_dynamic(path, q_path, op_types_to_quantize=["LSTM"],
                         weight_type=QuantType.QInt8)
        audio = _synthetic_audio()
        chunks = audio[: len(audio) // 512 * 512].reshape(-1, 512)
        context = np.concatenate([np.zeros((1, 64), np.float32), chunks[:-1, -64:]])
        frames = np.concatenate([context, chunks], axis=1)  # (T, 576): 64 samples of context
        feeds = {"input": frames, "h": np.zeros((1, 1, 128), np.float32),
                 "c": np.zeros((1, 1, 128), np.float32)}
        full = ort.InferenceSession(tapped_path, providers=["CPUExecutionProvider"])
        names = [o.name for o in full.get_outputs()]
        got = dict(zip(names, full.run(None, feeds)))
        probs_ref, lstm_in = got["speech_probs"], got[x_name]  # lstm_in (T, 1, 128)
        decoder = ort.InferenceSession(decoder_path, providers=["CPUExecutionProvider"])
        qsession = ort.InferenceSession(q_path, providers=["CPUExecutionProvider"])
        probs_ort_q = qsession.run(None, feeds)[0]
        layer = fastrnn.from_onnx(path)
        x = np.ascontiguousarray(lstm_in.transpose(1, 0, 2))  # (1, T, 128)
        y_ref = layer(x)[0]

        def probs_of(y):  # y (1, T, 128) batch-first -> ONNX Y (T, 1, 1, 128)
            return decoder.run(None, {y_name: y.transpose(1, 0, 2)[:, None]})[0]
        p_float = probs_of(y_ref)
        impls = {"float32": (y_ref, p_float),
                 "fastrnn int8": None, "fastrnn bf16": None, "torch qint8": None}
        yq = layer.quantize("int8")(x)[0]
        impls["fastrnn int8"] = (yq, probs_of(yq))
        yb = layer.quantize("bf16")(x)[0]
        impls["fastrnn bf16"] = (yb, probs_of(yb))
        torch_run = _torch_qint8(layer)
        if torch_run is not None:
            yt = torch_run(x)[0]
            impls["torch qint8"] = (yt, probs_of(yt))
        else:
            del impls["torch qint8"]
        impls["ORT DynamicQuantizeLSTM"] = (None, probs_ort_q)
    label = f"(b) Silero VAD LSTM (H=128), {x.shape[1]} chunks of 32 ms"
    assert np.abs(p_float - probs_ref).max() < 1e-4, "fastrnn float32 != the model's own LSTM"
    speech = p_float > 0.5
    for name, (y, p) in impls.items():
        mx, mean = _err(y, y_ref) if y is not None else (float("nan"), float("nan"))
        dp = np.abs(p - p_float)
        flips = int(np.sum((p > 0.5) != speech))
        rows.append((label, name, mx, mean,
                     f"speech prob. diff max {dp.max():.4f}, mean {dp.mean():.5f}; "
                     f"decisions changed {flips}/{p.size} ({speech.mean():.0%} speech)"))


def random_layers(rows):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((16, 100, 256)).astype(np.float32)
    for cls in (fastrnn.LSTM, fastrnn.GRU):
        layer = cls(256, 256, seed=3)  # Keras initialisers
        ref = layer(x)[0]
        impls = {"fastrnn int8": _fastrnn(layer.quantize("int8")),
                 "fastrnn bf16": _fastrnn(layer.quantize("bf16"))}
        with tempfile.TemporaryDirectory() as folder:
            for name, build in (("torch qint8", lambda: _torch_qint8(layer)),
                                ("ORT DynamicQuantizeLSTM", lambda: _ort_dynamic(layer, folder))):
                fn = build()
                if fn is not None:
                    impls[name] = fn
            for name, fn in impls.items():
                mx, mean = _err(fn(x)[0], ref)
                rows.append((f"(c) random {layer._cell.upper()} H=256 T=100 (Keras init)", name,
                             mx, mean, "-"))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--silero", help="silero_vad_16k_sequence.onnx (default: the installed "
                   "silero-vad package's)")
    p.add_argument("--steps", type=int, default=1500, help="adding-problem training steps")
    args = p.parse_args(argv)
    fastrnn.set_num_threads(1)
    rows = []
    for cell in ("lstm", "gru"):
        adding(cell, args.steps, rows)
    path = args.silero
    if path is None:
        spec = importlib.util.find_spec("silero_vad")
        if spec is not None:
            path = os.path.join(os.path.dirname(spec.origin), "data",
                                "silero_vad_16k_sequence.onnx")
    if path and os.path.exists(path):
        silero(path, rows)
    else:
        print("(b) skipped: silero-vad is not installed (pip install silero-vad, or --silero)",
              file=sys.stderr)
    random_layers(rows)
    print("| model | implementation | max abs err | mean abs err | task |")
    print("|---|---|---:|---:|---|")
    for label, name, mx, mean, task in rows:
        fmt = (lambda v: "-" if v != v else f"{v:.2e}")
        print(f"| {label} | {name} | {fmt(mx) if name != 'float32' else '0'} | "
              f"{fmt(mean) if name != 'float32' else '0'} | {task} |")


if __name__ == "__main__":
    main()
