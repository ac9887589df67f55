"""cuDNN canonical RNN parameters, as a flat buffer or as per-gate tensors.

Per pseudo-layer p = layer * num_directions + direction, cuDNN's canonical form has 2*G weight
matrices, W_0..W_{G-1} (H, input_size_of_layer) applied to x and R_0..R_{G-1} (H, H) applied to h,
row-major, and 2*G bias vectors b_W0..b_W{G-1}, b_R0..b_R{G-1} (H,). Gate order: LSTM input,
forget, cell (new memory), output; GRU reset, update, new memory, whose b_R sits inside the reset
product (fastrnn reset_after=True). This is PyTorch's layout gate for gate.

`weights` and `biases` list these tensors for p = 0, 1, ... in turn (as TensorFlow's
CudnnRNNParamsToCanonical / CanonicalToParams do). The flat buffer is all weight matrices,
flattened row-major in that order, followed by all bias vectors; for one unidirectional layer this
is the `concat(W.., R.., b_W.., b_R..)` buffer that Keras 3 passes to cuDNN.

The parameters are weights only: the geometry (cell, input_size, hidden_size, num_layers,
bidirectional, use_bias) and the settings that are not weights (name, masked_output, dropout,
recurrent_dropout) travel beside them and are given to `from_cudnn` again.
"""
import numpy as np

from ._common import DIRECTIONS, as_array, build, join_rows, split_rows
from .torch import GATE_ORDER  # PyTorch hands its parameters to cuDNN unreordered


def _geometry(cell, input_size, hidden_size, num_layers, bidirectional):
    if cell not in GATE_ORDER:
        raise ValueError(f"cell must be 'lstm' or 'gru', got {cell!r}")
    D = 2 if bidirectional else 1
    H = int(hidden_size)
    return D, H, [int(input_size) if k == 0 else D * H for k in range(num_layers)]


def from_cudnn(params=None, *, cell, input_size, hidden_size, num_layers=1, bidirectional=False,
               weights=None, biases=None, use_bias=True, dtype=None, name=None,
               masked_output="zero", dropout=0.0, recurrent_dropout=0.0):
    """A layer from cuDNN canonical parameters: either `params` (the flat buffer) or the lists
    `weights` and `biases` (per-gate tensors, flattened or 2-D).

    The geometry (`cell` "lstm" / "gru", sizes, num_layers, bidirectional, use_bias) says how
    to cut the parameters; `name`, `masked_output`, `dropout` and `recurrent_dropout` are the
    layer's settings that a cuDNN parameter set does not hold (see `to_cudnn`). `dtype`:
    the layer's, by default float64 for float64 parameters and float32 otherwise. Raises
    ValueError when the parameters do not fit the geometry.

    Example:
        >>> flat = to_cudnn(fastrnn.GRU(3, 4, name="g"), flat=True)
        >>> from_cudnn(flat, cell="gru", input_size=3, hidden_size=4, name="g")
        GRU(3, 4, reset_after=True, dtype='float32', name='g')
    """
    D, H, ins = _geometry(cell, input_size, hidden_size, num_layers, bidirectional)
    G = len(GATE_ORDER[cell])
    w_shapes = [(H, ins[k]) if j < G else (H, H)
                for k in range(num_layers) for _ in range(D) for j in range(2 * G)]
    nb = num_layers * D * 2 * G if use_bias else 0
    if params is not None:
        if weights is not None or biases is not None:
            raise ValueError("give either the flat params buffer or weights/biases, not both")
        flat = as_array(params, "params").reshape(-1)
        expected = sum(a * b for a, b in w_shapes) + nb * H
        if flat.size != expected:
            raise ValueError(f"cuDNN params buffer has {flat.size} values; a {cell.upper()} "
                             f"with input_size={input_size}, hidden_size={H}, "
                             f"num_layers={num_layers}, bidirectional={bidirectional}"
                             f"{'' if use_bias else ', no bias'} needs {expected}")
        weights, pos = [], 0
        for shape in w_shapes:
            n = shape[0] * shape[1]
            weights.append(flat[pos:pos + n])
            pos += n
        biases = [flat[pos + i * H:pos + (i + 1) * H] for i in range(nb)]
    if weights is None:
        raise ValueError("give the flat params buffer or the weights (and biases) lists")
    weights = list(weights)
    biases = [] if biases is None else list(biases)
    if len(weights) != len(w_shapes) or len(biases) != nb:
        raise ValueError(f"expected {len(w_shapes)} weight and {nb} bias tensors for this "
                         f"{cell.upper()}, got {len(weights)} and {len(biases)}")
    sd = {}
    for p in range(num_layers * D):
        k, d = divmod(p, D)
        ws = []
        for j in range(2 * G):
            i = p * 2 * G + j
            a = as_array(weights[i], f"weights[{i}]")
            if a.size != w_shapes[i][0] * w_shapes[i][1]:
                raise ValueError(f"weights[{i}] has {a.size} values, expected shape {w_shapes[i]}")
            ws.append(a.reshape(w_shapes[i]))
        b_w = b_r = None
        if use_bias:
            bs = []
            for j in range(2 * G):
                i = p * 2 * G + j
                b = as_array(biases[i], f"biases[{i}]").reshape(-1)
                if b.size != H:
                    raise ValueError(f"biases[{i}] has {b.size} values, expected {H}")
                bs.append(b)
            b_w, b_r = np.concatenate(bs[:G]), np.concatenate(bs[G:])
        split_rows(cell, GATE_ORDER[cell], np.concatenate(ws[:G]), np.concatenate(ws[G:]),
                   b_w, b_r, H, f"layer{k}.{DIRECTIONS[d]}", sd)
    return build(cell, input_size, H, sd, dtype=dtype, num_layers=num_layers,
                 bidirectional=bidirectional, use_bias=use_bias, name=name,
                 masked_output=masked_output, dropout=dropout,
                 recurrent_dropout=recurrent_dropout)


def to_cudnn(layer, flat=False):
    """(weights, biases) lists in cuDNN canonical order, or the flat buffer with flat=True.

    A cuDNN parameter set holds weights only (in the layer's dtype). What it cannot express is
    refused with a ValueError: a GRU with reset_after=False (cuDNN resets after the recurrent
    matmul), reverse=True (cuDNN has no unidirectional reverse-time RNN) and cell variants.
    A layer with masked_output="carry" gives a UserWarning: cuDNN's padded-sequence API outputs
    zeros past each sequence's length, so pass masked_output="carry" to `from_cudnn` to get
    this layer's outputs back. The name, dropout and recurrent_dropout, like the geometry, are
    not weights and travel beside the parameters (`from_cudnn` takes them).

    Example:
        >>> weights, biases = to_cudnn(fastrnn.LSTM(3, 4))
        >>> len(weights), weights[0].shape, len(biases)
        (8, (4, 3), 8)
    """
    if layer._cell == "gru" and not layer.reset_after:
        raise ValueError("cuDNN's GRU applies the reset gate after the recurrent matmul; a GRU "
                         "with reset_after=False cannot be represented")
    if layer.reverse:
        raise ValueError("cuDNN has no unidirectional reverse-time RNN (reverse=True)")
    if layer.variant_features:
        raise ValueError(f"the cuDNN canonical layout holds the plain cell only; {layer!r} has "
                         f"{', '.join(layer.variant_features)}")
    if layer.masked_output == "carry":
        import warnings
        warnings.warn(f"{layer!r} has masked_output='carry', which cuDNN parameters do not "
                      "hold: cuDNN's padded-sequence API outputs zeros past each sequence's "
                      "length; pass masked_output='carry' to from_cudnn to get this layer back",
                      UserWarning, stacklevel=2)
    H, G = layer.hidden_size, layer._num_gates
    weights, biases = [], []
    for k in range(layer.num_layers):
        for direction in DIRECTIONS[:layer.num_directions]:
            W, R, b_w, b_r = join_rows(layer, GATE_ORDER[layer._cell], k, direction)
            weights += [W[g * H:(g + 1) * H] for g in range(G)]
            weights += [R[g * H:(g + 1) * H] for g in range(G)]
            if layer.use_bias:
                biases += [b_w[g * H:(g + 1) * H] for g in range(G)]
                biases += [b_r[g * H:(g + 1) * H] for g in range(G)]
    if flat:
        return np.concatenate([w.reshape(-1) for w in weights] + biases)
    return weights, biases
