"""Cell variants (docs/variants.md): activation specs and the per-layer cell descriptor.

One place turns the constructor keywords (Keras' `activation` / `recurrent_activation`,
ONNX's `activations` list, `clip`, peepholes, ...) into the normalised form the layer keeps
(`layer.activations`) and into the descriptor the C core's variant epilogues run from.
"""
import math
import numbers

from . import _core

# name -> (default alpha, default beta); None where the function takes no such parameter.
_PARAMS = {
    "sigmoid": (None, None),
    "tanh": (None, None),
    "relu": (None, None),
    "linear": (None, None),
    "hard_sigmoid": (None, 0.5),  # alpha by hard_sigmoid= (Keras 3 or Keras 2)
    "softsign": (None, None),
    "softplus": (None, None),
    "elu": (1.0, None),
    "leaky_relu": (0.01, None),
    "thresholded_relu": (1.0, None),
    "scaled_tanh": (1.0, 1.0),
    "affine": (1.0, 0.0),
}
# Keras 3: relu6(x + 3) / 6 = clip(x / 6 + 0.5, 0, 1); Keras 2 (tf.keras <= 2.x): 0.2 x + 0.5.
_HARD_SIGMOID_ALPHA = {"keras3": 1.0 / 6.0, "keras2": 0.2}
# ONNX spellings (and any case or underscores) of the same functions.
_SQUASHED = {name.replace("_", ""): name for name in _PARAMS}
PLAIN = ("sigmoid", "tanh", "tanh")  # slots f, g, h of the plain cell


def activation_names():
    return tuple(_PARAMS)


def normalize_activation(spec, hard_sigmoid="keras3", what="activation"):
    """(name, alpha, beta) of a name or a (name[, alpha[, beta]]) tuple; alpha / beta are
    None for functions that take none."""
    if isinstance(spec, str):
        raw, given = spec, ()
    elif isinstance(spec, (tuple, list)) and 1 <= len(spec) <= 3 and isinstance(spec[0], str):
        raw, given = spec[0], tuple(spec[1:])
    else:
        raise TypeError(f"{what} must be a name or a (name, alpha, beta) tuple, got {spec!r}")
    name = _SQUASHED.get(raw.lower().replace("_", ""))
    if name is None:
        raise ValueError(f"{what}={raw!r} is not supported; supported: "
                         f"{', '.join(_PARAMS)} (docs/variants.md)")
    if hard_sigmoid not in _HARD_SIGMOID_ALPHA:
        raise ValueError(f"hard_sigmoid must be 'keras3' or 'keras2', got {hard_sigmoid!r}")
    alpha, beta = _PARAMS[name]
    if name == "hard_sigmoid":
        alpha = _HARD_SIGMOID_ALPHA[hard_sigmoid]
    for i, value in enumerate(given):
        if value is None:
            continue
        default = (alpha, beta)[i]
        if default is None:
            raise ValueError(f"{what}={name!r} takes no {('alpha', 'beta')[i]}")
        if isinstance(value, bool) or not isinstance(value, numbers.Real) \
                or not math.isfinite(value):
            raise ValueError(f"{what}: {('alpha', 'beta')[i]} must be a finite number, "
                             f"got {value!r}")
        if i == 0:
            alpha = float(value)
        else:
            beta = float(value)
    return (name, alpha, beta)


def resolve_activations(cell, num_directions, activation, recurrent_activation, activations,
                        hard_sigmoid):
    """Per direction, per slot (f, g[, h]) normalised activations."""
    slots = 3 if cell == "lstm" else 2
    if activations is None:
        f = normalize_activation(recurrent_activation, hard_sigmoid, "recurrent_activation")
        g = normalize_activation(activation, hard_sigmoid, "activation")
        return ((f, g, g)[:slots],) * num_directions
    if activation != "tanh" or recurrent_activation != "sigmoid":
        raise ValueError("give activations= (the ONNX form) or activation= / "
                         "recurrent_activation=, not both")
    if isinstance(activations, (str, bytes)) or not hasattr(activations, "__len__"):
        raise TypeError(f"activations must be a list of {slots} or {slots * num_directions} "
                        f"activations, got {activations!r}")
    acts = [normalize_activation(a, hard_sigmoid, "activations") for a in activations]
    if len(acts) == slots:
        acts = acts * num_directions
    if len(acts) != slots * num_directions:
        raise ValueError(f"activations must hold {slots} (one set for every direction) or "
                         f"{slots * num_directions} (one set per direction) functions, "
                         f"got {len(acts)}")
    return tuple(tuple(acts[d * slots:(d + 1) * slots]) for d in range(num_directions))


def positive_or_none(value, what):
    """A clip threshold: None, or a finite number > 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{what} must be None or a finite number > 0, got {value!r}")
    return float(value)


def variant_features(layer):
    """Names of the layer's non-plain features (empty for the plain cell)."""
    out = []
    if any(tuple(a[0] for a in acts) != PLAIN[:len(acts)] for acts in layer.activations):
        out.append("activations")
    for what in ("clip", "cell_clip", "peepholes", "input_forget", "proj_size", "proj_clip"):
        if getattr(layer, what, None):
            out.append(what)
    return out


def core_descriptor(layer):
    """The `variant` argument of _core.LayerEngine, or None for the plain cell."""
    if not variant_features(layer):
        return None
    act = []
    for acts in layer.activations:
        row = []
        for name, alpha, beta in acts:
            if name == "linear":
                row.append((_core.ACTIVATION_CODES["affine"], 1.0, 0.0))
            else:
                row.append((_core.ACTIVATION_CODES[name], alpha or 0.0, beta or 0.0))
        while len(row) < 3:
            row.append((0, 0.0, 0.0))
        act.append(row)
    return {"act": act, "clip": layer.clip or 0.0, "cell_clip": getattr(layer, "cell_clip", None)
            or 0.0, "peepholes": bool(getattr(layer, "peepholes", False)),
            "input_forget": bool(getattr(layer, "input_forget", False)),
            "proj_size": getattr(layer, "proj_size", 0) or 0,
            "proj_clip": getattr(layer, "proj_clip", None) or 0.0}
