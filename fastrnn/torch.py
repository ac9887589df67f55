"""Drop-in `torch.nn.LSTM` / `torch.nn.GRU` modules that run on fastrnn's CPU kernels.

`fastrnn.torch.LSTM` and `fastrnn.torch.GRU` are subclasses of `nn.LSTM` / `nn.GRU` with the
same constructor, parameters (`weight_ih_l0`, `weight_hh_l0`, `bias_ih_l0`, `bias_hh_l0`,
`..._reverse`, `weight_hr_l0`), initialisation, inputs (padded tensors, batch_first or not,
`PackedSequence`, unbatched 2-D input, `hx`) and outputs. State dicts load both ways unchanged.

    >>> import torch, fastrnn.torch
    >>> lstm = fastrnn.torch.LSTM(8, 32, num_layers=2, bidirectional=True, batch_first=True)
    >>> out, (h_n, c_n) = lstm(torch.randn(4, 10, 8))
    >>> out.shape, h_n.shape
    (torch.Size([4, 10, 64]), torch.Size([4, 4, 32]))

An existing model is switched over in place (and back) with `accelerate(model)` /
`restore(model)`; the modules keep the very same Parameter objects, so optimizers built before
keep working.

How it runs:
* CPU float32 / float64 tensors go through fastrnn, one stacked layer at a time. Gradients
  come from fastrnn's backward pass through a `torch.autograd.Function` that keeps the record
  of its own call, so a module may be called several times before `backward()`.
  Without a gradient to compute (`torch.no_grad()`, `torch.inference_mode()`, nothing requiring
  grad) nothing is recorded.
* fastrnn keeps its own (padded, gate-named) copy of the weights. It is repacked only when a
  parameter changed: each call compares the parameters' identity, storage and `_version`
  (an optimizer step, `load_state_dict`, `.to()` or assigning a new Parameter all show there).
  An in-place change through `.data` (`p.data.add_(...)`) does not count as a change for
  torch's version counter: call `module.resync_weights()` after such code.
* Dropout between stacked layers (`dropout=p`, training mode) is applied on the torch side
  with `torch.nn.functional.dropout` between the per-layer fastrnn calls: the same
  distribution as nn.LSTM's dropout, not the same random numbers.
* Anything else falls back to PyTorch's own kernels (nn.LSTM.forward) with one UserWarning
  per module: other devices (cuda, meta), other dtypes (float16, bfloat16), tracing,
  torch.compile, torch.func transforms and forward-mode AD. A second-order gradient
  (`create_graph=True`) is computed by re-running the layer with PyTorch's kernels inside
  the backward pass (also with one warning).

The number of threads is fastrnn's (`fastrnn.set_num_threads`), not torch's.
"""
import copy
import warnings
import weakref

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from . import layers as _layers
from .io.torch import GATE_ORDER

__all__ = ["LSTM", "GRU", "accelerate", "restore", "accelerate_module", "restore_module"]

_DIRECTIONS = ("forward", "backward")
_NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}
# What this module adds to an nn.LSTM / nn.GRU's attributes (dropped again by restore).
_OWN_ATTRS = ("_fastrnn_layers", "_fastrnn_repacks", "_fastrnn_warned")


# ---------------------------------------------------------------------------------------------
# Weight packing: torch row blocks <-> fastrnn's gate-named canonical weights

class _PackedLayer:
    """One stacked layer as a single-layer fastrnn layer, with the parameters (weak
    references and versions) its weights were last packed from. `generation` counts repacks,
    so a backward pass can tell whether the weights still are those of its forward pass."""

    __slots__ = ("layer", "refs", "versions", "generation", "owner")

    def __init__(self, layer, owner):
        self.layer, self.refs, self.versions, self.generation = layer, (), None, 0
        self.owner = owner  # weak reference to the module (for its once-only warning)

    def matches(self, params):
        return (len(self.refs) == len(params) and self.versions == _versions(params)
                and all(ref() is p for ref, p in zip(self.refs, params)))

    def pack(self, params, names):
        """Copy the torch parameters of this layer (names per direction, torch's order) in."""
        layer = self.layer
        cell, H = layer._cell, layer.hidden_size
        by_name = dict(zip([n for dir_names in names for n in dir_names], params))
        for d, dir_names in enumerate(names):
            w = {n.split("_l")[0]: _numpy(by_name[n]) for n in dir_names}
            direction = _DIRECTIONS[d]
            for gi, gate in enumerate(GATE_ORDER[cell]):
                rows = slice(gi * H, (gi + 1) * H)
                view = layer.gate(gate, 0, direction)
                view.kernel[...] = w["weight_ih"][rows].T
                view.recurrent[...] = w["weight_hh"][rows].T
                if layer.use_bias:
                    if cell == "lstm":  # torch's two LSTM biases only act as their sum
                        view.bias[...] = w["bias_ih"][rows] + w["bias_hh"][rows]
                    else:
                        view.bias[...] = w["bias_ih"][rows]
                        view.recurrent_bias[...] = w["bias_hh"][rows]
            if "weight_hr" in w:
                layer._view(0, d, 0, "projection")[...] = w["weight_hr"].T
        self.refs = tuple(weakref.ref(p) for p in params)
        self.versions = _versions(params)
        self.generation += 1


def _versions(params):
    out = []
    for p in params:
        try:
            version = p._version
        except RuntimeError:  # an inference tensor has no version counter: always repack
            version = object()
        out.append((version, p.data_ptr(), p.dtype))
    return tuple(out)


def _numpy(t):
    """A tensor's data as a numpy array (no copy when it is contiguous)."""
    return t.detach().resolve_conj().resolve_neg().contiguous().numpy()


def _grads_to_torch(layer, grads, names):
    """fastrnn's gradient dict of a single-layer fastrnn layer -> torch tensors in the order
    of `names` (torch's parameter order per direction)."""
    cell, out = layer._cell, []
    order = GATE_ORDER[cell]
    for d, dir_names in enumerate(names):
        pre = f"layer0.{_DIRECTIONS[d]}"
        for name in dir_names:
            kind = name.split("_l")[0]
            if kind == "weight_ih":
                g = np.concatenate([grads[f"{pre}.{gate}.kernel"].T for gate in order])
            elif kind == "weight_hh":
                g = np.concatenate([grads[f"{pre}.{gate}.recurrent"].T for gate in order])
            elif kind == "bias_ih" or (kind == "bias_hh" and cell == "lstm"):
                # both torch LSTM biases get the gradient of their sum (separate tensors:
                # optimizers and grad clipping change .grad in place)
                g = np.concatenate([grads[f"{pre}.{gate}.bias"] for gate in order])
            elif kind == "bias_hh":
                g = np.concatenate([grads[f"{pre}.{gate}.recurrent_bias"] for gate in order])
            else:  # weight_hr
                g = np.ascontiguousarray(grads[f"{pre}.projection"].T)
            out.append(torch.from_numpy(g))
    return out


# ---------------------------------------------------------------------------------------------
# Autograd

class _LayerRun:
    """What one stacked layer's call needs besides tensors: its packed weights, the padding
    mask and lengths (or None), and its parameter names."""

    __slots__ = ("packed", "mask", "lengths", "names", "bias", "bidirectional")

    def __init__(self, packed, mask, lengths, names, bias, bidirectional):
        self.packed, self.mask, self.lengths, self.names = packed, mask, lengths, names
        self.bias, self.bidirectional = bias, bidirectional


class _LayerFunction(torch.autograd.Function):
    """One stacked layer (all directions) through fastrnn; the record of the call stays with
    this node of the graph, so calls of the same module never share one."""

    @staticmethod
    def forward(ctx, run, x, h0, c0, *params):
        layer = run.packed.layer
        out, state, tape = layer._forward_with_tape(
            x.detach().numpy(), run.mask, None if h0 is None else _numpy(h0),
            None if c0 is None else _numpy(c0))
        ctx.run, ctx.tape, ctx.generation = run, tape, run.packed.generation
        # Saved for torch's version check: an in-place change before backward() raises, as
        # with nn.LSTM (the record refers to x and the state without copies).
        ctx.save_for_backward(x, h0, c0, *params)
        if layer._cell == "lstm":
            return torch.from_numpy(out), torch.from_numpy(state[0]), torch.from_numpy(state[1])
        return torch.from_numpy(out), torch.from_numpy(state)

    @staticmethod
    def backward(ctx, grad_out, grad_h, grad_c=None):
        x, h0, c0, *params = ctx.saved_tensors
        run = ctx.run
        if torch.is_grad_enabled():  # create_graph=True: the gradient must be differentiable
            return _differentiable_backward(ctx, run, x, h0, c0, params,
                                            (grad_out, grad_h, grad_c))
        packed = run.packed
        layer = packed.layer
        if packed.generation != ctx.generation:
            # The parameters were repacked after this forward pass (a new Parameter was
            # assigned; in-place changes fail the version check above): use this pass's ones.
            packed.pack(params, run.names)
        grad_state = (_numpy(grad_h), _numpy(grad_c)) if layer._cell == "lstm" else \
            _numpy(grad_h)
        dx, dstate, grads = layer._backward_with_tape(ctx.tape, _numpy(grad_out), grad_state)
        dh0, dc0 = (dstate if layer._cell == "lstm" else (dstate, None))
        need = ctx.needs_input_grad
        param_grads = _grads_to_torch(layer, grads, run.names) if any(need[4:]) else \
            [None] * len(params)
        return (None, torch.from_numpy(dx) if need[1] else None,
                torch.from_numpy(dh0) if need[2] else None,
                torch.from_numpy(dc0) if need[3] and dc0 is not None else None, *param_grads)


def _differentiable_backward(ctx, run, x, h0, c0, params, grad_outputs):
    """The backward pass of one layer for a second-order gradient: the layer is run again
    with PyTorch's kernels and differentiated with create_graph=True."""
    owner = run.packed.owner()
    if owner is not None:
        owner._fastrnn_warn("a second-order gradient (create_graph=True) was requested; this "
                            "backward pass re-runs the layer with PyTorch's kernels")
    inputs = [(i, t) for i, t in enumerate((x, h0, c0, *params), start=1)
              if t is not None and t.requires_grad]
    with torch.enable_grad():
        outs = _stock_layer(run, x, h0, c0, params)
    grads = torch.autograd.grad(outs, [t for _, t in inputs],
                                [g for g in grad_outputs[:len(outs)]],
                                create_graph=True, allow_unused=True)
    result = [None] * (4 + len(params))
    for (i, _), g in zip(inputs, grads):
        result[i] = g
    return tuple(result)


def _stock_layer(run, x, h0, c0, params):
    """One stacked layer with PyTorch's kernels (torch._VF), batch-first x (B, T, I) ->
    (y, h_n[, c_n]) like _LayerFunction.forward."""
    from torch import _VF
    layer = run.packed.layer
    lstm = layer._cell == "lstm"
    B, T = x.shape[0], x.shape[1]
    D = layer.num_directions
    if h0 is None:
        h0 = x.new_zeros((D, B, layer._h_size))
    if lstm and c0 is None:
        c0 = x.new_zeros((D, B, layer.hidden_size))
    hx = [h0, c0] if lstm else h0
    fn = _VF.lstm if lstm else _VF.gru
    if run.lengths is None:
        res = fn(x, hx, list(params), run.bias, 1, 0.0, False, run.bidirectional, True)
        return tuple(res)
    # Sorted by decreasing length (the ragged batch as nn.LSTM's packed path sees it).
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    packed = pack_padded_sequence(x, torch.as_tensor(run.lengths), batch_first=True,
                                  enforce_sorted=False)
    order = packed.sorted_indices
    hx = [s.index_select(1, order) for s in hx] if lstm else hx.index_select(1, order)
    res = fn(packed.data, packed.batch_sizes, hx, list(params), run.bias, 1, 0.0, False,
             run.bidirectional)
    y, _ = pad_packed_sequence(PackedSequence(res[0], packed.batch_sizes, order,
                                              packed.unsorted_indices),
                               batch_first=True, total_length=T)
    return (y, *(s.index_select(1, packed.unsorted_indices) for s in res[1:]))


# ---------------------------------------------------------------------------------------------
# Packed sequences <-> padded batch-first tensors (in the packed sorted order)

def _packed_positions(batch_sizes):
    """For a PackedSequence's batch_sizes (T,): the row b*T + t of each packed element in a
    (B, T) padded layout, and the lengths (B,) (sorted, decreasing)."""
    bs = batch_sizes.numpy().astype(np.int64)
    T, B = len(bs), int(bs[0]) if len(bs) else 0
    starts = np.repeat(np.cumsum(bs) - bs, bs)
    b = np.arange(starts.size) - starts
    t = np.repeat(np.arange(T), bs)
    lengths = (bs[None, :] > np.arange(B)[:, None]).sum(axis=1)
    return torch.from_numpy(b * T + t), lengths, B, T


# ---------------------------------------------------------------------------------------------
# The modules

class _FastRecurrent:
    """What fastrnn.torch.LSTM and GRU share (mixed into nn.LSTM / nn.GRU)."""

    def _fastrnn_init_state(self):
        self._fastrnn_layers = [None] * self.num_layers
        self._fastrnn_repacks = 0     # stacked-layer repacks so far (see _fastrnn_packed)
        self._fastrnn_warned = False  # the fallback warning is given once per module

    def __getstate__(self):
        # The fastrnn weight copies are a cache (and hold C objects): never pickled.
        state = dict(super().__getstate__())
        state.pop("_fastrnn_layers", None)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._fastrnn_init_state()

    def _fastrnn_warn(self, message):
        if not self._fastrnn_warned:
            self._fastrnn_warned = True
            warnings.warn(f"fastrnn.torch.{type(self).__name__}: {message} (warned once per "
                          "module)", UserWarning, stacklevel=4)

    def resync_weights(self):
        """Repack fastrnn's copy of the weights at the next call. Only needed after changing
        parameters in place through `.data` (e.g. `p.data.add_(...)`), which torch's version
        counters do not see; optimizers, `load_state_dict`, `.to()` and assignments are
        noticed by themselves.

        Example:
            >>> lstm.weight_hh_l0.data.mul_(0.5); lstm.resync_weights()
        """
        for entry in self._fastrnn_layers:
            if entry is not None:
                entry.refs = ()

    def _fastrnn_params(self, k):
        """(parameters, names per direction) of stacked layer k, in torch's order."""
        D = 2 if self.bidirectional else 1
        names = [self._all_weights[k * D + d] for d in range(D)]
        return [getattr(self, n) for dir_names in names for n in dir_names], names

    def _fastrnn_packed(self, k, params, names, dtype):
        """Stacked layer k's fastrnn weights, repacked only if a parameter changed."""
        entry = self._fastrnn_layers[k]
        if entry is not None and entry.layer.dtype == dtype and entry.matches(params):
            return entry
        if entry is None or entry.layer.dtype != dtype:
            D = 2 if self.bidirectional else 1
            P = getattr(self, "proj_size", 0)
            input_size = self.input_size if k == 0 else D * (P or self.hidden_size)
            options = dict(bidirectional=self.bidirectional, use_bias=self.bias, dtype=dtype,
                           init="torch", seed=0)
            if self.mode == "LSTM":
                layer = _layers.LSTM(input_size, self.hidden_size, proj_size=P, **options)
            else:
                layer = _layers.GRU(input_size, self.hidden_size, **options)
            entry = self._fastrnn_layers[k] = _PackedLayer(layer, weakref.ref(self))
        with torch.no_grad():
            entry.pack(params, names)
        self._fastrnn_repacks += 1
        return entry

    def _fastrnn_refusal(self, input, hx):
        """None when fastrnn can run this call; otherwise why not ("" when PyTorch's own
        forward is to report a bad call, e.g. a dtype mismatch, without a warning)."""
        data = input.data if isinstance(input, PackedSequence) else input
        if not isinstance(data, torch.Tensor):
            return ""
        tensors = [data, *self._flat_weights]
        if isinstance(hx, torch.Tensor):
            tensors.append(hx)
        elif isinstance(hx, (tuple, list)):
            tensors.extend(t for t in hx if isinstance(t, torch.Tensor))
        for t in tensors:
            if t.device.type != "cpu":
                return f"tensors on device {t.device} (fastrnn runs on the CPU)"
        dtype = self._flat_weights[0].dtype
        if dtype not in _NUMPY_DTYPES:
            return f"dtype {dtype} (fastrnn runs float32 and float64)"
        for t in tensors:
            if t.dtype != dtype:
                return ""
            if t.layout != torch.strided or type(t) not in (torch.Tensor, nn.Parameter):
                return f"a {type(t).__name__} with layout {t.layout}"
        if torch.jit.is_tracing() or torch.jit.is_scripting():
            return "TorchScript tracing records PyTorch operations only"
        if torch.compiler.is_compiling():
            return "under torch.compile"
        if torch._C._are_functorch_transforms_active():
            return "a torch.func transform (vmap, grad, jacrev, ...) is active"
        if torch.autograd.forward_ad._current_level >= 0:
            return "forward-mode AD (dual tensors)"
        return None

    def forward(self, input, hx=None):
        """Like nn.LSTM / nn.GRU forward: `input` a padded tensor, a PackedSequence or an
        unbatched 2-D tensor, `hx` the initial state or None (zeros); returns (output, h_n) /
        (output, (h_n, c_n)) in the same form. See the module docstring for what runs where.

        Example:
            >>> out, h_n = fastrnn.torch.GRU(8, 16)(torch.zeros(5, 2, 8))
        """
        reason = self._fastrnn_refusal(input, hx)
        if reason is not None:
            if reason:
                self._fastrnn_warn(f"{reason}; running PyTorch's own kernels instead")
            return super().forward(input, hx)
        return self._fastrnn_forward(input, hx)

    def _fastrnn_forward(self, input, hx):
        lstm = self.mode == "LSTM"
        D = 2 if self.bidirectional else 1
        if isinstance(input, PackedSequence):
            data, batch_sizes, sorted_indices, unsorted_indices = input
            positions, lengths, B, T = _packed_positions(batch_sizes)
            if hx is not None:
                self.check_forward_args(data, hx, batch_sizes)
                hx = self.permute_hidden(hx, sorted_indices)
            x = data.new_zeros((B * T, data.shape[-1])).index_copy(0, positions, data)
            x = x.view(B, T, -1)
            output, hidden = self._fastrnn_layers_forward(x, hx, lengths)
            output = output.reshape(B * T, -1).index_select(0, positions)
            return (PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices),
                    self.permute_hidden(hidden, unsorted_indices))
        name = type(self).__name__
        if input.dim() not in (2, 3):
            raise ValueError(f"{name}: Expected input to be 2D or 3D, got {input.dim()}D "
                             "instead")
        batched = input.dim() == 3
        batch_dim = 0 if self.batch_first else 1
        if not batched:
            input = input.unsqueeze(batch_dim)
        if hx is not None:
            states = hx if lstm else (hx,)
            if not isinstance(states, (tuple, list)) or len(states) != (2 if lstm else 1):
                raise TypeError(f"{name}: hx must be " + ("(h_0, c_0)" if lstm else "h_0"))
            want = 3 if batched else 2
            if any(s.dim() != want for s in states):
                raise RuntimeError(f"For {'batched 3-D' if batched else 'unbatched 2-D'} "
                                   f"input, hx should also be {want}-D but got "
                                   f"{tuple(s.dim() for s in states)}-D tensors")
            if not batched:
                states = tuple(s.unsqueeze(1) for s in states)
            hx = states if lstm else states[0]
            self.check_forward_args(input, hx, None)
        else:
            self.check_input(input, None)
        x = input if self.batch_first else input.transpose(0, 1)
        output, hidden = self._fastrnn_layers_forward(x, hx, None)
        if not self.batch_first:
            output = output.transpose(0, 1).contiguous()
        if not batched:
            output = output.squeeze(batch_dim)
            hidden = tuple(s.squeeze(1) for s in hidden) if lstm else hidden.squeeze(1)
        return output, hidden

    def _fastrnn_layers_forward(self, x, hx, lengths):
        """Batch-first x (B, T, I), hx in torch's layout or None, lengths (B,) numpy or None
        -> (output (B, T, D * units), hidden) through each stacked layer."""
        lstm = self.mode == "LSTM"
        D = 2 if self.bidirectional else 1
        B, T = x.shape[0], x.shape[1]
        h0_all, c0_all = (hx if lstm else (hx, None)) if hx is not None else (None, None)
        dtype = _NUMPY_DTYPES[self._flat_weights[0].dtype]
        mask = _layers._Recurrent._mask(None, lengths, B, T) if lengths is not None else None
        need_grad = torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in self._flat_weights)
            or any(s is not None and s.requires_grad for s in (h0_all, c0_all)))
        out = x.contiguous()
        hs, cs = [], []
        for k in range(self.num_layers):
            params, names = self._fastrnn_params(k)
            packed = self._fastrnn_packed(k, params, names, dtype)
            s = slice(k * D, (k + 1) * D)
            h0 = None if h0_all is None else h0_all[s].contiguous()
            c0 = None if c0_all is None else c0_all[s].contiguous()
            if need_grad:
                run = _LayerRun(packed, mask, lengths, names, self.bias, self.bidirectional)
                y, *state = _LayerFunction.apply(run, out, h0, c0, *params)
            else:
                y, state = packed.layer._infer(
                    out.detach().numpy(), mask, None if h0 is None else _numpy(h0),
                    None if c0 is None else _numpy(c0))
                y = torch.from_numpy(y)
                state = [torch.from_numpy(a) for a in (state if lstm else (state,))]
            hs.append(state[0])
            if lstm:
                cs.append(state[1])
            if self.dropout and self.training and k < self.num_layers - 1:
                y = nn.functional.dropout(y, self.dropout, training=True)
            out = y
        h_n = hs[0] if len(hs) == 1 else torch.cat(hs)
        if lstm:
            return out, (h_n, cs[0] if len(cs) == 1 else torch.cat(cs))
        return out, h_n


class LSTM(_FastRecurrent, nn.LSTM):
    """`torch.nn.LSTM` on fastrnn's CPU kernels: same arguments, parameters and results.

    Args:
        input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
        bidirectional=False, proj_size=0, device=None, dtype=None: as for nn.LSTM.

    Call: ``output, (h_n, c_n) = lstm(input, hx=None)`` exactly as nn.LSTM (padded tensor,
    PackedSequence or unbatched 2-D input). CPU float32 / float64 run on fastrnn; anything
    else falls back to PyTorch's kernels with one UserWarning (see fastrnn.torch).

    Example:
        >>> lstm = fastrnn.torch.LSTM(8, 16, batch_first=True)
        >>> lstm.load_state_dict(torch.nn.LSTM(8, 16, batch_first=True).state_dict())
        <All keys matched successfully>
        >>> out, (h, c) = lstm(torch.zeros(2, 5, 8))
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, device=None, dtype=None):
        super().__init__(input_size, hidden_size, num_layers=num_layers, bias=bias,
                         batch_first=batch_first, dropout=dropout, bidirectional=bidirectional,
                         proj_size=proj_size, device=device, dtype=dtype)
        self._fastrnn_init_state()


class GRU(_FastRecurrent, nn.GRU):
    """`torch.nn.GRU` on fastrnn's CPU kernels: same arguments, parameters and results.

    Args:
        input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
        bidirectional=False, device=None, dtype=None: as for nn.GRU.

    Call: ``output, h_n = gru(input, hx=None)`` exactly as nn.GRU.

    Example:
        >>> gru = fastrnn.torch.GRU(8, 16, bidirectional=True)
        >>> out, h = gru(torch.zeros(5, 2, 8))    # (time, batch, features)
        >>> out.shape, h.shape
        (torch.Size([5, 2, 32]), torch.Size([2, 2, 16]))
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, device=None, dtype=None):
        super().__init__(input_size, hidden_size, num_layers=num_layers, bias=bias,
                         batch_first=batch_first, dropout=dropout, bidirectional=bidirectional,
                         device=device, dtype=dtype)
        self._fastrnn_init_state()


# ---------------------------------------------------------------------------------------------
# Swapping modules in a model

_FAST = {nn.LSTM: LSTM, nn.GRU: GRU}
_STOCK = {LSTM: nn.LSTM, GRU: nn.GRU}


def _rebuild(module, cls):
    """A `cls` instance with module's attributes: the same Parameter objects, hooks, flags
    (containers are copied, so later registrations on one do not show on the other)."""
    new = cls.__new__(cls)
    for key, value in module.__dict__.items():
        if key not in _OWN_ATTRS:
            new.__dict__[key] = copy.copy(value) if isinstance(value, (dict, list, set)) \
                else value
    return new


def accelerate_module(rnn):
    """A fastrnn.torch.LSTM / GRU sharing the Parameters (and hooks, flags) of `rnn`, an
    nn.LSTM / nn.GRU; a fastrnn.torch module is returned as it is.

    Raises TypeError for anything else (subclasses of nn.LSTM / nn.GRU too: they may
    override forward).

    Example:
        >>> fast = fastrnn.torch.accelerate_module(torch.nn.LSTM(8, 16))
    """
    if type(rnn) in _STOCK:
        return rnn
    if type(rnn) not in _FAST:
        raise TypeError(f"accelerate_module takes an nn.LSTM or nn.GRU, got "
                        f"{type(rnn).__name__}")
    new = _rebuild(rnn, _FAST[type(rnn)])
    new._fastrnn_init_state()
    return new


def restore_module(rnn):
    """The plain nn.LSTM / nn.GRU sharing the Parameters of `rnn`, a fastrnn.torch module (a
    plain one is returned as it is). Raises TypeError for anything else.

    Example:
        >>> stock = fastrnn.torch.restore_module(fastrnn.torch.LSTM(8, 16))
    """
    if type(rnn) in _FAST:
        return rnn
    if type(rnn) not in _STOCK:
        raise TypeError(f"restore_module takes a fastrnn.torch.LSTM or GRU, got "
                        f"{type(rnn).__name__}")
    return _rebuild(rnn, _STOCK[type(rnn)])


def _swap(model, convert, kinds, what):
    if not isinstance(model, nn.Module):
        raise TypeError(f"{what} takes a torch.nn.Module, got {type(model).__name__}")
    if type(model) in kinds:
        raise TypeError(f"{what} swaps submodules in place; for a bare {type(model).__name__} "
                        f"use fastrnn.torch.{convert.__name__}(module), which returns the "
                        "swapped module")
    done, paths = {}, []
    for parent_path, parent in list(model.named_modules(remove_duplicate=False)):
        for name, child in list(parent._modules.items()):
            if child is None or type(child) not in kinds:
                continue
            if id(child) not in done:  # a module used twice stays one module
                done[id(child)] = convert(child)
            setattr(parent, name, done[id(child)])
            paths.append(f"{parent_path}.{name}" if parent_path else name)
    return paths


def accelerate(model):
    """Replace every nn.LSTM / nn.GRU submodule of `model` in place by a fastrnn.torch module
    holding the same Parameters (optimizers built before keep working).

    Only exact nn.LSTM / nn.GRU instances are swapped (not subclasses). Returns the attribute
    paths swapped, e.g. ["encoder.rnn"]; `restore(model)` undoes it. Raises TypeError if
    `model` is not an nn.Module or is itself an nn.LSTM / nn.GRU (see accelerate_module).

    Example:
        >>> model = torch.nn.Sequential(torch.nn.LSTM(8, 16))
        >>> fastrnn.torch.accelerate(model)
        ['0']
    """
    return _swap(model, accelerate_module, _FAST, "accelerate")


def restore(model):
    """Put plain nn.LSTM / nn.GRU modules back into `model` where `accelerate` put
    fastrnn.torch ones (the same Parameters). Returns the attribute paths swapped back;
    TypeError if `model` is not an nn.Module or is itself a fastrnn.torch module.

    Example:
        >>> fastrnn.torch.restore(model)
        ['0']
    """
    return _swap(model, restore_module, _STOCK, "restore")
