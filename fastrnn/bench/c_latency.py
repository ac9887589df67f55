"""Streaming latency of the C step (fr_step), timed in C (no Python in the timed loop).

`c_step_latency(layer)` binds the layer's weights to a C streaming model (no copy), then asks
the core's `fr_time_steps` to run `steps` consecutive fr_step calls under a monotonic clock,
`repeats` times. The result also states how close the step is to the weight-streaming bound:
at batch 1 every step must read all the weights once, so a step cannot take less than
weight_bytes / bandwidth. `bandwidth_gbps` defaults to the rate at which sgemv streams weights
from L2/L3 on the reference machine (2-core Zen 3, about 55 GB/s).
"""
import numpy as np

from .. import _core

REFERENCE_BANDWIDTH_GBPS = 55.0


def weight_bytes(layer):
    """Bytes of weights one step reads: every layer's kernel, recurrent matrix and biases."""
    G, H, e = layer._num_gates, layer.hidden_size, layer.dtype.itemsize
    n = 0
    for k in range(layer.num_layers):
        n += G * H * (layer._layer_input_size(k) + H)
        if layer.use_bias:
            n += G * H * (2 if layer._cell == "gru" else 1)
    return n * layer.num_directions * e


def c_step_latency(layer, *, steps=None, repeats=31, batch=1,
                   bandwidth_gbps=REFERENCE_BANDWIDTH_GBPS, seed=0):
    """Per-step latency of fr_step for `layer` (unidirectional), single-threaded, timed in C.

    steps: fr_step calls per timed repeat (default: about 0.3 ms worth, at least 100; short
    repeats keep most of them clear of preemption on a busy machine, and the median then
    ignores the few that are not).
    Returns a dict: median_ns, min_ns, max_ns (per step, over the repeats), ns (all repeats),
    steps, repeats, batch, weight_bytes, bound_ns (weight_bytes / bandwidth) and
    fraction_of_bound (bound_ns / median_ns: 1.0 = at the weight-streaming bound), isa, dtype.
    A fraction above 1 means the step beats that streaming rate: small layers keep their
    weights in L1/L2 between steps, which deliver more than 55 GB/s.
    """
    if layer.bidirectional or layer.reverse:
        raise ValueError("c_step_latency needs a unidirectional, forward layer")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive int, got {repeats!r}")
    model = _core.StreamModel(layer._engines, int(batch))
    x = np.random.default_rng(seed).uniform(-1, 1, (batch, layer.input_size)).astype(layer.dtype)
    if steps is None:
        probe = float(np.min(model.time_steps(x, 50, 3)))
        steps = int(max(100, min(1_000_000, 3e5 / max(probe, 1.0))))
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    model.reset()
    ns = model.time_steps(x, steps, repeats)
    wb = weight_bytes(layer)
    bound = wb / bandwidth_gbps  # bytes / (GB/s) = ns
    median = float(np.median(ns))
    return {
        "median_ns": median,
        "min_ns": float(ns.min()),
        "max_ns": float(ns.max()),
        "ns": ns,
        "steps": steps,
        "repeats": repeats,
        "batch": batch,
        "weight_bytes": wb,
        "bound_ns": bound,
        "fraction_of_bound": bound / median,
        "bandwidth_gbps": bandwidth_gbps,
        "isa": _core.get_isa(),
        "dtype": layer.dtype.name,
        "threads": 1,
    }
