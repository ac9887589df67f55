"""LSTM and GRU layers: canonical gate-named weights over the C kernels.

Weights live in numpy arrays in the kernels' padded canonical layout (see src/fastrnn/fastrnn.h):
one (rows, ld) matrix per kernel / recurrent weight with the gates side by side, each gate
`gate_stride` columns wide. `gate()` hands out writable views into these arrays and the kernels
read them directly, so an edit is seen by the next call with no repacking.
"""
import copy
import numbers
import threading
from types import SimpleNamespace

import numpy as np

from . import _core, _variants
from ._config import get_num_threads
from ._phase import resolve_training

_DIRECTIONS = ("forward", "backward")
_MASKED_OUTPUT = ("zero", "carry")
_INITS = ("keras", "torch")
# Scratch memory up to this size is kept per thread and layer between calls. Allocating it
# per call costs a page fault per 4 KiB whenever the allocator hands large blocks back to the
# system at once (MALLOC_TRIM_THRESHOLD_, which Dask's worker processes set): scoring ran
# 1.6x slower there. 32 MiB is glibc's own largest reused block.
_WORKSPACE_CACHE_BYTES = 32 << 20
_PEEPHOLE_GATES = ("input", "forget", "output")  # order of the C core's peephole vector


def _positive_int(value, what):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{what} must be a positive int, got {value!r}")
    return int(value)


def _layer_dtype(dtype):
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from exc
    if dt not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt


def _numeric(a, what):
    a = np.asarray(a)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{what} must hold real numbers, got dtype {a.dtype}")
    return a


def _aligned_zeros(shape, dtype, align=64):
    """Zeros whose data starts on a cache-line boundary: every 16-float weight panel row is then
    one cache line instead of two (numpy itself only guarantees 16 bytes)."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape)) * dtype.itemsize
    raw = np.zeros(n + align, np.uint8)
    start = (-raw.ctypes.data) % align
    return raw[start:start + n].view(dtype).reshape(shape)


def _orthogonal(rng, rows, cols):
    """Keras Orthogonal initializer for a (rows, cols) matrix (gain 1)."""
    big, small = max(rows, cols), min(rows, cols)
    a = rng.normal(0.0, 1.0, size=(big, small))
    q, r = np.linalg.qr(a)
    q *= np.sign(np.diag(r))
    return q if rows >= cols else q.T


class _Recurrent:
    """Shared machinery of LSTM and GRU; the contract is docs/api.md."""

    _cell = None
    _gates = ()
    quantization = None  # "int8" on the inference-only layers that quantize() returns

    def __init__(self, input_size, hidden_size, *, num_layers=1, bidirectional=False,
                 use_bias=True, reverse=False, dropout=0.0, recurrent_dropout=0.0,
                 masked_output="zero", dtype="float32", init="keras", seed=None, name=None,
                 activation="tanh", recurrent_activation="sigmoid", activations=None,
                 hard_sigmoid="keras3", clip=None):
        self.input_size = _positive_int(input_size, "input_size")
        self.hidden_size = _positive_int(hidden_size, "hidden_size")
        self.num_layers = _positive_int(num_layers, "num_layers")
        self.bidirectional = bool(bidirectional)
        self.use_bias = bool(use_bias)
        self.reverse = bool(reverse)
        if self.reverse and self.bidirectional:
            raise ValueError("reverse=True applies to unidirectional layers only")
        for what, p in (("dropout", dropout), ("recurrent_dropout", recurrent_dropout)):
            if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p < 1.0:
                raise ValueError(f"{what} must be a number in [0, 1), got {p!r}")
        self.dropout = float(dropout)
        self.recurrent_dropout = float(recurrent_dropout)
        if masked_output not in _MASKED_OUTPUT:
            raise ValueError(f"masked_output must be one of {_MASKED_OUTPUT}, got {masked_output!r}")
        self.masked_output = masked_output
        self.dtype = _layer_dtype(dtype)
        if init not in _INITS:
            raise ValueError(f"init must be one of {_INITS}, got {init!r}")
        self.name = name
        # Cell variant (docs/variants.md): subclasses set their own features before this.
        self.hard_sigmoid = hard_sigmoid
        self.activations = _variants.resolve_activations(
            self._cell, self.num_directions, activation, recurrent_activation, activations,
            hard_sigmoid)
        self.clip = _variants.positive_or_none(clip, "clip")
        # Units of h (the output and the recurrence's input): proj_size or hidden_size. Plain
        # attributes, not properties: the inference fast path reads them on every call.
        self._proj = bool(getattr(self, "proj_size", 0))
        self._h_size = self.proj_size if self._proj else self.hidden_size
        self.trainable = True
        self.grads = {}
        self._local = threading.local()  # per-thread workspace and tape: calls never share
        self._allocate()
        self._initialize(init, seed)
        # Dropout masks come from their own stream of the layer's seed, so a seed reproduces
        # a training run and the initial weights do not depend on whether dropout is used.
        self._dropout_rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0]
                                                  if seed is not None else None)
        self._rng_lock = threading.Lock()

    # ---- geometry ----
    @property
    def num_directions(self):
        """2 for a bidirectional layer, else 1."""
        return 2 if self.bidirectional else 1

    @property
    def _num_gates(self):
        return len(self._gates)

    def _layer_input_size(self, layer):
        return self.input_size if layer == 0 else self.num_directions * self._h_size



    @property
    def variant_features(self):
        """The non-plain cell features in use, e.g. ["peepholes", "clip"] ([] = plain cell)."""
        return _variants.variant_features(self)

    def _allocate(self):
        H, G, dt = self.hidden_size, self._num_gates, self.dtype
        self._stride = _core.gate_stride(dt, H)
        ld = _core.recommended_ld(self._cell, dt, H)
        peepholes = getattr(self, "peepholes", False)
        P = self._h_size
        variant = _variants.core_descriptor(self)
        self._w = []  # [layer][direction] -> dict(kernel, recurrent, bias, recurrent_bias[,
        self._engines = []  # peephole])
        for layer in range(self.num_layers):
            I = self._layer_input_size(layer)
            dirs = []
            for _ in range(self.num_directions):
                dirs.append({
                    "kernel": _aligned_zeros((I, ld), dt),
                    "recurrent": _aligned_zeros((P, ld), dt),
                    "bias": _aligned_zeros(G * self._stride, dt),
                    "recurrent_bias": _aligned_zeros(G * self._stride, dt)
                    if self._cell == "gru" else None,
                })
                if peepholes or self._proj:
                    dirs[-1]["peephole"] = _aligned_zeros(3 * self._stride, dt) \
                        if peepholes else None
                if self._proj:  # (H, P) in a row stride of whole panels
                    dirs[-1]["projection"] = _aligned_zeros((H, _core.gate_stride(dt, P)), dt)
            self._w.append(dirs)
            self._engines.append(self._make_engine(layer, variant))
        self._frozen = False

    def _make_engine(self, layer, variant):
        """A C engine bound to the weight arrays of stacked layer `layer`."""
        dirs = self._w[layer]
        return _core.LayerEngine(
            self._cell, self.dtype, getattr(self, "reset_after", True),
            self._layer_input_size(layer), self.hidden_size, self.num_directions,
            self.reverse, self.masked_output,
            [(d["kernel"], d["recurrent"], d["bias"], d["recurrent_bias"],
              d.get("peephole"), d.get("projection")) for d in dirs], variant)

    # ---- frozen weights ----
    @property
    def frozen(self):
        """True after `freeze()` (and always for int8 / bf16 layers): the weights are
        read-only and packed once for the kernels."""
        return self._frozen or bool(self.quantization)

    def freeze(self):
        """Pack the weights once for the kernels and make them read-only (inference servers).

        A call otherwise lays the recurrent matrix out for its kernels at every call (the
        weights are live arrays that may change between calls); a frozen layer does it once
        here, which saves that copy on every call: most on short sequences with large
        layers (T=25, H=512-1024: a copy costs about two time steps). Results are bitwise the
        same as unfrozen. Weights stay readable (`gate()`, `state_dict()`, exports) but not
        writable: `gate()` views are read-only and `load_state_dict()` raises until
        `unfreeze()`. Training calls work (gradients are computed); updating the weights needs
        `unfreeze()` first. Quantized layers are always frozen.

        Returns:
            self (so that `layer = fastrnn.load(path).freeze()` reads naturally).

        Example:
            >>> import numpy as np, fastrnn
            >>> lstm = fastrnn.LSTM(8, 16, seed=0)
            >>> x = np.ones((1, 25, 8), np.float32)
            >>> y = lstm(x)[0]
            >>> bool((lstm.freeze()(x)[0] == y).all()), lstm.frozen
            (True, True)
        """
        if self.frozen:
            return self
        self._freeze_arrays()
        variant = _variants.core_descriptor(self)
        engines = []
        for layer in range(self.num_layers):
            engine = self._make_engine(layer, variant)
            engine.freeze_recurrent()
            engines.append(engine)
        # A new list of new engines: a call already running in another thread keeps the
        # engine it holds, whose arrays stay alive and unchanged.
        self._engines = engines
        self._frozen = True
        return self

    def unfreeze(self):
        """Undo `freeze()`: writable weights again, packed copies dropped. Returns self.

        Raises:
            TypeError: an int8 / bf16 layer (its weights exist only in packed form).
        """
        if self.quantization:
            raise TypeError(f"{self!r} holds {self.quantization} weights, which are always "
                            "frozen: edit the float layer and quantize() again")
        if not self._frozen:
            return self
        variant = _variants.core_descriptor(self)
        self._engines = [self._make_engine(layer, variant) for layer in range(self.num_layers)]
        for dirs in self._w:
            for d in dirs:
                for a in d.values():
                    if a is not None:
                        a.flags.writeable = True
        self._frozen = False
        return self

    def _view(self, layer, direction, gate_index, part):
        a = self._w[layer][direction].get(part)
        if a is None:
            return None
        if part == "projection":
            return a[:, :self._h_size]
        if part == "peephole":
            name = self._gates[gate_index]
            if name not in _PEEPHOLE_GATES:
                return None
            gate_index = _PEEPHOLE_GATES.index(name)
        lo = gate_index * self._stride
        return a[..., lo:lo + self.hidden_size]

    def _gate_parts(self, gate):
        """The state_dict parts of one gate."""
        parts = self._parts()
        if getattr(self, "peepholes", False) and gate in _PEEPHOLE_GATES:
            parts = parts + ["peephole"]
        return parts

    def _parts(self):
        parts = ["kernel", "recurrent"]
        if self.use_bias:
            parts.append("bias")
            if self._cell == "gru":
                parts.append("recurrent_bias")
        return parts

    # ---- initialisation ----
    def _initialize(self, init, seed):
        rng = np.random.default_rng(seed)
        H, G, P = self.hidden_size, self._num_gates, self._h_size
        for layer in range(self.num_layers):
            I = self._layer_input_size(layer)
            for d in range(self.num_directions):
                projection = None
                if init == "keras":
                    limit = np.sqrt(6.0 / (I + G * H))
                    kernel = rng.uniform(-limit, limit, size=(I, G * H))
                    recurrent = _orthogonal(rng, P, G * H)
                    if self._proj:  # glorot-uniform, as TF1 LSTMCell's default initializer
                        limit = np.sqrt(6.0 / (H + P))
                        projection = rng.uniform(-limit, limit, size=(H, P))
                    bias = np.zeros(G * H)
                    if self._cell == "lstm":
                        bias[H:2 * H] = 1.0  # unit_forget_bias
                    rbias = np.zeros(G * H)
                else:  # torch: every parameter U(-1/sqrt(H), 1/sqrt(H))
                    k = 1.0 / np.sqrt(H)
                    kernel = rng.uniform(-k, k, size=(G * H, I)).T
                    recurrent = rng.uniform(-k, k, size=(G * H, P)).T
                    b_ih = rng.uniform(-k, k, size=G * H)
                    b_hh = rng.uniform(-k, k, size=G * H)
                    # LSTM's two torch biases always act as their sum; GRU keeps both.
                    bias, rbias = (b_ih + b_hh, None) if self._cell == "lstm" else (b_ih, b_hh)
                    if self._proj:  # torch weight_hr (P, H)
                        projection = rng.uniform(-k, k, size=(P, H)).T
                if projection is not None:
                    self._view(layer, d, 0, "projection")[...] = projection
                for g in range(G):
                    cols = slice(g * H, (g + 1) * H)
                    self._view(layer, d, g, "kernel")[...] = kernel[:, cols]
                    self._view(layer, d, g, "recurrent")[...] = recurrent[:, cols]
                    if self.use_bias:
                        self._view(layer, d, g, "bias")[...] = bias[cols]
                        if self._cell == "gru":
                            self._view(layer, d, g, "recurrent_bias")[...] = rbias[cols]

    # ---- weights by gate name ----
    def state_dict(self):
        """The weights by gate name, as a new flat dict of numpy arrays (copies).

        Returns:
            dict: "layer{k}.{forward|backward}.{gate}.{part}" -> array, parts "kernel"
            (layer input, H), "recurrent" (units, H), "bias" (H,), "recurrent_bias" (H,, GRU
            only), "peephole" (H,, LSTM peepholes: gates input, forget, output); with
            proj_size also "layer{k}.{direction}.projection" (H, proj_size). No bias keys
            when use_bias is False. Gates: LSTM input, forget, cell, output; GRU update,
            reset, candidate.

        Example:
            >>> import fastrnn
            >>> sorted(fastrnn.GRU(4, 3).state_dict())[:2]
            ['layer0.forward.candidate.bias', 'layer0.forward.candidate.kernel']
        """
        if self.quantization == "int8":
            return self._quantized_state_dict()
        return self._float_state_dict()

    def _float_state_dict(self):
        out = {}
        for layer in range(self.num_layers):
            for d in range(self.num_directions):
                for g, gate in enumerate(self._gates):
                    for part in self._gate_parts(gate):
                        key = f"layer{layer}.{_DIRECTIONS[d]}.{gate}.{part}"
                        out[key] = self._view(layer, d, g, part).copy()
                if self._proj:
                    key = f"layer{layer}.{_DIRECTIONS[d]}.projection"
                    out[key] = self._view(layer, d, 0, "projection").copy()
        return out

    def load_state_dict(self, state):
        """Copy weights into the layer (converted to its dtype).

        Args:
            state: a mapping with exactly the keys and shapes of `state_dict()` (numpy
                arrays or array-likes).

        Raises:
            ValueError: missing or unexpected keys, or a wrong shape (named in the message).
            TypeError: state is not a mapping, or an array holds no real numbers.
            Every key and shape is checked first: nothing changes on error.

        Example:
            >>> import fastrnn
            >>> lstm, other = fastrnn.LSTM(8, 16, seed=0), fastrnn.LSTM(8, 16, seed=1)
            >>> other.load_state_dict(lstm.state_dict())
        """
        if self.quantization:
            raise TypeError(f"{self!r} holds {self.quantization} weights and is read-only: load "
                            "the float weights into a float layer, then call quantize()")
        if self._frozen:
            raise ValueError(f"{self!r} is frozen (read-only weights): call unfreeze() first")
        if not hasattr(state, "keys"):
            raise TypeError(f"state must be a mapping, got {type(state).__name__}")
        expected = self.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            raise ValueError(f"state_dict mismatch for {self!r}: missing keys {missing}, "
                             f"unexpected keys {unexpected}")
        arrays = {}
        for key, ref in expected.items():
            a = _numeric(state[key], f"state_dict[{key!r}]")
            if a.shape != ref.shape:
                raise ValueError(f"state_dict[{key!r}] has shape {a.shape}, expected {ref.shape}")
            arrays[key] = a
        for key, a in arrays.items():
            layer, direction, *gate, part = key.split(".")
            self._view(int(layer[5:]), _DIRECTIONS.index(direction),
                       self._gates.index(gate[0]) if gate else 0, part)[...] = a

    def gate(self, name, layer=0, direction="forward"):
        """Writable views of one gate's weights; edits are seen by the next call (read-only
        views while the layer is frozen: `freeze()`).

        Args:
            name: LSTM "input", "forget", "cell", "output"; GRU "update", "reset",
                "candidate".
            layer: stacked layer index, 0 .. num_layers - 1.
            direction: "forward", or "backward" for a bidirectional layer.

        Returns:
            An object with attributes kernel (layer input, H), recurrent (units, H), bias
            (H,), recurrent_bias (H,) and peephole (H,): numpy views into the layer, None
            where the layer has no such part (LSTM recurrent_bias, use_bias=False, peephole
            without peepholes or of the cell gate).

        Raises:
            ValueError: an unknown gate (the message lists them), layer or direction.

        Example:
            >>> import fastrnn
            >>> lstm = fastrnn.LSTM(8, 16)
            >>> lstm.gate("forget").bias[...] += 1.0
            >>> lstm.gate("forget").bias[:3]        # Keras init: forget bias 1
            array([2., 2., 2.], dtype=float32)
        """
        if name not in self._gates:
            raise ValueError(f"unknown gate {name!r} for {self._cell.upper()}; gates: {self._gates}")
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) \
                or not 0 <= layer < self.num_layers:
            raise ValueError(f"layer must be in [0, {self.num_layers}), got {layer!r}")
        dirs = _DIRECTIONS[:self.num_directions]
        if direction not in dirs:
            raise ValueError(f"direction must be one of {dirs}, got {direction!r}")
        d, g = dirs.index(direction), self._gates.index(name)
        bias = self._view(layer, d, g, "bias") if self.use_bias else None
        rbias = self._view(layer, d, g, "recurrent_bias") if self.use_bias else None
        return SimpleNamespace(kernel=self._view(layer, d, g, "kernel"),
                               recurrent=self._view(layer, d, g, "recurrent"),
                               bias=bias, recurrent_bias=rbias,
                               peephole=self._view(layer, d, g, "peephole"))

    # ---- input checking ----
    def _as_input(self, x, rank=3):
        x = _numeric(x, "x")
        shape = "(batch, time, input_size)" if rank == 3 else "(batch, input_size)"
        if x.ndim != rank:
            hint = ""
            if x.ndim == rank - 1:  # PyTorch takes an unbatched input; fastrnn wants the batch
                hint = "; for one sequence, add the batch axis: x[None]" if rank == 3 else \
                    "; for one stream, add the batch axis: x_t[None]"
            raise ValueError(f"x must have shape {shape}, got {x.shape}{hint}")
        if x.shape[-1] != self.input_size:
            raise ValueError(f"x has {x.shape[-1]} features, {self!r} expects "
                             f"input_size={self.input_size}")
        return np.ascontiguousarray(x, dtype=self.dtype)

    @staticmethod
    def _mask(mask, lengths, B, T):
        """uint8 (B, T) mask, or None when every step is valid."""
        if mask is not None and lengths is not None:
            raise ValueError("give either mask or lengths, not both")
        if lengths is not None:
            lengths = np.asarray(lengths)
            if lengths.dtype.kind not in "iu":
                raise TypeError(f"lengths must be integers, got dtype {lengths.dtype}")
            if lengths.shape != (B,):
                raise ValueError(f"lengths must have shape ({B},), got {lengths.shape}")
            if lengths.size and (lengths.min() < 0 or lengths.max() > T):
                raise ValueError(f"lengths must lie in [0, {T}], got min {lengths.min()}, "
                                 f"max {lengths.max()}")
            if lengths.size and lengths.min() == T:
                return None
            return (np.arange(T)[None, :] < lengths[:, None]).view(np.uint8)
        if mask is None:
            return None
        mask = np.asarray(mask)
        if mask.dtype.kind not in "biu":
            raise TypeError(f"mask must be bool or 0/1 integers, got dtype {mask.dtype}")
        if mask.shape != (B, T):
            raise ValueError(f"mask must have shape ({B}, {T}), got {mask.shape}")
        if mask.dtype.kind != "b":
            if mask.size and (mask.min() < 0 or mask.max() > 1):
                raise ValueError("integer mask values must be 0 or 1")
        m = np.ascontiguousarray(mask, dtype=np.uint8) if mask.dtype != np.uint8 else \
            np.ascontiguousarray(mask)
        if m.dtype.kind == "b":
            m = m.view(np.uint8)
        return None if m.all() else m

    def _state(self, state, B, what="initial_state"):
        """(h, c) for LSTM, h for GRU: contiguous (L*D, B, H) arrays in the layer dtype."""
        n = self._n_state
        shapes = [(self.num_layers * self.num_directions, B, self._h_size),
                  (self.num_layers * self.num_directions, B, self.hidden_size)]
        if state is None:
            return (None,) * n
        if self._cell == "gru" and not isinstance(state, (tuple, list)):
            state = (state,)
        if not isinstance(state, (tuple, list)) or len(state) != n:
            form = "(h0, c0)" if n == 2 else "h0 or (h0,)"
            raise ValueError(f"{what} for {self._cell.upper()} must be {form}")
        out = []
        for i, s in enumerate(state):
            s = _numeric(s, f"{what}[{i}]")
            shape = shapes[i]
            if s.shape != shape:
                raise ValueError(f"{what}[{i}] must have shape {shape} "
                                 f"(num_layers*num_directions, batch, hidden), got {s.shape}")
            out.append(np.ascontiguousarray(s, dtype=self.dtype))
        return tuple(out)

    def _workspace(self, nbytes):
        """Scratch memory for one kernel call: up to _WORKSPACE_CACHE_BYTES it is kept per
        thread and reused (the largest seen), so a stream of calls allocates nothing; larger
        ones live for the call only."""
        if nbytes > _WORKSPACE_CACHE_BYTES:
            return np.empty(nbytes, np.uint8)
        ws = getattr(self._local, "ws", None)
        if ws is None or ws.nbytes < nbytes:
            ws = None
            self._local.ws = None  # the old block goes before the new one comes
            ws = np.empty(nbytes, np.uint8)
            self._local.ws = ws
        return ws

    def _pack_state(self, h, c):
        return (h, c) if self._n_state == 2 else h

    # ---- running ----
    def _dropout_masks(self, B, I):
        """Multipliers (0 or 1/(1-p)) for one layer of a training call: input (D, B, I) and
        recurrent (D, B, H), or None where the rate is 0."""
        D, H = self.num_directions, self.hidden_size
        masks = []
        with self._rng_lock:
            for p, n in ((self.dropout, I), (self.recurrent_dropout, H)):
                if p == 0.0:
                    masks.append(None)
                    continue
                keep = self._dropout_rng.random((D, B, n)) >= p
                masks.append(keep.astype(self.dtype) / self.dtype.type(1.0 - p))
        return masks

    def __call__(self, x, *, mask=None, lengths=None, initial_state=None, training=None,
                 out=None):
        """Run the layer over a batch of sequences.

        Args:
            x: array-like (batch, time, input_size), converted to the layer's dtype.
            mask: (batch, time) bool or 0/1 ints, True = valid step, any pattern; a masked
                step carries the state, its output is 0 (masked_output="zero") or the
                previous output ("carry").
            lengths: (batch,) ints in [0, time], instead of mask: the first lengths[b]
                steps of row b are valid (0: the state passes through).
            initial_state: LSTM (h0, c0), GRU h0 or (h0,); h0 (num_layers *
                num_directions, batch, units), c0 (..., batch, hidden_size); None = zeros.
            training: True records the call for `backward()` and applies dropout; None
                uses the learning phase (fastrnn.learning_phase, default inference).
            out: inference only: a C-contiguous, writeable array of the layer's dtype
                and the output's shape to write the outputs into and return, instead of a
                new one (a loop of calls then allocates nothing large).

        Returns:
            (out, state): out (batch, time, num_directions * units), the last stacked
            layer's output at every step, in original time order also for backward
            directions; state like initial_state, ordered [layer0 forward, layer0
            backward, layer1 forward, ...]: each direction's state after the last step it
            processed. units = proj_size with a projection, else hidden_size.

        Raises:
            ValueError: wrong shapes (the message gives the expected one), both mask and
                lengths, lengths out of range, mask values other than 0/1; an `out` of
                the wrong shape, dtype or layout, sharing memory with x, or with training.
            TypeError: non-numeric x or state, a float mask or float lengths.

        Example:
            >>> import numpy as np, fastrnn
            >>> lstm = fastrnn.LSTM(8, 16, bidirectional=True)
            >>> out, (h, c) = lstm(np.ones((2, 5, 8)), lengths=[5, 3])
            >>> out.shape, h.shape
            ((2, 5, 32), (2, 2, 16))
            >>> buf = np.empty((2, 5, 32), np.float32)  # reused call after call
            >>> lstm(np.ones((2, 5, 8)), lengths=[5, 3], out=buf)[0] is buf
            True
        """
        training = resolve_training(training)
        if training and self.quantization:
            raise RuntimeError(self._inference_only_message())
        if (not training and mask is None and lengths is None and initial_state is None
                and out is None and type(x) is np.ndarray and x.dtype == self.dtype
                and x.ndim == 3 and x.shape[2] == self.input_size and x.flags.c_contiguous
                and x.size):
            return self._infer(x)  # nothing to convert: ~1.5 us less per call
        given = x
        x = self._as_input(x)
        if training and np.may_share_memory(x, given):
            x = x.copy()  # backward() reads it later: the caller may reuse their array meanwhile
        B, T = x.shape[0], x.shape[1]
        m = self._mask(mask, lengths, B, T)
        h0, *rest = self._state(initial_state, B)
        c0 = rest[0] if rest else None
        if out is not None:
            self._check_out(out, (x, h0, c0), training)
        if not training:
            return self._infer(x, m, h0, c0, out)
        # A training call records what backward() needs. The caller's state arrays may change
        # before backward(), so it keeps copies.
        h0, c0 = (None if a is None else a.copy() for a in (h0, c0))
        # Records of this thread's previous training call are reused (same sizes in a training
        # loop): no fresh pages to fault in at every step.
        old = getattr(self._local, "tape", None)
        self._local.tape = None
        out, state, self._local.tape = self._forward_with_tape(x, m, h0, c0, reuse=old)
        return out, state

    def _forward_with_tape(self, x, m, h0, c0, *, reuse=None):
        """A training-mode pass that hands its record back instead of keeping it per thread,
        so that several calls can await their backward at once (autograd frameworks).

        x: validated input (C-contiguous, layer dtype, (B, T, I)); m: uint8 (B, T) mask or
        None; h0, c0: initial states as `_state()` returns them, or None. The tape references
        x, m, h0 and c0 without copying: they must stay unchanged until its backward. reuse:
        an earlier tape that is no longer needed, whose records of the right size are
        recycled. Returns (out, state, tape), out and state as `__call__` returns them."""
        B, T = x.shape[0], x.shape[1]
        h_n, c_n = self._final_state(B, h0, c0)
        tape = []
        spare = [rec for *_, rec in reuse.layers] if reuse is not None else []
        D, H = self.num_directions, self._h_size
        if B == 0 or T == 0:
            return (np.zeros((B, T, D * H), self.dtype), self._pack_state(h_n, c_n),
                    _Tape(x, m, h0, c0, []))
        nt = get_num_threads()
        inp = x
        for layer, engine in enumerate(self._engines):
            s = slice(layer * D, (layer + 1) * D)
            y = np.empty((B, T, D * H), self.dtype)
            ws = self._workspace(engine.workspace_size(B, T, nt))
            in_mask, rec_mask = self._dropout_masks(B, inp.shape[2])
            need = engine.record_size(B, T, in_mask is not None)
            record = spare.pop(0) if spare and spare[0].nbytes == need else \
                np.empty(need, np.uint8)
            engine.forward(inp, m, None if h0 is None else h0[s],
                           None if c0 is None else c0[s], y, h_n[s],
                           None if c_n is None else c_n[s], ws, nt, in_mask, rec_mask, record)
            tape.append((inp, in_mask, rec_mask, record))
            inp = y
        return inp, self._pack_state(h_n, c_n), _Tape(x, m, h0, c0, tape)

    def _final_state(self, B, h0, c0):
        """The arrays the kernels write the final state into, starting from the initial one."""
        n = self.num_layers * self.num_directions
        h_n = np.zeros((n, B, self._h_size), self.dtype) if h0 is None else h0.copy()
        c_n = None
        if self._n_state == 2:
            c_n = np.zeros((n, B, self.hidden_size), self.dtype) if c0 is None else c0.copy()
        return h_n, c_n

    def _check_out(self, out, inputs, training):
        """ValueError unless `out` can take this call's outputs: inputs = (x, h0, c0), the
        arrays the kernels read while they write it."""
        x = inputs[0]
        B, T = x.shape[0], x.shape[1]
        shape = (B, T, self.num_directions * self._h_size)
        if training:
            raise ValueError("out= is for inference calls (training=False)")
        if not isinstance(out, np.ndarray) or out.shape != shape or out.dtype != self.dtype \
                or not out.flags.c_contiguous or not out.flags.writeable:
            got = (f"{out.shape} {out.dtype}" if isinstance(out, np.ndarray)
                   else type(out).__name__)
            raise ValueError(f"out must be a C-contiguous, writeable {self.dtype} array of "
                             f"shape {shape}, got {got}")
        if any(a is not None and np.may_share_memory(out, a) for a in inputs):
            raise ValueError("out must not share memory with x or the initial state")

    def _infer(self, x, m=None, h0=None, c0=None, out=None):
        """An inference call on a validated input (C-contiguous, layer dtype, (B, T, I)), mask
        and initial state, into `out` (checked) or a new array. It releases this thread's last
        training record."""
        B, T = x.shape[0], x.shape[1]
        D, H = self.num_directions, self._h_size
        h_n, c_n = self._final_state(B, h0, c0)
        self._local.tape = None
        if B == 0 or T == 0:
            if out is None:
                out = np.zeros((B, T, D * H), self.dtype)
            return out, self._pack_state(h_n, c_n)
        nt = get_num_threads()
        # one scratch block per call: the kernels' workspace, then (stacks) the outputs of
        # the inner layers, two alternating; only the last layer's output is new memory
        work = max(e.workspace_size(B, T, nt) for e in self._engines)
        work = -(-work // 64) * 64
        y_bytes = -(-B * T * D * H * self.dtype.itemsize // 64) * 64
        inner = min(2, len(self._engines) - 1)
        scratch = self._workspace(work + inner * y_bytes)
        ws = scratch[:work]
        inp = x
        for layer, engine in enumerate(self._engines):
            s = slice(layer * D, (layer + 1) * D)
            if layer == len(self._engines) - 1:
                y = np.empty((B, T, D * H), self.dtype) if out is None else out
            else:
                at = work + (layer % 2) * y_bytes
                y = scratch[at:at + y_bytes].view(self.dtype)[:B * T * D * H].reshape(
                    B, T, D * H)
            engine.forward(inp, m, None if h0 is None else h0[s],
                           None if c0 is None else c0[s], y, h_n[s],
                           None if c_n is None else c_n[s], ws, nt)
            inp = y
        return inp, self._pack_state(h_n, c_n)

    def backward(self, grad_out, grad_state=None):
        """Gradients of the most recent (training-mode) call of this layer in this thread.

        Exact for every mask pattern, both directions, stacks, initial states, cell variants
        and the dropout masks of that call; bitwise the same for any thread count.

        Args:
            grad_out: dL/d out, shaped like the call's `out`.
            grad_state: dL/d final state, shaped like the returned state (LSTM (dh, dc),
                GRU dh), or None for zeros.

        Returns:
            (grad_x, grad_initial_state): grad_x (batch, time, input_size) and dL/d
            initial_state in the state's form. Sets `self.grads`, a dict with the keys and
            shapes of state_dict() (empty when `trainable` is False).

        Raises:
            RuntimeError: no training-mode call to differentiate (none yet in this thread,
                or an inference call since).
            ValueError: wrong shapes.

        Example:
            >>> import numpy as np, fastrnn
            >>> lstm, x = fastrnn.LSTM(8, 16), np.ones((2, 5, 8))
            >>> out, state = lstm(x, training=True)
            >>> grad_x, (grad_h0, grad_c0) = lstm.backward(np.ones_like(out))
            >>> lstm.grads["layer0.forward.input.kernel"].shape
            (8, 16)
        """
        if self.quantization:
            raise RuntimeError(self._inference_only_message())
        tape = getattr(self._local, "tape", None)
        if tape is None:
            raise RuntimeError(f"{self!r}.backward() needs a training-mode call first (call the "
                               "layer with training=True or under learning_phase(1)); an "
                               "inference call records nothing")
        grad_x, grad_initial_state, self.grads = self._backward_with_tape(tape, grad_out,
                                                                         grad_state)
        return grad_x, grad_initial_state

    def _backward_with_tape(self, tape, grad_out, grad_state):
        """The backward pass of the call that recorded `tape` (see _forward_with_tape).

        The layer's weights must be those of that call. grad_out, grad_state: as backward()
        takes them. Returns (grad_x, grad_initial_state, grads): grads keyed like state_dict()
        (empty when `trainable` is False). The tape is only read, so a backward may be run
        again on it."""
        B, T = tape.x.shape[0], tape.x.shape[1]
        L, D, H, P = self.num_layers, self.num_directions, self.hidden_size, self._h_size
        g = _numeric(grad_out, "grad_out")
        if g.shape != (B, T, D * P):
            raise ValueError(f"grad_out must have the shape of the output {(B, T, D * P)}, "
                             f"got {g.shape}")
        g = np.ascontiguousarray(g, dtype=self.dtype)
        dh_n, *rest = self._state(grad_state, B, what="grad_state")
        dc_n = rest[0] if rest else None
        dh0 = np.zeros((L * D, B, P), self.dtype)
        dc0 = np.zeros((L * D, B, H), self.dtype) if self._n_state == 2 else None
        grads = {}
        if B == 0 or T == 0:
            if self.trainable:
                grads = {k: np.zeros_like(v) for k, v in self.state_dict().items()}
            return (np.zeros((B, T, self.input_size), self.dtype), self._pack_state(dh0, dc0),
                    grads)
        nt = get_num_threads()
        dy = g
        for layer in reversed(range(L)):
            engine = self._engines[layer]
            inp, in_mask, rec_mask, record = tape.layers[layer]
            s = slice(layer * D, (layer + 1) * D)
            dx = np.empty((B, T, inp.shape[2]), self.dtype)
            out = None
            if self.trainable:
                out = [tuple(_aligned_zeros(a.shape, self.dtype) if a is not None and
                             (part in ("kernel", "recurrent", "peephole", "projection")
                              or self.use_bias)
                             else None for part, a in w.items())
                       for w in self._w[layer]]
            ws = self._workspace(engine.backward_workspace_size(B, T, nt))
            engine.backward(inp, tape.mask, None if tape.h0 is None else tape.h0[s],
                            None if tape.c0 is None else tape.c0[s], in_mask, rec_mask, record,
                            dy, None if dh_n is None else dh_n[s],
                            None if dc_n is None else dc_n[s], dx, dh0[s],
                            None if dc0 is None else dc0[s], out, ws, nt)
            if out is not None:
                for d in range(D):
                    arrays = dict(zip(self._w[layer][d], out[d]))
                    for gi, gate in enumerate(self._gates):
                        lo = gi * self._stride
                        for part in self._gate_parts(gate):
                            if part == "peephole":
                                lo = _PEEPHOLE_GATES.index(gate) * self._stride
                            key = f"layer{layer}.{_DIRECTIONS[d]}.{gate}.{part}"
                            grads[key] = np.ascontiguousarray(
                                arrays[part][..., lo:lo + self.hidden_size])
                    if self._proj:
                        grads[f"layer{layer}.{_DIRECTIONS[d]}.projection"] = \
                            np.ascontiguousarray(arrays["projection"][:, :P])
            dy = dx
        return dy, self._pack_state(dh0, dc0), grads

    def step(self, x_t, state=None):
        """One time step for streaming, with the C streaming kernels (fr_step).

        Results are bitwise equal to a whole-sequence call over the same steps. Arrays
        already in the layer's dtype and shape take a fast path with no conversion.

        Args:
            x_t: (batch, input_size), one time step of every stream.
            state: what the previous step returned, or None for zeros: LSTM (h, c), GRU h,
                h (num_layers, batch, units), c (num_layers, batch, hidden_size).

        Returns:
            (y_t, state): y_t (batch, units), the last stacked layer's new h, and the new
            state.

        Raises:
            ValueError: a bidirectional or reverse=True layer, or wrong shapes.

        Example:
            >>> import numpy as np, fastrnn
            >>> stream, state = fastrnn.GRU(4, 8), None
            >>> for x_t in np.zeros((10, 1, 4)):
            ...     y_t, state = stream.step(x_t, state)
        """
        # Fast path: this thread's streaming model of the last batch size takes arrays already
        # in the layer's dtype and shape as they are (None: anything else, validated below).
        fast = getattr(self._local, "step_fast", None)
        if fast is not None:
            out = fast(x_t, state)
            if out is not None:
                return out
        if self.bidirectional or self.reverse:
            raise ValueError("step() needs a unidirectional, forward layer")
        if self.quantization:
            # The int8 kernels run in the whole-sequence path: a one-step call of it gives
            # the same bits as the step inside a longer sequence (quantization is per row).
            x = self._as_input(x_t, rank=2)
            out, state = self(x[:, None, :], initial_state=state, training=False)
            return out[:, 0], state
        x = self._as_input(x_t, rank=2)
        B = x.shape[0]
        h0, *rest = self._state(state, B, what="state")
        c0 = rest[0] if rest else None
        if B == 0:
            L, H, P = self.num_layers, self.hidden_size, self._h_size
            h_n = np.zeros((L, 0, P), self.dtype)
            c_n = np.zeros((L, 0, H), self.dtype) if self._n_state == 2 else None
            return np.zeros((0, P), self.dtype), self._pack_state(h_n, c_n)
        # The C streaming path (fr_step): bitwise the same results as a T = 1 forward call.
        stream = self._stream(B)
        self._local.step_fast = stream.step_packed
        y, h_n, c_n = stream.step_arrays(x, h0, c0)
        return y, self._pack_state(h_n, c_n)

    def _stream(self, batch):
        """This thread's C streaming model for `batch` streams (built once, weights shared)."""
        streams = getattr(self._local, "streams", None)
        if streams is None or len(streams) > 8:
            streams = self._local.streams = {}
        stream = streams.get(batch)
        if stream is None:
            stream = streams[batch] = _core.StreamModel(self._engines, batch)
        return stream

    # ---- reduced precision ----
    def quantize(self, scheme="int8"):
        """An inference-only copy of this layer with int8 or bf16 weights
        (docs/quantization.md).

        "int8": kernel and recurrent matrices become symmetric int8 with one float32 scale per
        output column (gate unit); at every step the layer input and h_{t-1} are quantized
        per batch row, multiplied in exact int32 arithmetic and dequantized before the gate
        epilogue. "bf16": the matrices, and at every step the input and h_{t-1}, are rounded
        to bfloat16; the products are summed in float32. Either way the gate epilogue, the
        state, the biases and the outputs stay float32. Same call, masks, lengths, initial
        states, stacks, directions and `step()` as this layer; the results do not depend on
        the thread count or the batch composition.

        Args:
            scheme: "int8" or "bf16".

        Returns:
            A new layer of the same class (float32, `quantization == scheme`, `trainable`
            False). int8: its `state_dict()` holds int8 "kernel" / "recurrent" arrays with
            "kernel_scale" / "recurrent_scale" (H,) per gate; bf16: float32 arrays holding the
            bfloat16 values. `gate()` views show the weights the layer runs on, read-only.
            This layer is unchanged.

        Raises:
            ValueError: an unknown scheme, or non-finite weights.
            NotImplementedError: an LSTM with a projection (proj_size).

        Example:
            >>> import numpy as np, fastrnn
            >>> lstm = fastrnn.LSTM(8, 16, seed=0)
            >>> q = lstm.quantize("int8")
            >>> x = np.ones((2, 5, 8), np.float32)
            >>> bool(np.abs(q(x)[0] - lstm(x)[0]).max() < 0.05)
            True
        """
        if scheme not in ("int8", "bf16"):
            raise ValueError(f"scheme must be 'int8' or 'bf16', got {scheme!r}")
        if self.quantization:
            raise ValueError(f"{self!r} is already quantized")
        if self._proj:
            raise NotImplementedError(f"{scheme} weights are not available yet for an LSTM with "
                                      "a projection (proj_size)")
        f32 = self if self.dtype == np.float32 else self._float32_copy()
        if scheme == "bf16":
            return f32._bf16_copy()
        cols = f32._num_gates * f32._stride
        parts = [[{part: _core.quantize_int8(d[part], cols) for part in ("kernel", "recurrent")}
                  for d in dirs] for dirs in f32._w]
        return f32._int8_copy(parts)

    def _bf16_copy(self):
        """A copy of this (float32) layer running on its weights rounded to bfloat16."""
        cols = self._num_gates * self._stride

        def pack(layer, direction, part, w):
            data = _core.pack_bf16(w, cols)
            return data, _bf16_matrix(data, cols, w.shape[0])
        return self._quantized_copy("bf16", pack)

    def _quantized_copy(self, scheme, pack):
        """A float32 copy of this layer running on quantized weights. pack(layer, direction,
        part, w) takes the padded canonical float matrix `w` of "kernel" / "recurrent" and
        returns (what the engine's set_int8 / set_bf16 takes for it, the float32 values the
        quantized weights stand for, shown by gate() views and float exports)."""
        q = self._float32_copy()
        cols = q._num_gates * q._stride
        q._qw = []
        for layer, engine in enumerate(q._engines):
            per_dir = []
            for direction, d in enumerate(q._w[layer]):
                pair = []
                for part in ("kernel", "recurrent"):
                    packed, shown = pack(layer, direction, part, d[part])
                    pair.append(packed)
                    d[part][:, :cols] = shown
                per_dir.append(tuple(pair))
            (engine.set_int8 if scheme == "int8" else engine.set_bf16)(per_dir)
            q._qw.append(per_dir)
        q._freeze_arrays()
        q.quantization = scheme
        q.trainable = False
        return q

    def _freeze_arrays(self):
        for dirs in self._w:
            for d in dirs:
                for a in d.values():
                    if a is not None:
                        a.flags.writeable = False

    def _float32_copy(self):
        """A float32 copy of this layer (new arrays and engines, same settings)."""
        float_state = {k: np.asarray(v, np.float32) for k, v in self._float_state_dict().items()}
        q = copy.copy(self)
        q._local = threading.local()
        q._rng_lock = threading.Lock()
        q.dtype = np.dtype(np.float32)
        q.grads = {}
        q._allocate()
        _Recurrent.load_state_dict(q, float_state)
        return q

    def _int8_copy(self, parts):
        """A copy of this layer running on int8 weights: parts[layer][direction][part] = (q,
        scale) for part "kernel" / "recurrent", q int8 (rows, num_gates * gate_stride) in the
        padded canonical column order, scale float32 (num_gates * gate_stride,). Biases and
        peepholes come from this layer, as float32."""
        cols = self._num_gates * self._stride

        def pack(layer, direction, part, w):
            qm, scale = parts[layer][direction][part]
            data, colsum = _core.pack_int8(qm, cols)
            return (data, scale, colsum), qm.astype(np.float32) * scale
        return self._quantized_copy("int8", pack)

    def _int8_parts(self, state):
        """The int8 parts (see _int8_copy) held in a quantized layer's state_dict, checked
        against this layer's geometry (ValueError naming the key otherwise)."""
        H, stride, cols = self.hidden_size, self._stride, self._num_gates * self._stride
        parts = []
        for layer in range(self.num_layers):
            dirs = []
            for d in range(self.num_directions):
                qd = {}
                for part in ("kernel", "recurrent"):
                    rows = self._w[layer][d][part].shape[0]
                    qm = np.zeros((rows, cols), np.int8)
                    scale = np.zeros(cols, np.float32)
                    for g, gate in enumerate(self._gates):
                        key = f"layer{layer}.{_DIRECTIONS[d]}.{gate}.{part}"
                        w, sc = state.get(key), state.get(key + "_scale")
                        if w is None or sc is None:
                            raise ValueError(f"int8 weights: missing {key!r} or {key}_scale")
                        w, sc = np.asarray(w), np.asarray(sc)
                        if w.dtype != np.int8 or w.shape != (rows, H):
                            raise ValueError(f"int8 weights: {key!r} must be int8 {(rows, H)}, "
                                             f"got {w.dtype} {w.shape}")
                        if sc.shape != (H,) or not np.all(np.isfinite(sc)) or np.any(sc < 0):
                            raise ValueError(f"int8 weights: {key}_scale must hold {H} finite "
                                             "scales >= 0")
                        qm[:, g * stride:g * stride + H] = w
                        scale[g * stride:g * stride + H] = sc
                    qd[part] = (qm, scale)
                dirs.append(qd)
            parts.append(dirs)
        return parts

    def _inference_only_message(self):
        return (f"{self!r} has {self.quantization} weights and runs inference only: train the "
                "float layer it was made from (quantize() again afterwards)")

    def _quantized_state_dict(self):
        out = {}
        H, stride = self.hidden_size, self._stride
        for layer in range(self.num_layers):
            for d in range(self.num_directions):
                qpair = self._qw[layer][d]
                for g, gate in enumerate(self._gates):
                    prefix = f"layer{layer}.{_DIRECTIONS[d]}.{gate}."
                    for part, (data, scale, _) in zip(("kernel", "recurrent"), qpair):
                        rows = self._w[layer][d][part].shape[0]
                        q = _int8_matrix(data, scale.size, rows)
                        out[prefix + part] = q[:, g * stride:g * stride + H].copy()
                        out[prefix + part + "_scale"] = scale[g * stride:g * stride + H].copy()
                    for part in self._gate_parts(gate)[2:]:
                        out[prefix + part] = self._view(layer, d, g, part).copy()
        return out

    def __repr__(self):
        extra = "".join([
            f", num_layers={self.num_layers}" if self.num_layers != 1 else "",
            ", bidirectional=True" if self.bidirectional else "",
            ", reverse=True" if self.reverse else "",
            ", use_bias=False" if not self.use_bias else "",
            f", reset_after={self.reset_after}" if self._cell == "gru" else "",
            f", masked_output={self.masked_output!r}" if self.masked_output != "zero" else "",
            self._variant_repr(),
            f", dtype={self.dtype.name!r}",
            f", name={self.name!r}" if self.name else "",
            f", quantization={self.quantization!r}" if self.quantization else "",
        ])
        return f"{type(self).__name__}({self.input_size}, {self.hidden_size}{extra})"

    def _variant_repr(self):
        out = []
        if "activations" in self.variant_features:
            acts = self.activations[0] if len(set(self.activations)) == 1 else self.activations
            out.append(f", activations={acts!r}")
        for what in ("peepholes", "clip", "cell_clip", "input_forget", "proj_size", "proj_clip"):
            value = getattr(self, what, None)
            if value:
                out.append(f", {what}={value!r}")
        return "".join(out)

    def variant_config(self):
        """The cell-variant constructor keywords of this layer (empty for the plain cell), in
        the normalised form: passing them back to the constructor rebuilds the same cell
        (docs/variants.md).

        Example:
            >>> import fastrnn
            >>> fastrnn.LSTM(8, 16, peepholes=True, clip=3.0).variant_config()
            {'clip': 3.0, 'peepholes': True}
        """
        features = self.variant_features
        out = {}
        if "activations" in features:
            out["activations"] = [list(a) for acts in self.activations for a in acts]
        for what in ("clip", "cell_clip", "peepholes", "input_forget", "proj_size", "proj_clip"):
            if what in features:
                out[what] = getattr(self, what)
        return out

    # ---- export (formats live in fastrnn.io) ----
    def to_torch(self):
        """A ready `torch.nn.LSTM` / `nn.GRU` (batch_first=True, the layer's dtype, eval mode)
        holding this layer's weights; its outputs match the layer's (zeros at padded steps
        of a packed sequence, as PyTorch gives them).

        Raises:
            ImportError: torch is not installed.
            ValueError: a property nn.LSTM / nn.GRU cannot express (named in the message).

        Example:
            >>> module = fastrnn.LSTM(8, 16).to_torch()              # doctest: +SKIP
            >>> module(torch.zeros(2, 5, 8))[0].shape                  # doctest: +SKIP
            torch.Size([2, 5, 16])
        """
        from .io.torch import to_torch_module
        return to_torch_module(self)

    def to_torch_state_dict(self):
        """The weights as an `nn.LSTM` / `nn.GRU` state_dict of torch tensors
        (`weight_ih_l0`, ...; the LSTM bias goes to `bias_ih`, `bias_hh` is zero).

        Example:
            >>> state = fastrnn.LSTM(8, 16).to_torch_state_dict()    # doctest: +SKIP
            >>> torch.nn.LSTM(8, 16).load_state_dict(state)             # doctest: +SKIP
        """
        from .io.torch import to_torch
        return to_torch(self)

    def to_keras(self, layer_index=None):
        """The weights as the list one Keras LSTM / GRU / Bidirectional layer's `set_weights`
        takes: [kernel, recurrent_kernel, bias] per direction (forward, then backward).

        Args:
            layer_index: which stacked layer (0 .. num_layers - 1); required when
                num_layers > 1, since a stack is one Keras layer per stacked layer
                (`fastrnn.io.keras.to_keras_model` builds the whole model).

        Raises:
            ValueError: a stack without `layer_index`, or a cell variant Keras has no
                weights for (peepholes, clips, coupled gates, projection).

        Example:
            >>> keras_layer.set_weights(fastrnn.LSTM(8, 16).to_keras())  # doctest: +SKIP
        """
        from .io.keras import to_keras
        return to_keras(self, layer_index)

    def to_onnx(self, path, **options):
        """Write an ONNX model (LSTM / GRU nodes) with the same weights and semantics.

        Args:
            path: the `.onnx` file to write.
            **options: `sequence_lens=True` adds an int32 (batch,) input for ragged batches.

        Example:
            >>> fastrnn.LSTM(8, 16).to_onnx("lstm.onnx", sequence_lens=True)  # doctest: +SKIP
        """
        from .io.onnx import save_onnx
        save_onnx(self, path, **options)

    def save(self, path, format=None, **options):
        """Write the layer (see `fastrnn.save`): the extension of `path` picks the format
        (.npz, .frnn, .pt, .safetensors, .onnx, .keras) unless `format` is given.

        Args:
            path: the file to write.
            format: "npz", "frnn", "torch", "safetensors", "onnx" or "keras"; None = from
                the extension.
            **options: passed to the writer (ONNX: sequence_lens=True).

        Raises:
            ValueError: an extension that names no format (pass format=), options the
                format does not take, or a property the format cannot hold (named).

        Example:
            >>> fastrnn.LSTM(8, 16).save("lstm.frnn")   # for the C runtime  # doctest: +SKIP
        """
        from .io import save
        save(self, path, format=format, **options)


class _Tape:
    """What a training-mode call keeps for backward(): the inputs and, per stacked layer, its
    input (the previous layer's output), dropout multipliers and the kernels' record."""

    __slots__ = ("x", "mask", "h0", "c0", "layers")

    def __init__(self, x, mask, h0, c0, layers):
        self.x, self.mask, self.h0, self.c0, self.layers = x, mask, h0, c0, layers


# The keywords every layer takes, spliced into the LSTM and GRU docstrings (help() shows them).
_COMMON_KEYWORDS = """\
    Common keywords (both cells):
        num_layers (int): stacked layers; layer k > 0 takes the previous layer's output.
        bidirectional (bool): a forward and a backward direction, outputs side by side.
        use_bias (bool): whether the layer has biases.
        reverse (bool): unidirectional layers only: process each row's valid steps last to
            first (ONNX direction="reverse", Keras go_backwards); outputs stay in time order.
        dropout, recurrent_dropout (float in [0, 1)): variational dropout in training mode.
        masked_output ("zero" | "carry"): the output of a masked step (PyTorch / Keras).
        dtype ("float32" | "float64"), init ("keras" | "torch"), seed, name.
        activation, recurrent_activation: Keras' names (tanh, sigmoid, hard_sigmoid, relu,
            linear, softsign, softplus, elu, leaky_relu, thresholded_relu, scaled_tanh,
            affine) or (name, alpha, beta) tuples; activations: ONNX's per-slot list instead;
            hard_sigmoid ("keras3" | "keras2"): what the bare name means.
        clip (float or None): ONNX clip, every gate pre-activation into [-clip, clip].
    Cell variants are described in docs/variants.md.
"""


class LSTM(_Recurrent):
    """Long short-term memory layer (gates input, forget, cell, output).

    Call: ``out, (h_n, c_n) = lstm(x, mask=None, lengths=None, initial_state=None,
    training=None)`` with x (batch, time, input_size); out is (batch, time,
    num_directions * units) with units = proj_size or hidden_size; h_n (num_layers *
    num_directions, batch, units), c_n (..., batch, hidden_size).

    Args:
        input_size (int): features of x.
        hidden_size (int): units of the cell state (and of h without a projection).
        peepholes (bool): ONNX P / TF1 use_peepholes; weights gate(name).peephole for the
            gates input, forget, output (zeros initially).
        cell_clip (float or None): TF1 cell_clip, c_t into [-cell_clip, cell_clip].
        input_forget (bool): ONNX input_forget, coupled gates f = 1 - i.
        proj_size (int): PyTorch proj_size / TF1 num_proj; h_t = (o * tanh(c_t)) @ projection
            with proj_size units (state_dict key "layer{k}.{direction}.projection", (H, P)).
        proj_clip (float or None): TF1 proj_clip, h_t into [-proj_clip, proj_clip].

    <common keywords>

    Example:
        >>> import numpy as np, fastrnn
        >>> lstm = fastrnn.LSTM(8, 32, proj_size=16, peepholes=True, seed=0)
        >>> out, (h, c) = lstm(np.zeros((2, 5, 8), np.float32))
        >>> out.shape, h.shape, c.shape
        ((2, 5, 16), (1, 2, 16), (1, 2, 32))
    """

    _cell = "lstm"
    _gates = ("input", "forget", "cell", "output")
    _n_state = 2

    def __init__(self, input_size, hidden_size, *, peepholes=False, cell_clip=None,
                 input_forget=False, proj_size=0, proj_clip=None, **kwargs):
        if isinstance(proj_size, bool) or not isinstance(proj_size, (int, np.integer)) \
                or proj_size < 0:
            raise ValueError(f"proj_size must be an int >= 0, got {proj_size!r}")
        self.proj_size = int(proj_size)
        self.proj_clip = _variants.positive_or_none(proj_clip, "proj_clip")
        if self.proj_clip is not None and not self.proj_size:
            raise ValueError("proj_clip needs a projection (proj_size > 0)")
        if self.proj_size and kwargs.get("recurrent_dropout", 0.0):
            raise ValueError("recurrent_dropout with a projection (proj_size) is not supported")
        self.peepholes = bool(peepholes)
        self.cell_clip = _variants.positive_or_none(cell_clip, "cell_clip")
        self.input_forget = bool(input_forget)
        super().__init__(input_size, hidden_size, **kwargs)


class GRU(_Recurrent):
    """Gated recurrent unit layer (gates update, reset, candidate).

    Call: ``out, h_n = gru(x, mask=None, lengths=None, initial_state=None, training=None)``
    with x (batch, time, input_size); out (batch, time, num_directions * hidden_size), h_n
    (num_layers * num_directions, batch, hidden_size).

    Args:
        input_size (int): features of x.
        hidden_size (int): units of h.
        reset_after (bool): True applies the reset gate after the recurrent matmul (PyTorch,
            cuDNN and Keras' default); False before it (Keras reset_after=False, TF1 GRUCell).

    <common keywords>

    Example:
        >>> import numpy as np, fastrnn
        >>> gru = fastrnn.GRU(8, 32, activation="relu", seed=0)
        >>> out, h = gru(np.zeros((2, 5, 8), np.float32))
        >>> out.shape, h.shape
        ((2, 5, 32), (1, 2, 32))
    """

    _cell = "gru"
    _gates = ("update", "reset", "candidate")
    _n_state = 1

    def __init__(self, input_size, hidden_size, *, reset_after=True, **kwargs):
        self.reset_after = bool(reset_after)
        super().__init__(input_size, hidden_size, **kwargs)


for _cls in (LSTM, GRU):
    _cls.__doc__ = _cls.__doc__.replace("    <common keywords>\n", _COMMON_KEYWORDS)
del _cls


def _int8_matrix(data, cols, rows):
    """The (rows, cols) int8 matrix held in the kernels' byte order (panels of 16 columns,
    rows in groups of four; fastrnn.h)."""
    k4 = (rows + 3) // 4
    panels = data.reshape(cols // 16, k4, 16, 4)          # [panel][k4][column][k % 4]
    return panels.transpose(1, 3, 0, 2).reshape(4 * k4, cols)[:rows]


def _dequantize(data, scale, rows):
    """float32 q * scale of an int8 matrix (what the int8 weights stand for)."""
    return _int8_matrix(data, scale.size, rows).astype(np.float32) * scale


def _bf16_matrix(data, cols, rows):
    """float32 (rows, cols) values of a bf16 matrix in the kernels' layout (panels of 16
    columns, rows in pairs; fastrnn.h)."""
    k2 = (rows + 1) // 2
    panels = data.reshape(cols // 16, k2, 16, 2)          # [panel][k2][column][k % 2]
    bits = panels.transpose(1, 3, 0, 2).reshape(2 * k2, cols)[:rows]
    return (bits.astype(np.uint32) << 16).view(np.float32)
