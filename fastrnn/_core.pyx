# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Bindings to the fastrnn C core: check buffers, release the GIL, call the kernels.

The Python layer (layers.py) owns every array and does the user-facing validation; this module
re-checks what the C core relies on (dtype, contiguity, sizes) so that no Python-level mistake
can make the core read or write out of bounds.
"""
cimport numpy as cnp
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport uintptr_t
from libc.string cimport memcpy, memset
from ._capi cimport *

import numpy as np

cnp.import_array()

__all__ = ["LayerEngine", "gate_stride", "recommended_ld", "workspace_size", "get_isa",
           "set_isa", "available_isas", "openmp_enabled", "openmp_max_threads", "openmp_version",
           "compiler", "c_version", "StreamModel", "frnn_validate", "contention",
           "reset_contention", "debug_delay", "debug_patience", "debug_delay_pending"]

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    static int fr_py_omp_max_threads(void) { return omp_get_max_threads(); }
    static int fr_py_openmp_version(void) { return _OPENMP; }
    #else
    static int fr_py_omp_max_threads(void) { return 1; }
    static int fr_py_openmp_version(void) { return 0; }
    #endif
    #if defined(__clang__)
    static const char *fr_py_compiler = "clang " __clang_version__;
    #elif defined(__GNUC__)
    static const char *fr_py_compiler = "gcc " __VERSION__;
    #elif defined(_MSC_VER)
    static const char *fr_py_compiler = "msvc";
    #else
    static const char *fr_py_compiler = "unknown";
    #endif
    """
    int fr_py_omp_max_threads() nogil
    int fr_py_openmp_version() nogil
    const char *fr_py_compiler

_ISA_BY_NAME = {"baseline": FR_ISA_BASELINE, "avx2": FR_ISA_AVX2, "avx512": FR_ISA_AVX512}


cdef fr_dtype _dtype_code(object dtype) except *:
    dtype = np.dtype(dtype)
    if dtype == np.float32:
        return FR_FLOAT32
    if dtype == np.float64:
        return FR_FLOAT64
    raise TypeError(f"unsupported dtype {dtype}: fastrnn computes in float32 or float64")


# The C core's activation kinds by name (docs/variants.md).
ACTIVATION_CODES = {
    "sigmoid": FR_ACT_SIGMOID, "tanh": FR_ACT_TANH, "relu": FR_ACT_RELU,
    "hard_sigmoid": FR_ACT_HARD_SIGMOID, "softsign": FR_ACT_SOFTSIGN,
    "softplus": FR_ACT_SOFTPLUS, "elu": FR_ACT_ELU, "leaky_relu": FR_ACT_LEAKY_RELU,
    "thresholded_relu": FR_ACT_THRESHOLDED_RELU, "scaled_tanh": FR_ACT_SCALED_TANH,
    "affine": FR_ACT_AFFINE,
}


def gate_stride(dtype, int hidden_size):
    """Column distance between gates in the padded weight layout."""
    return fr_gate_stride(_dtype_code(dtype), hidden_size)


def recommended_ld(str cell, dtype, int hidden_size):
    """Row stride of kernel / recurrent matrices in the padded weight layout."""
    return fr_recommended_ld(FR_LSTM if cell == "lstm" else FR_GRU, _dtype_code(dtype),
                             hidden_size)


def get_isa():
    """Name of the kernel variant in use ("baseline", "avx2" or "avx512")."""
    return fr_isa_name(fr_get_isa()).decode()


def set_isa(str name):
    """Select the kernel variant for the whole process (tests and benchmarks)."""
    if name not in _ISA_BY_NAME:
        raise ValueError(f"unknown kernel variant {name!r}; known: {sorted(_ISA_BY_NAME)}")
    if fr_set_isa(_ISA_BY_NAME[name]) != FR_OK:
        raise ValueError(f"kernel variant {name!r} is not supported by this CPU or build")


def available_isas():
    """Kernel variants this CPU and build can run."""
    return [n for n, code in _ISA_BY_NAME.items() if fr_isa_available(code)]


def openmp_enabled():
    return bool(fr_openmp_enabled())


def contention():
    """The C core's busy-core counters (fastrnn.h, fr_get_contention) as a dict."""
    cdef fr_contention c
    fr_get_contention(&c)
    return {"calls": c.calls, "contended": c.contended, "capped": c.capped,
            "cap_threads": c.cap_threads, "cap_calls": c.cap_calls,
            "last_threads": c.last_threads, "last_taken": c.last_taken}


def reset_contention():
    fr_reset_contention()


def debug_delay(int thread, int unit, int usec, bint busy=False):
    """Testing only: thread `thread` of the next multi-threaded forward call sleeps `usec` us
    at unit `unit` (0: the prelude, then the steps), as if its core were taken."""
    fr_debug_delay(thread, unit, usec, busy)


def debug_delay_pending():
    """Testing only: whether the delay armed by debug_delay has not happened yet."""
    return bool(fr_debug_delay_pending())


def debug_patience(int usec):
    """Testing only: the least time (us) a thread may fall behind before its work is taken
    over; 0 restores the default (250 us)."""
    fr_debug_patience(usec)


def openmp_max_threads():
    return fr_py_omp_max_threads()


def openmp_version():
    """The _OPENMP date macro (e.g. 201511 for OpenMP 4.5), 0 without OpenMP."""
    return fr_py_openmp_version()


def compiler():
    return fr_py_compiler.decode()


def c_version():
    return FR_VERSION.decode()


cdef inline void* _data(cnp.ndarray a, int typenum, Py_ssize_t size, str what) except NULL:
    if cnp.PyArray_TYPE(a) != typenum:
        raise TypeError(f"{what}: expected dtype {np.dtype(cnp.PyArray_DescrFromType(typenum))}, "
                        f"got {a.dtype}")
    if not cnp.PyArray_IS_C_CONTIGUOUS(a) or not cnp.PyArray_ISALIGNED(a):
        raise ValueError(f"{what}: array must be C-contiguous and aligned")
    if not cnp.PyArray_ISNOTSWAPPED(a):
        raise ValueError(f"{what}: array must be in native byte order")
    if cnp.PyArray_SIZE(a) != size:
        raise ValueError(f"{what}: expected {size} elements, got {cnp.PyArray_SIZE(a)}")
    if size == 0:
        return <void*>1  # never dereferenced (sizes are >= 1 where it matters)
    return cnp.PyArray_DATA(a)


cdef cnp.ndarray _aligned_bytes(size_t n):
    """n bytes (uint8) starting on a 64-byte boundary (a view into a slightly larger array)."""
    cdef cnp.ndarray raw = np.empty(n + 64, np.uint8)
    cdef size_t off = (64 - (<size_t>cnp.PyArray_DATA(raw)) % 64) % 64
    return raw[off:off + n]


cdef inline void* _bytes(cnp.ndarray a, size_t need, str what) except NULL:
    """A caller-provided uint8 buffer (workspace, training record) of at least `need` bytes."""
    if a.dtype != np.uint8 or not a.flags.c_contiguous or <size_t>a.nbytes < need or need == 0:
        raise ValueError(f"{what} too small: {a.nbytes} bytes, need {need}")
    return cnp.PyArray_DATA(a)


cdef class LayerEngine:
    """One layer (all directions) bound to weight arrays in the padded canonical layout.

    The engine keeps references to the weight arrays, so writes into them (through
    `Layer.gate(...)` views) are seen by the next call without any repacking.
    """
    cdef fr_layer_desc desc
    cdef fr_weights w[2]
    cdef int typenum
    cdef int G, Hp
    cdef int P  # units of h: proj_size, or hidden_size without a projection
    cdef object weights  # keeps the arrays alive
    cdef fr_qmatrix q[2][2]  # int8 weights per direction: kernel, recurrent
    cdef object qweights  # keeps the int8 arrays alive
    cdef object packed  # keeps the frozen recurrent copies alive

    def __init__(self, str cell, dtype, bint reset_after, int input_size, int hidden_size,
                 int num_directions, bint reverse, str masked_output, list weights,
                 dict variant=None):
        """weights: per direction (kernel, recurrent, bias, recurrent_bias[, peephole[,
        projection]]). variant (docs/variants.md; None = the plain cell): "act" per direction
        three (kind code, alpha, beta) triples (slots f, g, h), "clip", "cell_clip",
        "proj_clip" (0 = none), "peepholes", "input_forget", "proj_size" (0 = none)."""
        memset(&self.desc, 0, sizeof(self.desc))
        memset(self.w, 0, sizeof(self.w))
        self.desc.cell = FR_LSTM if cell == "lstm" else FR_GRU
        self.desc.dtype = _dtype_code(dtype)
        self.desc.reset_after = reset_after
        self.desc.input_size = input_size
        self.desc.hidden_size = hidden_size
        self.desc.num_directions = num_directions
        self.desc.reverse = reverse
        self.desc.masked_output = FR_MASKED_CARRY if masked_output == "carry" else FR_MASKED_ZERO
        self.typenum = cnp.NPY_FLOAT32 if self.desc.dtype == FR_FLOAT32 else cnp.NPY_FLOAT64
        self.G = fr_num_gates(self.desc.cell)
        self.Hp = fr_gate_stride(self.desc.dtype, hidden_size)
        if len(weights) != num_directions:
            raise ValueError("one weight tuple per direction is required")
        if variant is not None:
            for d in range(num_directions):
                for k in range(3):
                    kind, alpha, beta = variant["act"][d][k]
                    self.desc.act[d][k].kind = kind
                    self.desc.act[d][k].alpha = alpha
                    self.desc.act[d][k].beta = beta
            self.desc.clip = variant.get("clip", 0.0)
            self.desc.cell_clip = variant.get("cell_clip", 0.0)
            self.desc.peepholes = variant.get("peepholes", False)
            self.desc.input_forget = variant.get("input_forget", False)
            self.desc.proj_size = variant.get("proj_size", 0)
            self.desc.proj_clip = variant.get("proj_clip", 0.0)
        self.P = self.desc.proj_size if self.desc.proj_size > 0 else hidden_size
        cdef cnp.ndarray wx, wh, b, rb, pp, wp
        cdef Py_ssize_t ld
        for d in range(num_directions):
            wx, wh, b, rb = weights[d][:4]
            pp = weights[d][4] if len(weights[d]) > 4 else None
            wp = weights[d][5] if len(weights[d]) > 5 else None
            if self.desc.peepholes:
                self.w[d].peephole = _data(pp, self.typenum, 3 * self.Hp, "peephole")
            if self.desc.proj_size > 0:
                self.w[d].proj_ld = wp.shape[1]
                if self.w[d].proj_ld < fr_gate_stride(self.desc.dtype, self.P):
                    raise ValueError("projection row stride too small")
                self.w[d].projection = _data(wp, self.typenum, hidden_size * wp.shape[1],
                                             "projection")
            ld = wx.shape[1]
            if ld < self.G * self.Hp or wh.shape[1] != ld:
                raise ValueError("weight row stride too small")
            self.w[d].kernel = _data(wx, self.typenum, input_size * ld, "kernel")
            self.w[d].recurrent = _data(wh, self.typenum, self.P * ld, "recurrent")
            self.w[d].bias = _data(b, self.typenum, self.G * self.Hp, "bias")
            self.w[d].recurrent_bias = (
                _data(rb, self.typenum, self.G * self.Hp, "recurrent_bias")
                if rb is not None else NULL)
            self.w[d].ld = ld
        self.weights = weights

    def workspace_size(self, int batch, int time, int num_threads):
        return fr_workspace_size(&self.desc, batch, time, num_threads)

    def freeze_recurrent(self):
        """Pack every direction's recurrent matrix once (fr_pack_recurrent) and run on those
        copies from now on: calls skip their per-call packing. Call it only on an engine no
        other thread uses yet (the layer builds a new engine to freeze). Returns the number
        of directions packed (0 where packing does not apply: projection, int8 / bf16)."""
        cdef size_t n = fr_packed_recurrent_size(&self.desc)
        if n == 0:
            return 0
        cdef cnp.ndarray buf
        cdef int rc
        packed = []
        for d in range(self.desc.num_directions):
            buf = _aligned_bytes(n)
            rc = fr_pack_recurrent(&self.desc, &self.w[d], cnp.PyArray_DATA(buf))
            if rc != FR_OK:
                raise RuntimeError(f"fastrnn core could not pack the weights (status {rc})")
            buf.flags.writeable = False
            packed.append(buf)
        for d in range(self.desc.num_directions):
            self.w[d].recurrent_packed = cnp.PyArray_DATA(<cnp.ndarray>packed[d])
        self.desc.packed_recurrent = 1
        self.packed = packed
        return len(packed)

    def set_int8(self, list qweights):
        """Run on int8 weights from now on (inference only): per direction ((data, scale,
        colsum) of the kernel, (data, scale, colsum) of the recurrent matrix): the scales of
        quantize_int8() and the layout of pack_int8() for this layer's padded canonical
        matrices."""
        self._set_quantized(FR_WEIGHTS_INT8, qweights)

    def set_bf16(self, list qweights):
        """Run on bf16 weights from now on (inference only): per direction (data of the
        kernel, data of the recurrent matrix) as pack_bf16() returns them."""
        self._set_quantized(FR_WEIGHTS_BF16, [tuple((d,) for d in pair) for pair in qweights])

    def _set_quantized(self, int fmt, list qweights):
        if self.desc.dtype != FR_FLOAT32 or self.desc.proj_size > 0:
            raise ValueError("int8 / bf16 weights need a float32 layer without a projection")
        if len(qweights) != self.desc.num_directions:
            raise ValueError("one pair of quantized matrices per direction is required")
        cdef int cols = self.G * self.Hp
        cdef int rows
        cdef cnp.ndarray data, scale, colsum
        for d in range(self.desc.num_directions):
            for k in range(2):
                rows = self.desc.input_size if k == 0 else self.desc.hidden_size
                self.q[d][k].rows = rows
                self.q[d][k].cols = cols
                if fmt == FR_WEIGHTS_INT8:
                    data, scale, colsum = qweights[d][k]
                    self.q[d][k].data = <const signed char*>_data(
                        data, cnp.NPY_INT8, fr_qmatrix_data_size(rows, cols), "int8 weights")
                    self.q[d][k].scale = <const float*>_data(scale, cnp.NPY_FLOAT32, cols,
                                                             "int8 scales")
                    self.q[d][k].colsum = <const int*>_data(colsum, cnp.NPY_INT32, cols,
                                                            "int8 column sums")
                else:
                    data = qweights[d][k][0]
                    self.q[d][k].data = <const signed char*>_data(
                        data, cnp.NPY_UINT16, fr_bf16_data_size(rows, cols), "bf16 weights")
                    self.q[d][k].scale = NULL
                    self.q[d][k].colsum = NULL
            self.w[d].qkernel = &self.q[d][0]
            self.w[d].qrecurrent = &self.q[d][1]
        self.desc.weight_format = fmt
        self.qweights = qweights

    def record_size(self, int batch, int time, bint input_dropout):
        """Bytes of the training record of one call (see fr_record_size)."""
        return fr_record_size(&self.desc, batch, time, input_dropout)

    def backward_workspace_size(self, int batch, int time, int num_threads):
        return fr_backward_workspace_size(&self.desc, batch, time, num_threads)

    cdef int _io(self, fr_io *io, cnp.ndarray x, object mask, object h0, object c0) except -1:
        cdef int B = x.shape[0] if x.ndim == 3 else 0
        cdef int T = x.shape[1] if x.ndim == 3 else 0
        cdef Py_ssize_t H = self.desc.hidden_size, D = self.desc.num_directions
        if B < 1 or T < 1:
            raise ValueError("x must have shape (batch >= 1, time >= 1, input_size)")
        io.batch = B
        io.time = T
        io.x = _data(x, self.typenum, B * T * self.desc.input_size, "x")
        io.mask = <const unsigned char*>(
            _data(mask, cnp.NPY_UINT8, B * T, "mask") if mask is not None else NULL)
        io.h0 = _data(h0, self.typenum, D * B * self.P, "h0") if h0 is not None else NULL
        io.c0 = _data(c0, self.typenum, D * B * H, "c0") if c0 is not None else NULL
        io.y = NULL
        io.h_n = NULL
        io.c_n = NULL
        return 0

    cdef int _train(self, fr_train *tr, int B, int T, object in_mask, object rec_mask,
                    cnp.ndarray record) except -1:
        cdef Py_ssize_t H = self.desc.hidden_size, D = self.desc.num_directions
        cdef Py_ssize_t I = self.desc.input_size
        tr.in_mask = (_data(in_mask, self.typenum, D * B * I, "in_mask")
                      if in_mask is not None else NULL)
        tr.rec_mask = (_data(rec_mask, self.typenum, D * B * H, "rec_mask")
                       if rec_mask is not None else NULL)
        tr.record = _bytes(record, fr_record_size(&self.desc, B, T, in_mask is not None),
                           "training record")
        tr.record_size = record.nbytes
        return 0

    def forward(self, cnp.ndarray x, object mask, object h0, object c0, cnp.ndarray y,
                object h_n, object c_n, cnp.ndarray workspace, int num_threads,
                object in_mask=None, object rec_mask=None, object record=None):
        """Run the layer. x (B, T, I); mask (B, T) uint8 or None; h0, c0, h_n, c_n
        (D, B, H) or None; y (B, T, D*H); workspace uint8 of workspace_size() bytes.
        Training: record (uint8, record_size() bytes) receives what backward() needs;
        in_mask (D, B, I) and rec_mask (D, B, H) hold dropout multipliers or are None."""
        cdef fr_io io
        cdef fr_train tr
        self._io(&io, x, mask, h0, c0)
        cdef int B = io.batch, T = io.time
        cdef Py_ssize_t H = self.desc.hidden_size, D = self.desc.num_directions
        io.y = _data(y, self.typenum, B * T * D * self.P, "y")
        io.h_n = _data(h_n, self.typenum, D * B * self.P, "h_n") if h_n is not None else NULL
        io.c_n = _data(c_n, self.typenum, D * B * H, "c_n") if c_n is not None else NULL
        cdef bint training = record is not None
        if training:
            self._train(&tr, B, T, in_mask, rec_mask, record)
        elif rec_mask is not None or in_mask is not None:
            raise ValueError("dropout masks need a training record")
        cdef void *ws = _bytes(workspace, fr_workspace_size(&self.desc, B, T, num_threads),
                               "workspace")
        cdef size_t ws_size = workspace.nbytes
        cdef int rc
        with nogil:
            if training:
                rc = fr_layer_forward_train(&self.desc, self.w, &io, &tr, ws, ws_size,
                                            num_threads)
            else:
                rc = fr_layer_forward(&self.desc, self.w, &io, ws, ws_size, num_threads)
        if rc != FR_OK:
            raise RuntimeError(f"fastrnn core rejected the call: {fr_strerror(rc).decode()} "
                               f"(status {rc})")

    def backward(self, cnp.ndarray x, object mask, object h0, object c0, object in_mask,
                 object rec_mask, cnp.ndarray record, cnp.ndarray dy, object dh_n, object dc_n, cnp.ndarray dx,
                 object dh0, object dc0, object grads, cnp.ndarray workspace, int num_threads):
        """Gradients of the recorded call. dy (B, T, D*H); dh_n, dc_n, dh0, dc0 (D, B, H) or
        None; dx (B, T, I) out; grads: None or one (kernel, recurrent, bias, recurrent_bias)
        tuple of output arrays per direction, shaped like the weights (bias entries may be
        None)."""
        cdef fr_io io
        cdef fr_train tr
        cdef fr_grad_io g
        cdef fr_grads gw[2]
        self._io(&io, x, mask, h0, c0)
        cdef int B = io.batch, T = io.time
        cdef Py_ssize_t H = self.desc.hidden_size, D = self.desc.num_directions
        cdef Py_ssize_t I = self.desc.input_size
        self._train(&tr, B, T, in_mask, rec_mask, record)
        g.dy = _data(dy, self.typenum, B * T * D * self.P, "dy")
        g.dh_n = _data(dh_n, self.typenum, D * B * self.P, "dh_n") if dh_n is not None else NULL
        g.dc_n = _data(dc_n, self.typenum, D * B * H, "dc_n") if dc_n is not None else NULL
        g.dx = _data(dx, self.typenum, B * T * I, "dx")
        g.dh0 = _data(dh0, self.typenum, D * B * self.P, "dh0") if dh0 is not None else NULL
        g.dc0 = _data(dc0, self.typenum, D * B * H, "dc0") if dc0 is not None else NULL
        cdef cnp.ndarray wx, wh, b, rb, pp, wp
        cdef Py_ssize_t ld
        cdef fr_grads *gp = NULL
        memset(gw, 0, sizeof(gw))
        if grads is not None:
            if len(grads) != D:
                raise ValueError("one gradient tuple per direction is required")
            for d in range(D):
                wx, wh, b, rb = grads[d][:4]
                pp = grads[d][4] if len(grads[d]) > 4 else None
                gw[d].peephole = (_data(pp, self.typenum, 3 * self.Hp, "grad peephole")
                                  if self.desc.peepholes and pp is not None else NULL)
                wp = grads[d][5] if len(grads[d]) > 5 else None
                if self.desc.proj_size > 0 and wp is not None:
                    gw[d].proj_ld = wp.shape[1]
                    gw[d].projection = _data(wp, self.typenum, H * wp.shape[1],
                                             "grad projection")
                ld = self.w[d].ld
                if wx.shape[1] != ld or wh.shape[1] != ld:
                    raise ValueError("gradient arrays must have the weights' row stride")
                gw[d].kernel = _data(wx, self.typenum, I * ld, "grad kernel")
                gw[d].recurrent = _data(wh, self.typenum, self.P * ld, "grad recurrent")
                gw[d].bias = _data(b, self.typenum, self.G * self.Hp, "grad bias") \
                    if b is not None else NULL
                gw[d].recurrent_bias = _data(rb, self.typenum, self.G * self.Hp,
                                             "grad recurrent_bias") if rb is not None else NULL
                gw[d].ld = ld
            gp = gw
        cdef void *ws = _bytes(
            workspace, fr_backward_workspace_size(&self.desc, B, T, num_threads), "workspace")
        cdef size_t ws_size = workspace.nbytes
        cdef int rc
        with nogil:
            rc = fr_layer_backward(&self.desc, self.w, &io, &tr, &g, gp, ws, ws_size,
                                   num_threads)
        if rc != FR_OK:
            raise RuntimeError(f"fastrnn core rejected the call (status {rc})")


cdef extern from "activations.h" nogil:
    float fr_tanh_f32(float x)
    float fr_sigmoid_f32(float x)
    ctypedef struct fr_f32x8:
        pass
    fr_f32x8 fr_vtanh_f32x8(fr_f32x8 x)
    fr_f32x8 fr_vsigmoid_f32x8(fr_f32x8 x)


def eval_activation_f32(str name, x, bint vector=False):
    """The float32 activation the kernels use, applied elementwise (for accuracy tests):
    the scalar form, or with vector=True the eight-wide form of the kernels' epilogues."""
    if name not in ("tanh", "sigmoid"):
        raise ValueError(f"unknown activation {name!r}")
    cdef cnp.ndarray[cnp.float32_t, ndim=1] a = np.ascontiguousarray(x, np.float32).ravel()
    cdef Py_ssize_t i, n = a.shape[0], n8 = (n + 7) // 8 * 8
    cdef cnp.ndarray[cnp.float32_t, ndim=1] buf = np.zeros(n8, np.float32)
    cdef cnp.ndarray[cnp.float32_t, ndim=1] out = np.empty(n8, np.float32)
    cdef bint tanh = name == "tanh"
    cdef fr_f32x8 v
    buf[:n] = a
    if vector:
        for i in range(0, n8, 8):
            memcpy(&v, &buf[i], sizeof(v))
            v = fr_vtanh_f32x8(v) if tanh else fr_vsigmoid_f32x8(v)
            memcpy(&out[i], &v, sizeof(v))
    else:
        for i in range(n):
            out[i] = fr_tanh_f32(buf[i]) if tanh else fr_sigmoid_f32(buf[i])
    return out[:n]


def quantize_int8(cnp.ndarray w, int cols):
    """int8 form of a float32 matrix w (rows, ld >= cols), columns [0, cols): (q int8 (rows,
    cols), scale float32 (cols,)); fastrnn.h, "Reduced precision", gives the rule."""
    if w.ndim != 2 or w.dtype != np.float32 or not w.flags.c_contiguous:
        raise ValueError("w must be a C-contiguous float32 matrix")
    cdef int rows = w.shape[0]
    if rows < 1 or cols < 1 or w.shape[1] < cols:
        raise ValueError(f"cannot quantize a ({w.shape[0]}, {w.shape[1]}) matrix to {cols} columns")
    cdef cnp.ndarray q = np.empty((rows, cols), np.int8)
    cdef cnp.ndarray scale = np.empty(cols, np.float32)
    cdef int rc = fr_quantize_int8(<const float*>cnp.PyArray_DATA(w), rows, cols, w.shape[1],
                                   <signed char*>cnp.PyArray_DATA(q),
                                   <float*>cnp.PyArray_DATA(scale))
    if rc != FR_OK:
        raise ValueError("weights to quantize must be finite")
    return q, scale


def pack_int8(cnp.ndarray q, int cols):
    """The kernels' layout of an int8 matrix q (rows, ld >= cols), cols a multiple of 16,
    values in [-127, 127]: (data int8, colsum int32 (cols,))."""
    if q.ndim != 2 or q.dtype != np.int8 or not q.flags.c_contiguous:
        raise ValueError("q must be a C-contiguous int8 matrix")
    cdef int rows = q.shape[0]
    if rows < 1 or rows > 65536 or cols < 1 or cols % 16 or q.shape[1] < cols:
        raise ValueError(f"cannot pack a ({q.shape[0]}, {q.shape[1]}) int8 matrix to {cols} "
                         "columns (rows <= 65536, columns a multiple of 16)")
    cdef cnp.ndarray data = np.empty(fr_qmatrix_data_size(rows, cols), np.int8)
    cdef cnp.ndarray colsum = np.empty(cols, np.int32)
    cdef int rc = fr_pack_int8(<const signed char*>cnp.PyArray_DATA(q), rows, cols, q.shape[1],
                               <signed char*>cnp.PyArray_DATA(data),
                               <int*>cnp.PyArray_DATA(colsum))
    if rc != FR_OK:
        raise ValueError("int8 weights must lie in [-127, 127] (symmetric quantization)")
    return data, colsum


def pack_bf16(cnp.ndarray w, int cols):
    """The kernels' bf16 layout of a float32 matrix w (rows, ld >= cols), cols a multiple of
    16: uint16 bfloat16 bits (fastrnn.h, "bf16 weights")."""
    if w.ndim != 2 or w.dtype != np.float32 or not w.flags.c_contiguous:
        raise ValueError("w must be a C-contiguous float32 matrix")
    cdef int rows = w.shape[0]
    if rows < 1 or cols < 1 or cols % 16 or w.shape[1] < cols:
        raise ValueError(f"cannot pack a ({w.shape[0]}, {w.shape[1]}) matrix to {cols} columns")
    cdef cnp.ndarray data = np.empty(fr_bf16_data_size(rows, cols), np.uint16)
    cdef int rc = fr_pack_bf16(<const float*>cnp.PyArray_DATA(w), rows, cols, w.shape[1],
                               <unsigned short*>cnp.PyArray_DATA(data))
    if rc != FR_OK:
        raise ValueError("weights to round to bf16 must be finite")
    return data


def bf16_kernel_name():
    """The bf16 kernel variant the next call uses (follows the selected ISA)."""
    return fr_bf16_kernel_name().decode()


def int8_kernel_name():
    """The int8 kernel variant the next call uses (follows the selected ISA)."""
    return fr_int8_kernel_name().decode()


def quantize_rows_u8(str kernel, cnp.ndarray x):
    """Test hook: the activation quantizer of one int8 variant (see qgemm_test) on float32
    rows x (M, K): (a + 128 as uint8 (M, 4 * ceil(K / 4)), scales (M,)), or None if the
    variant is not available here."""
    cdef const fr_qkernels *qk = fr_qkernels_by_name(kernel.encode())
    if qk == NULL:
        return None
    if x.ndim != 2 or x.dtype != np.float32 or not x.flags.c_contiguous:
        raise ValueError("x must be a C-contiguous float32 matrix")
    cdef int M = x.shape[0], K = x.shape[1]
    cdef Py_ssize_t lda = (K + qk.group - 1) // qk.group * qk.group * qk.elem
    cdef cnp.ndarray a = np.empty((M, lda), np.uint8)
    cdef cnp.ndarray s = np.empty(M, np.float32)
    qk.quantize(M, K, <const float*>cnp.PyArray_DATA(x), K,
                <unsigned char*>cnp.PyArray_DATA(a), lda, <float*>cnp.PyArray_DATA(s))
    return (a if qk.elem == 1 else a.view(np.uint16) if qk.elem == 2 else a.view(np.float32)), s


def qgemm_test(str kernel, cnp.ndarray a, cnp.ndarray s, tuple qmatrix, int rows, int c0,
               int n, object bias=None):
    """Test hook: one int8 micro-kernel variant by name ("int8-baseline", "int8-avx2",
    "int8-avx512vnni") on quantized rows a (M, 4 * ceil(rows / 4)) uint8 with scales s (M,),
    the int8 matrix (data, scale, colsum) of `rows` rows, columns [c0, c0 + n): out (M, n).
    bf16 variants ("bf16-baseline", "bf16-avx2", "bf16-avx512"): a (M, rows rounded to even)
    uint16, s None, qmatrix (data, None, None). None if the variant is not available here."""
    cdef const fr_qkernels *qk = fr_qkernels_by_name(kernel.encode())
    if qk == NULL:
        return None
    cdef fr_qgemm_fn fn = qk.gemm
    cdef cnp.ndarray data, scale, colsum
    data, scale, colsum = qmatrix
    cdef fr_qmatrix q
    q.rows = rows
    q.cols = scale.shape[0] if qk.elem == 1 else data.shape[0] // ((rows + 1) // 2 * 2)
    cdef int M = a.shape[0]
    cdef Py_ssize_t lda = (rows + qk.group - 1) // qk.group * qk.group
    if n % 16 or c0 < 0 or c0 + n > q.cols or a.ndim != 2 or a.shape[1] != lda:
        raise ValueError("bad qgemm_test arguments")
    cdef const unsigned char *pa
    cdef const float *ps = NULL
    if qk.elem == 1:
        q.data = <const signed char*>_data(data, cnp.NPY_INT8, fr_qmatrix_data_size(rows, q.cols), "data")
        q.scale = <const float*>_data(scale, cnp.NPY_FLOAT32, q.cols, "scale")
        q.colsum = <const int*>_data(colsum, cnp.NPY_INT32, q.cols, "colsum")
        pa = <const unsigned char*>_data(a, cnp.NPY_UINT8, M * lda, "a")
        ps = <const float*>_data(s, cnp.NPY_FLOAT32, M, "s")
    else:
        q.data = <const signed char*>_data(data, cnp.NPY_UINT16, fr_bf16_data_size(rows, q.cols), "data")
        q.scale = NULL
        q.colsum = NULL
        pa = <const unsigned char*>_data(a, cnp.NPY_UINT16 if qk.elem == 2 else cnp.NPY_FLOAT32,
                                         M * lda, "a")
    cdef const float *pb = <const float*>_data(bias, cnp.NPY_FLOAT32, q.cols, "bias") \
        if bias is not None else NULL
    cdef cnp.ndarray out = np.empty((M, n), np.float32)
    fn(M, n, pa, lda * qk.elem, ps, &q, c0, pb, <float*>cnp.PyArray_DATA(out), n)
    return out


def fma_peak_gflops(int num_threads, double seconds=0.2):
    """The machine's FP32 fused multiply-add peak in GFLOP/s, measured now with `num_threads`
    threads for about `seconds` seconds (register-only loop, widest ISA the CPU has)."""
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    if not 0.0 < seconds <= 60.0:
        raise ValueError(f"seconds must be in (0, 60], got {seconds}")
    cdef double gflops
    with nogil:
        gflops = fr_fma_peak_gflops(num_threads, seconds)
    if not gflops > 0.0:
        raise RuntimeError("the FMA peak loop returned an implausible result")
    return gflops


# ---- Models and streaming ----

def frnn_validate(data):
    """Run the C .frnn loader on a bytes-like image: (status, message); status 0 = loads."""
    cdef const unsigned char[::1] buf = memoryview(data).cast("B")
    cdef fr_model *model = NULL
    cdef char err[256]
    cdef int rc
    err[0] = 0
    cdef size_t n = buf.shape[0]
    # An empty image still needs a valid pointer; the loader reads nothing past n.
    cdef const unsigned char *p = &buf[0] if n > 0 else <const unsigned char *>b""
    with nogil:
        rc = fr_model_load_buffer(p, n, &model, err, sizeof(err))
        fr_model_free(model)
    return rc, err.decode("utf-8", "replace")


cdef class StreamModel:
    """A stacked unidirectional layer seen by the C streaming API (fr_model + one fr_state).

    The model borrows the engines' weight arrays (no copy; the engines are kept alive), so
    weight edits through `Layer.gate(...)` views are seen by the next step. One instance
    serves one thread: the state is advanced in place.
    """
    cdef fr_model *model
    cdef fr_state *state
    cdef readonly int batch, input_size, hidden_size, num_layers
    cdef readonly int out_units  # units of h and y: proj_size, or hidden_size
    cdef int typenum
    cdef bint is_lstm, release_gil
    cdef object engines

    def __cinit__(self):
        self.model = NULL
        self.state = NULL

    def __init__(self, list engines, int batch):
        cdef LayerEngine eng
        cdef int rc, k, L = len(engines)
        if L < 1:
            raise ValueError("a streaming model needs at least one layer")
        for k in range(L):
            eng = engines[k]
            if eng.desc.num_directions != 1 or eng.desc.reverse:
                raise ValueError("streaming needs a unidirectional, forward layer")
        # fr_model_create copies the weight descriptors: a temporary array is enough.
        cdef fr_weights *w = <fr_weights *>PyMem_Malloc(L * sizeof(fr_weights))
        if w == NULL:
            raise MemoryError()
        for k in range(L):
            w[k] = (<LayerEngine>engines[k]).w[0]
        eng = engines[0]
        rc = fr_model_create(&eng.desc, L, w, &self.model)
        PyMem_Free(w)
        if rc != FR_OK:
            raise ValueError(f"fastrnn core rejected the model: {fr_strerror(rc).decode()}")
        rc = fr_state_create(self.model, batch, &self.state)
        if rc != FR_OK:
            raise ValueError(f"cannot create a streaming state: {fr_strerror(rc).decode()}")
        self.engines = engines
        self.batch = batch
        self.input_size = eng.desc.input_size
        self.hidden_size = eng.desc.hidden_size
        self.out_units = eng.P
        self.num_layers = L
        self.typenum = eng.typenum
        self.is_lstm = eng.desc.cell == FR_LSTM
        cdef Py_ssize_t weights = 0
        for k in range(L):
            eng = engines[k]
            weights += eng.desc.hidden_size * (eng.G * (eng.desc.input_size + eng.P)
                                               + (eng.P if eng.desc.proj_size > 0 else 0))
        self.release_gil = weights * (4 if self.typenum == cnp.NPY_FLOAT32 else 8) >= 65536

    def __dealloc__(self):
        fr_state_free(self.state)
        fr_model_free(self.model)

    def reset(self):
        fr_state_reset(self.state)

    def step(self, cnp.ndarray x, cnp.ndarray y, object h0, object c0, object h_n, object c_n):
        """One step: x (B, I) -> y (B, P). h0 (L, B, P) / c0 (L, B, H): state to start from
        (None: the state kept from the previous step); h_n / c_n or None: state out. P is
        proj_size with a projection, else H."""
        cdef Py_ssize_t B = self.batch, ns = self.num_layers * self.batch * self.hidden_size
        cdef Py_ssize_t nh = self.num_layers * self.batch * self.out_units
        cdef const void *px = _data(x, self.typenum, B * self.input_size, "x")
        cdef void *py = _data(y, self.typenum, B * self.out_units, "y")
        cdef const void *ph0 = NULL
        cdef const void *pc0 = NULL
        cdef void *phn = NULL
        cdef void *pcn = NULL
        cdef bint set_state = h0 is not None or c0 is not None
        if h0 is not None:
            ph0 = _data(h0, self.typenum, nh, "h0")
        if c0 is not None:
            pc0 = _data(c0, self.typenum, ns, "c0")
        if h_n is not None:
            phn = _data(h_n, self.typenum, nh, "h_n")
        if c_n is not None:
            pcn = _data(c_n, self.typenum, ns, "c_n")
        cdef int rc
        with nogil:
            if set_state:
                fr_state_set(self.state, ph0, pc0)
            rc = fr_step(self.model, self.state, px, py)
            if phn != NULL or pcn != NULL:
                fr_state_get(self.state, phn, pcn)
        if rc != FR_OK:
            raise RuntimeError(f"fastrnn core rejected the step: {fr_strerror(rc).decode()}")

    def time_steps(self, cnp.ndarray x, int steps, int repeats):
        """Nanoseconds per fr_step, timed in C: one value per repeat of `steps` steps."""
        if steps < 1 or repeats < 1:
            raise ValueError("steps and repeats must be >= 1")
        cdef const void *px = _data(x, self.typenum, self.batch * self.input_size, "x")
        y = np.empty((self.batch, self.out_units), x.dtype)
        cdef void *py = cnp.PyArray_DATA(y)
        out = np.empty(repeats, np.float64)
        cdef double *pout = <double *>cnp.PyArray_DATA(out)
        cdef int rc
        with nogil:
            rc = fr_time_steps(self.model, self.state, px, py, steps, repeats, pout)
        if rc != FR_OK:
            raise RuntimeError(f"fastrnn core rejected the timing call: {fr_strerror(rc).decode()}")
        return out

    def step_arrays(self, cnp.ndarray x, object h0, object c0):
        """Layer.step's path: start from (h0 (L, B, P), c0 (L, B, H), each or None = zeros),
        one step, return (y (B, P), h_n (L, B, P), c_n (L, B, H) or None) in new arrays."""
        cdef Py_ssize_t ns = self.num_layers * self.batch * self.hidden_size
        cdef Py_ssize_t nh = self.num_layers * self.batch * self.out_units
        cdef const void *px = _data(x, self.typenum, self.batch * self.input_size, "x")
        cdef const void *ph0 = NULL
        cdef const void *pc0 = NULL
        if h0 is not None:
            ph0 = _data(h0, self.typenum, nh, "h0")
        if c0 is not None:
            pc0 = _data(c0, self.typenum, ns, "c0")
        return self._run(px, ph0, pc0)

    cdef inline bint _exact(self, object a, int ndim, Py_ssize_t d0, Py_ssize_t d1,
                            Py_ssize_t d2):
        """a is exactly an ndarray (no subclass) of the model's dtype in native byte order,
        C-contiguous and aligned, of shape (d0, d1[, d2])."""
        if not cnp.PyArray_CheckExact(a):
            return False
        cdef cnp.ndarray arr = <cnp.ndarray>a
        if (cnp.PyArray_TYPE(arr) != self.typenum or not cnp.PyArray_ISCARRAY_RO(arr)
                or not cnp.PyArray_ISNOTSWAPPED(arr) or cnp.PyArray_NDIM(arr) != ndim):
            return False
        cdef cnp.npy_intp *dims = cnp.PyArray_DIMS(arr)
        return dims[0] == d0 and dims[1] == d1 and (ndim == 2 or dims[2] == d2)

    def step_packed(self, object x, object state):
        """Layer.step's fast path, returning what Layer.step returns: (y, (h_n, c_n)) for LSTM,
        (y, h_n) for GRU. It runs only when x (B, I) and the state ((h, c) for LSTM, h or (h,)
        for GRU, each (L, B, H)) are plain arrays already in the model's dtype, native byte
        order and C order, of this model's batch; otherwise it returns None and the caller
        validates and converts (a byte-swapped array must never be read as native)."""
        cdef Py_ssize_t L = self.num_layers, B = self.batch, H = self.hidden_size
        cdef Py_ssize_t P = self.out_units
        if not self._exact(x, 2, B, self.input_size, 0):
            return None
        cdef object h0 = None, c0 = None
        if state is not None:
            if self.is_lstm:
                if type(state) is not tuple or len(<tuple>state) != 2:
                    return None
                h0 = (<tuple>state)[0]
                c0 = (<tuple>state)[1]
                if not self._exact(c0, 3, L, B, H):
                    return None
            elif type(state) is tuple:
                if len(<tuple>state) != 1:
                    return None
                h0 = (<tuple>state)[0]
            else:
                h0 = state
            if not self._exact(h0, 3, L, B, P):
                return None
        y, h_n, c_n = self._run(cnp.PyArray_DATA(<cnp.ndarray>x),
                                cnp.PyArray_DATA(<cnp.ndarray>h0) if h0 is not None else NULL,
                                cnp.PyArray_DATA(<cnp.ndarray>c0) if c0 is not None else NULL)
        return (y, (h_n, c_n)) if self.is_lstm else (y, h_n)

    cdef object _run(self, const void *px, const void *ph0, const void *pc0):
        cdef cnp.npy_intp ydims[2]
        cdef cnp.npy_intp sdims[3]
        cdef cnp.npy_intp cdims[3]
        ydims[0] = self.batch
        ydims[1] = self.out_units
        sdims[0] = self.num_layers
        sdims[1] = self.batch
        sdims[2] = self.out_units
        cdims[0] = self.num_layers
        cdims[1] = self.batch
        cdims[2] = self.hidden_size
        y = cnp.PyArray_EMPTY(2, ydims, self.typenum, 0)
        h_n = cnp.PyArray_EMPTY(3, sdims, self.typenum, 0)
        c_n = cnp.PyArray_EMPTY(3, cdims, self.typenum, 0) if self.is_lstm else None
        cdef void *py = cnp.PyArray_DATA(<cnp.ndarray>y)
        cdef void *phn = cnp.PyArray_DATA(<cnp.ndarray>h_n)
        cdef void *pcn = cnp.PyArray_DATA(<cnp.ndarray>c_n) if c_n is not None else NULL
        cdef int rc
        # Tiny steps run with the GIL held: releasing and re-taking it would cost more than
        # the step itself. Larger ones (>= 64 KiB of weights) let other threads run.
        if self.release_gil:
            with nogil:
                rc = _stream_step(self.model, self.state, px, py, ph0, pc0, phn, pcn)
        else:
            rc = _stream_step(self.model, self.state, px, py, ph0, pc0, phn, pcn)
        if rc != FR_OK:
            raise RuntimeError(f"fastrnn core rejected the step: {fr_strerror(rc).decode()}")
        return y, h_n, c_n


cdef inline int _stream_step(fr_model *model, fr_state *state, const void *px, void *py,
                             const void *ph0, const void *pc0, void *phn,
                             void *pcn) noexcept nogil:
    """Set the state (zeros when neither h0 nor c0), step, read the new state."""
    if ph0 == NULL and pc0 == NULL:
        fr_state_reset(state)
    else:
        fr_state_set(state, ph0, pc0)
    cdef int rc = fr_step(model, state, px, py)
    fr_state_get(state, phn, pcn)
    return rc
