"""Drop-in Keras 3 `LSTM` / `GRU` layers that run on fastrnn's CPU kernels.

`fastrnn.keras.LSTM` and `fastrnn.keras.GRU` subclass `keras.layers.LSTM` / `GRU`: the same
constructor, config, variables (`kernel`, `recurrent_kernel`, `bias`), initialisation and
outputs, so `get_config` / `from_config`, `get_weights` / `set_weights` and checkpoints are
interchangeable with the stock layers. They are registered as serializable (package
"fastrnn"): a saved model holding them reloads with `keras.models.load_model` once
`fastrnn.keras` has been imported.

    >>> import numpy as np, keras, fastrnn.keras
    >>> lstm = fastrnn.keras.LSTM(32, return_sequences=True)
    >>> lstm(np.zeros((4, 10, 8), np.float32)).shape
    torch.Size([4, 10, 32])

An existing functional or Sequential model is converted with `accelerate(model)`, which
returns a clone with every LSTM / GRU (also inside `Bidirectional`) replaced and the weights
copied.

What runs where:
* CPU tensors of float32 / float64 with a configuration fastrnn runs (activations tanh,
  sigmoid, hard_sigmoid, relu, linear, softsign, elu, softplus; use_bias; GRU reset_after
  either way; go_backwards; return_sequences / return_state; any mask; initial_state;
  stateful=False) go through fastrnn. Masks (from `Embedding(mask_zero=True)`, `Masking` or
  passed by hand) may have any pattern, left padding included; masked steps give what Keras
  gives (the previous output, or zeros with `zero_output_for_mask`, which `Bidirectional`
  sets).
* Anything else runs Keras' own implementation (`keras.layers.LSTM.call`) with one
  UserWarning per layer naming why: stateful=True, other activations, float16 / bfloat16,
  tensors on a GPU, compiled or traced calls (torch.compile, jax.jit, tf.function). Shape
  inference (Keras' symbolic calls on "meta" tensors) uses Keras' code silently.
* Training (torch backend): gradients to the inputs, the initial states and the kernel,
  recurrent kernel and bias come from fastrnn's backward pass through a
  `torch.autograd.Function` that keeps the record of its own call. On the other backends
  a training call raises RuntimeError (inference works on every backend, eagerly).
* Dropout (`dropout`, `recurrent_dropout`) acts in training calls only (Keras' learning-phase
  rules decide `training`); in inference it is an exact no-op. In training the masks are
  fastrnn's own random numbers, not Keras' seed generator: the same distribution per unit,
  one mask per sequence for the inputs and one for the recurrent state, shared by all gates.
  (With recurrent_dropout Keras draws a separate mask per gate; the statistics per gate are
  the same, the correlation between gates is not.)
* fastrnn keeps its own copy of the weights, repacked only when a variable changed: on the
  torch backend each call compares the variables' torch `_version` counters (optimizer
  steps, `assign`, `set_weights` all count), on JAX the identity of the arrays; on
  TensorFlow (variables change in place without a counter) every call repacks.
"""
import threading
import warnings

import numpy as np

import keras
from keras import ops

from . import layers as _layers
from .io.keras import (GATE_ORDER, _direction_weights, _sub_layer, layer_from_config,
                       unsupported_reason)

__all__ = ["LSTM", "GRU", "accelerate"]

_FLOAT_DTYPES = {"float32": np.float32, "float64": np.float64}


def _backend():
    return keras.backend.backend()


# ---------------------------------------------------------------------------------------------
# Tensors <-> numpy

def _to_numpy(t, dtype=None):
    """A backend tensor's values as a C-contiguous numpy array (no copy where the backend
    allows: torch CPU tensors are shared)."""
    if _backend() == "torch":
        a = t.detach()
        if not a.is_contiguous():
            a = a.contiguous()
        a = a.numpy()
    else:
        a = np.ascontiguousarray(ops.convert_to_numpy(t))
    if dtype is not None and a.dtype != dtype:
        a = a.astype(dtype)
    return a


def _mask_numpy(mask):
    """Keras' (B, T) mask -> uint8 (B, T) numpy array, or None when every step is valid."""
    if mask is None:
        return None
    m = _to_numpy(mask)
    if m.dtype != np.bool_:
        m = m != 0
    if m.ndim == 3:  # (B, T, 1) masks are accepted by Keras' rnn too
        m = m[..., 0]
    if m.all():
        return None
    return np.ascontiguousarray(m).view(np.uint8)


# ---------------------------------------------------------------------------------------------
# fastrnn copies of a layer's weights

class _Packed:
    """A fastrnn layer built from a Keras layer's variables, with the variables' versions it
    was packed from; `generation` counts repacks (a backward pass checks it)."""

    __slots__ = ("layer", "versions", "generation", "cell", "options", "lock")

    def __init__(self, layer, cell, options):
        self.layer, self.cell, self.options = layer, cell, options
        self.versions, self.generation = None, 0
        self.lock = threading.Lock()

    def pack(self, arrays):
        """Write Keras' [kernel, recurrent_kernel(, bias)] arrays into the fastrnn layer."""
        sd = {}
        _direction_weights(self.cell, False, self.options, arrays, "layer0.forward",
                           "fastrnn.keras", sd)
        self.layer.load_state_dict(sd)
        self.generation += 1


def _versions(variables):
    """What tells whether a variable changed since the last pack (None: always repack)."""
    backend = _backend()
    if backend == "torch":
        out = []
        for v in variables:
            p = v.value
            try:
                version = p._version
            except RuntimeError:  # an inference tensor has no version counter
                return None
            out.append((id(p), version, p.data_ptr(), p.dtype))
        return tuple(out)
    if backend == "jax":  # immutable arrays: an assignment installs a new one
        return tuple((id(v.value), v.value) for v in variables)
    return None


def _same_versions(a, b):
    if a is None or b is None or len(a) != len(b):
        return False
    if _backend() == "jax":
        return all(x[1] is y[1] for x, y in zip(a, b))
    return a == b


def _grads_to_keras(packed, grads):
    """fastrnn's gradient dict -> [d kernel, d recurrent_kernel(, d bias)] in Keras' layout."""
    order = GATE_ORDER[packed.cell]
    pre = "layer0.forward"
    out = [np.concatenate([grads[f"{pre}.{g}.kernel"] for g in order], axis=1),
           np.concatenate([grads[f"{pre}.{g}.recurrent"] for g in order], axis=1)]
    if packed.options["use_bias"]:
        b = np.concatenate([grads[f"{pre}.{g}.bias"] for g in order])
        if packed.cell == "gru" and packed.options["reset_after"]:
            b = np.stack([b, np.concatenate([grads[f"{pre}.{g}.recurrent_bias"]
                                             for g in order])])
        # reset_after=False: Keras' one bias is fastrnn's input bias (recurrent bias 0)
        out.append(b)
    return out


# ---------------------------------------------------------------------------------------------
# Autograd (torch backend)

_FUNCTION = None


def _function():
    """The torch.autograd.Function running a layer through fastrnn (built on first use, so
    importing this module needs torch only on the torch backend)."""
    global _FUNCTION
    if _FUNCTION is not None:
        return _FUNCTION
    import torch

    class _RecurrentFunction(torch.autograd.Function):
        """One Keras LSTM / GRU call through fastrnn; the record of the call stays with this
        node of the graph, so a layer may be called several times before backward()."""

        @staticmethod
        def forward(ctx, run, x, h0, c0, *params):
            packed = run.packed
            layer = packed.layer
            out, state, tape = layer._forward_with_tape(
                _to_numpy(x), run.mask, None if h0 is None else _to_numpy(h0)[None],
                None if c0 is None else _to_numpy(c0)[None])
            ctx.run, ctx.tape, ctx.generation = run, tape, packed.generation
            # Saved for torch's version check: the record refers to x and the states
            # without copies, so an in-place change before backward() must raise.
            ctx.save_for_backward(x, h0, c0, *params)
            if packed.cell == "lstm":
                return (torch.from_numpy(out), torch.from_numpy(state[0][0]),
                        torch.from_numpy(state[1][0]))
            return torch.from_numpy(out), torch.from_numpy(state[0])

        @staticmethod
        @torch.autograd.function.once_differentiable
        def backward(ctx, grad_out, grad_h, grad_c=None):
            x, h0, c0, *params = ctx.saved_tensors
            packed = ctx.run.packed
            layer = packed.layer
            with packed.lock:
                if packed.generation != ctx.generation:
                    # repacked since this forward pass: back to that pass's weights
                    packed.pack([_to_numpy(p) for p in params])
                    packed.versions = None
                grad_state = _to_numpy(grad_h)[None]
                if packed.cell == "lstm":
                    grad_state = (grad_state, _to_numpy(grad_c)[None])
                dx, dstate, grads = layer._backward_with_tape(ctx.tape, _to_numpy(grad_out),
                                                              grad_state)
            dh0, dc0 = dstate if packed.cell == "lstm" else (dstate, None)
            need = ctx.needs_input_grad
            param_grads = [None] * len(params)
            if any(need[4:]):
                param_grads = [torch.from_numpy(np.ascontiguousarray(g, dtype=layer.dtype))
                               for g in _grads_to_keras(packed, grads)]
            return (None, torch.from_numpy(dx) if need[1] else None,
                    torch.from_numpy(dh0[0]) if need[2] else None,
                    torch.from_numpy(dc0[0]) if need[3] and dc0 is not None else None,
                    *param_grads)

    _FUNCTION = _RecurrentFunction
    return _FUNCTION


class _Run:
    """What a call passes to the autograd Function besides tensors."""

    __slots__ = ("packed", "mask")

    def __init__(self, packed, mask):
        self.packed, self.mask = packed, mask


# ---------------------------------------------------------------------------------------------
# The layers

class _FastRecurrent:
    """What fastrnn.keras.LSTM and GRU share (mixed into keras.layers.LSTM / GRU)."""

    _fastrnn_base = None  # "LSTM" / "GRU": the Keras class name fastrnn.io.keras reads

    def _fastrnn_state(self):
        state = self.__dict__.get("_fastrnn")
        if state is None:
            # Plain attributes set through __dict__: Keras' attribute tracking never sees them.
            state = {"key": None, "reason": None, "packed": {}, "warned": False,
                     "repacks": 0, "lock": threading.Lock()}
            self.__dict__["_fastrnn"] = state
        return state

    @property
    def fastrnn_repacks(self):
        """How many times fastrnn's copy of the weights was (re)built from the variables."""
        return self._fastrnn_state()["repacks"]

    def _fastrnn_warn(self, message):
        state = self._fastrnn_state()
        if not state["warned"]:
            state["warned"] = True
            warnings.warn(f"fastrnn.keras.{type(self).__name__} {self.name!r}: {message}; "
                          "running Keras' own implementation instead (warned once per layer)",
                          UserWarning, stacklevel=4)

    def _fastrnn_config_key(self):
        cell = self.cell
        return (self.zero_output_for_mask, self.go_backwards, self.stateful, cell.activation,
                cell.recurrent_activation, cell.use_bias, getattr(cell, "reset_after", None),
                cell.dropout, cell.recurrent_dropout, cell.units)

    def _fastrnn_config_reason(self):
        """None when fastrnn runs this layer's configuration, else why not (cached until the
        configuration changes)."""
        state = self._fastrnn_state()
        key = self._fastrnn_config_key()
        if state["key"] != key:
            config = self.get_config()
            state["reason"] = unsupported_reason(self._fastrnn_base, config)
            state["config"] = config
            state["key"] = key
            state["packed"] = {}
        return state["reason"]

    def _fastrnn_refusal(self, sequences, initial_state, mask):
        """None when fastrnn can run this call; else why not ("" = without a warning: Keras'
        symbolic shape inference)."""
        backend = _backend()
        tensors = [sequences, *([] if mask is None else [mask]),
                   *[s for s in (initial_state or ()) if s is not None]]
        if backend == "torch":
            import torch
            for t in tensors:
                if not isinstance(t, torch.Tensor):
                    return ""  # Keras converts inputs itself; something else is not ours
                if t.device.type == "meta":
                    return ""
                if t.device.type != "cpu":
                    return f"tensors on device {t.device} (fastrnn runs on the CPU)"
            if torch.jit.is_tracing() or torch.jit.is_scripting():
                return "TorchScript tracing records PyTorch operations only"
            if torch.compiler.is_compiling():
                return "under torch.compile"
            if torch._C._are_functorch_transforms_active():
                return "a torch.func transform is active"
        elif backend == "tensorflow":
            import tensorflow as tf
            if not tf.executing_eagerly():
                return ("a traced tf.function call (compile the model with "
                        "jit_compile=False, run_eagerly=True to use fastrnn)")
        elif backend == "jax":
            import jax
            if any(isinstance(t, jax.core.Tracer) for t in tensors):
                return ("a traced jax call (compile the model with jit_compile=False, "
                        "run_eagerly=True to use fastrnn)")
        reason = self._fastrnn_config_reason()
        if reason is not None:
            return reason
        dtype = self.compute_dtype
        if dtype not in _FLOAT_DTYPES or self.cell.kernel.dtype != dtype:
            return (f"compute dtype {dtype} with variables of {self.cell.kernel.dtype} "
                    "(fastrnn runs float32 and float64)")
        shape = tuple(sequences.shape)
        if len(shape) != 3 or 0 in shape:
            return "" if len(shape) != 3 else "an empty batch or sequence"
        return None

    def _fastrnn_variables(self):
        cell = self.cell
        return [cell.kernel, cell.recurrent_kernel] + ([cell.bias] if cell.use_bias else [])

    def _fastrnn_packed(self, dropout):
        """The fastrnn layer for this configuration (with or without dropout), repacked only
        when a variable changed since."""
        state = self._fastrnn_state()
        dtype = _FLOAT_DTYPES[self.compute_dtype]
        variables = self._fastrnn_variables()
        versions = _versions(variables)
        key = (dtype, dropout)
        with state["lock"]:
            packed = state["packed"].get(key)
            if packed is not None and _same_versions(packed.versions, versions):
                return packed
            arrays = [_to_numpy(v.value) for v in variables]
            if packed is None:
                config = dict(state["config"])
                if not dropout:
                    config["dropout"] = config["recurrent_dropout"] = 0.0
                for what in ("dropout", "recurrent_dropout"):
                    if not 0.0 < config[what] < 1.0:  # Keras applies neither 0 nor 1
                        config[what] = 0.0
                layer = layer_from_config(self._fastrnn_base, config, arrays, dtype=dtype,
                                          label="fastrnn.keras")
                cell, _, options = _sub_layer(self._fastrnn_base, config, "fastrnn.keras")
                packed = _Packed(layer, cell, options)
                packed.generation = 1
                state["packed"][key] = packed
            else:
                with packed.lock:
                    packed.pack(arrays)
            packed.versions = versions
            state["repacks"] += 1
            return packed

    def call(self, sequences, initial_state=None, mask=None, training=False):
        if isinstance(mask, (list, tuple)):
            mask = mask[0] if mask else None
        if initial_state is not None and not isinstance(initial_state, (list, tuple)):
            initial_state = [initial_state]
        reason = self._fastrnn_refusal(sequences, initial_state, mask)
        if reason is not None:
            if reason:
                self._fastrnn_warn(reason)
            return super().call(sequences, initial_state=initial_state, mask=mask,
                                training=training)
        return self._fastrnn_call(sequences, initial_state, mask, bool(training))

    def _fastrnn_call(self, sequences, initial_state, mask, training):
        backend = _backend()
        lstm = self._fastrnn_base == "LSTM"
        cell = self.cell
        dropout_active = training and (0.0 < cell.dropout < 1.0
                                       or 0.0 < cell.recurrent_dropout < 1.0)
        m = _mask_numpy(mask)
        dtype = _FLOAT_DTYPES[self.compute_dtype]
        states = list(initial_state) if initial_state is not None else []
        if states and len(states) != (2 if lstm else 1):
            raise ValueError(f"{self.name}: initial_state must be "
                             + ("[h, c]" if lstm else "[h]") + f", got {len(states)} tensors")
        if backend == "torch":
            import torch
            x = sequences if sequences.dtype == getattr(torch, self.compute_dtype) else \
                sequences.to(getattr(torch, self.compute_dtype))
            states = [s.to(x.dtype) for s in states]
            params = [v.value for v in self._fastrnn_variables()]
            need_grad = torch.is_grad_enabled() and (
                x.requires_grad or any(s.requires_grad for s in states)
                or any(p.requires_grad for p in params))
            packed = self._fastrnn_packed(dropout_active)
            if need_grad or training:
                h0 = states[0].contiguous() if states else None
                c0 = states[1].contiguous() if lstm and states else None
                if need_grad:
                    out, *final = _function().apply(_Run(packed, m), x.contiguous(), h0, c0,
                                                    *params)
                else:  # a training call without gradients: dropout, nothing kept
                    out, final, _ = packed.layer._forward_with_tape(
                        _to_numpy(x), m, *(None if s is None else _to_numpy(s)[None]
                                           for s in (h0, c0)))
                    out = torch.from_numpy(out)
                    final = [torch.from_numpy(s[0]) for s in (final if lstm else (final,))]
            else:
                out, final = self._fastrnn_infer(packed, x, states, m, dtype)
        else:
            if training:
                raise RuntimeError(
                    f"fastrnn.keras.{type(self).__name__}: training runs on Keras' torch "
                    f"backend only (KERAS_BACKEND=torch); this is the {backend} backend. Train "
                    "with keras.layers.LSTM / GRU here, or call with training=False")
            packed = self._fastrnn_packed(False)
            out, final = self._fastrnn_infer(packed, sequences, states, m, dtype)
        return self._fastrnn_outputs(out, final)

    def _fastrnn_infer(self, packed, x, states, m, dtype):
        """An inference call: numpy through fastrnn, the results as backend tensors."""
        h0 = _to_numpy(states[0], dtype)[None] if states else None
        c0 = _to_numpy(states[1], dtype)[None] if len(states) > 1 else None
        out, final = packed.layer._infer(_to_numpy(x, dtype), m, h0, c0)
        final = final if isinstance(final, tuple) else (final,)
        if _backend() == "torch":
            import torch
            return torch.from_numpy(out), [torch.from_numpy(s[0]) for s in final]
        return ops.convert_to_tensor(out), [ops.convert_to_tensor(s[0]) for s in final]

    def _fastrnn_outputs(self, out, final):
        """fastrnn's (B, T, H) output in time order -> what Keras' layer returns: a
        go_backwards layer gives its outputs in processing order (flipped in time)."""
        if self.return_sequences:
            output = ops.flip(out, axis=1) if self.go_backwards else out
        else:  # the output of the last processed step
            output = out[:, 0] if self.go_backwards else out[:, -1]
        if self.return_state:
            return output, *final
        return output


@keras.saving.register_keras_serializable(package="fastrnn")
class LSTM(_FastRecurrent, keras.layers.LSTM):
    """`keras.layers.LSTM` on fastrnn's CPU kernels: same arguments, config, variables and
    results (see the module docstring for what runs where).

    Args:
        units, activation, recurrent_activation, use_bias, kernel_initializer,
        recurrent_initializer, bias_initializer, unit_forget_bias, kernel_regularizer,
        recurrent_regularizer, bias_regularizer, activity_regularizer, kernel_constraint,
        recurrent_constraint, bias_constraint, dropout, recurrent_dropout, seed,
        return_sequences, return_state, go_backwards, stateful, unroll, use_cudnn,
        zero_output_for_mask, trainable, dtype, autocast, name: exactly as for
        keras.layers.LSTM (unroll and use_cudnn only matter where Keras' code runs; the
        `cell` and `args` of keras.layers.RNN's signature are set by LSTM itself).

    Call: ``layer(sequences, initial_state=None, mask=None, training=None)`` as Keras' LSTM.

    Example:
        >>> import numpy as np, fastrnn.keras
        >>> lstm = fastrnn.keras.LSTM(16, return_state=True)
        >>> out, h, c = lstm(np.zeros((2, 5, 8), np.float32))
        >>> tuple(out.shape), tuple(c.shape)
        ((2, 16), (2, 16))
    """

    _fastrnn_base = "LSTM"


@keras.saving.register_keras_serializable(package="fastrnn")
class GRU(_FastRecurrent, keras.layers.GRU):
    """`keras.layers.GRU` on fastrnn's CPU kernels: same arguments, config, variables and
    results, reset_after True or False (see the module docstring for what runs where).

    Args:
        units, activation, recurrent_activation, use_bias, kernel_initializer,
        recurrent_initializer, bias_initializer, kernel_regularizer, recurrent_regularizer,
        bias_regularizer, activity_regularizer, kernel_constraint, recurrent_constraint,
        bias_constraint, dropout, recurrent_dropout, seed, return_sequences, return_state,
        go_backwards, stateful, unroll, reset_after, use_cudnn, zero_output_for_mask,
        trainable, dtype, autocast, name: exactly as for keras.layers.GRU (unroll and
        use_cudnn only matter where Keras' code runs; the `cell` and `args` of
        keras.layers.RNN's signature are set by GRU itself).

    Call: ``layer(sequences, initial_state=None, mask=None, training=None)`` as Keras' GRU.

    Example:
        >>> import numpy as np, fastrnn.keras
        >>> gru = fastrnn.keras.GRU(16, return_sequences=True, reset_after=False)
        >>> tuple(gru(np.zeros((2, 5, 8), np.float32)).shape)
        (2, 5, 16)
    """

    _fastrnn_base = "GRU"


# ---------------------------------------------------------------------------------------------
# Converting a model

_FAST = {keras.layers.LSTM: LSTM, keras.layers.GRU: GRU}


def _fast_copy(layer):
    """A fastrnn copy (new variables) of a stock keras LSTM / GRU whose configuration fastrnn
    runs; None for anything else."""
    cls = _FAST.get(type(layer))
    if cls is None:
        return None
    config = layer.get_config()
    if unsupported_reason(cls._fastrnn_base, config) is not None:
        return None
    new = cls.from_config(config)
    # Bidirectional sets zero_output_for_mask on its halves after building them (it is in
    # their config too, but set explicitly here in case a subclass or user changed it).
    new.zero_output_for_mask = layer.zero_output_for_mask
    return new


def _clone_layer(layer):
    fast = _fast_copy(layer)
    if fast is not None:
        return fast
    if type(layer) is keras.layers.Bidirectional:
        forward = _fast_copy(layer.forward_layer)
        backward = _fast_copy(layer.backward_layer)
        if forward is not None and backward is not None:
            config = layer.get_config()
            for key in ("layer", "backward_layer"):
                config.pop(key, None)
            # Bidirectional copies its layer through the config (a fastrnn one stays one);
            # the backward half is passed explicitly so that its own config is kept.
            return keras.layers.Bidirectional(forward, backward_layer=backward, **config)
    return layer.__class__.from_config(layer.get_config())


def accelerate(model):
    """A clone of a functional or Sequential Keras model with every `keras.layers.LSTM` /
    `GRU` (also the halves of a `Bidirectional`, and in nested models) replaced by the
    fastrnn.keras one, all weights copied.

    Layers whose configuration fastrnn cannot run (stateful=True, other activations, ...)
    stay stock Keras layers in the clone. The clone is a new model: compile it before
    `fit`.

    Args:
        model: a keras.Model built with the functional API or keras.Sequential.

    Returns:
        The new model (same inputs, outputs and weights).

    Raises:
        TypeError: `model` is not a Keras model, or is a subclassed model (Keras cannot
            clone those; construct it with fastrnn.keras.LSTM / GRU instead).

    Example:
        >>> fast = fastrnn.keras.accelerate(model)          # doctest: +SKIP
        >>> fast.predict(x)                                   # doctest: +SKIP
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"accelerate takes a keras.Model, got {type(model).__name__}")
    functional = isinstance(model, keras.Sequential) or \
        type(model).__name__ == "Functional" or \
        isinstance(model, keras.src.models.functional.Functional)
    if not functional:
        raise TypeError(f"accelerate clones functional and Sequential models; "
                        f"{type(model).__name__} is a subclassed model: build its recurrent "
                        "layers with fastrnn.keras.LSTM / GRU instead")
    clone = keras.models.clone_model(model, clone_function=_clone_layer, recursive=True)
    old, new = model.weights, clone.weights
    if len(old) != len(new) or any(tuple(a.shape) != tuple(b.shape) for a, b in zip(old, new)):
        raise RuntimeError("accelerate: the cloned model's variables do not line up with the "
                           "original's")
    for src, dst in zip(old, new):
        dst.assign(src.value)
    return clone
