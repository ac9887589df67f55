/* fastrnn: masked LSTM / GRU kernels for CPUs. Public C API (C99, no Python).
 *
 * Conventions
 * -----------
 * Row-vector form, one layer and one direction at a time:
 *
 *   LSTM (gates input, forget, cell, output; i, f, o sigmoid, g tanh):
 *     pre_g = x_t @ kernel_g + h_{t-1} @ recurrent_g + bias_g
 *     c_t = f * c_{t-1} + i * g          h_t = o * tanh(c_t)
 *   GRU (gates update z, reset r, candidate n):
 *     z, r = sigmoid(x_t @ kernel_g + h_{t-1} @ recurrent_g + bias_g + recurrent_bias_g)
 *     reset_after = 1: n = tanh(x_t @ kernel_n + bias_n + r * (h_{t-1} @ recurrent_n + recurrent_bias_n))
 *     reset_after = 0: n = tanh(x_t @ kernel_n + bias_n + recurrent_bias_n + (r * h_{t-1}) @ recurrent_n)
 *     h_t = z * h_{t-1} + (1 - z) * n
 *
 * Weight layout ("padded canonical")
 * ----------------------------------
 * kernel (input_size rows) and recurrent (hidden_size rows) are row-major matrices whose
 * columns hold the gates side by side in the canonical order above. Gate g, unit u sits in
 * column g * gate_stride + u, where gate_stride = fr_gate_stride(dtype, hidden_size) rounds
 * hidden_size up to a whole SIMD panel (16 float32 / 8 float64). Rows are `ld` elements apart,
 * ld >= num_gates * gate_stride; fr_recommended_ld() also avoids cache-set aliasing. Padding
 * columns are never read into results (their content does not matter). bias and
 * recurrent_bias are vectors of num_gates * gate_stride elements in the same column order.
 * fr_pack_weights() copies plain (rows, num_gates * hidden_size) matrices into this layout.
 *
 * Masks
 * -----
 * mask (batch, time), nonzero = valid step, or NULL = every step valid. At a masked step
 * the state (h and c) is carried unchanged and the output is 0 (FR_MASKED_ZERO) or a copy of
 * the output of the step processed just before (FR_MASKED_CARRY; 0 before the first processed
 * valid step). The backward direction (and reverse = 1) processes t = time-1 .. 0, i.e. each
 * row's valid steps from last to first; outputs stay in original time order.
 *
 * Ownership and threads
 * ---------------------
 * The library allocates nothing in fr_layer_forward: the caller passes a workspace of at least
 * fr_workspace_size() bytes (any alignment; it is aligned internally). All functions are
 * reentrant: concurrent calls are safe as long as each uses its own workspace and outputs.
 * num_threads > 1 runs an OpenMP parallel region inside the call (when built with OpenMP).
 * Results are bitwise identical for any num_threads: every output element is computed with
 * the same operations in the same order whatever the work split.
 *
 * Busy cores: in the forward pass a thread that falls behind by a descheduled slice (its core
 * shared with another runtime's spinning pool) has its work taken over by the others, and the
 * following calls use fewer threads for a while (fr_get_contention). num_threads is then an
 * upper bound; the results are the same bits.
 */
#ifndef FASTRNN_H
#define FASTRNN_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FR_VERSION "0.1.0"

typedef enum { FR_LSTM = 0, FR_GRU = 1 } fr_cell;
typedef enum { FR_FLOAT32 = 0, FR_FLOAT64 = 1 } fr_dtype;
typedef enum { FR_MASKED_ZERO = 0, FR_MASKED_CARRY = 1 } fr_masked_output;

/* Kernel variants (instruction sets). */
typedef enum { FR_ISA_BASELINE = 0, FR_ISA_AVX2 = 1, FR_ISA_AVX512 = 2 } fr_isa;
#define FR_ISA_COUNT 3

/* Status codes. */
enum {
    FR_OK = 0,
    FR_EINVAL = -1,      /* a descriptor field or pointer is invalid */
    FR_EWORKSPACE = -2,  /* workspace missing or smaller than fr_workspace_size() */
    FR_EUNSUPPORTED = -3 /* ISA not available on this CPU / in this build, or a cell variant
                            the called function does not run yet */
};

/* Activation functions of the cell variants (docs/variants.md). FR_ACT_DEFAULT is the
 * slot's plain-cell function: sigmoid for the gates (slot f), tanh for the cell input /
 * candidate (slot g) and the LSTM output (slot h). */
typedef enum {
    FR_ACT_DEFAULT = 0,
    FR_ACT_SIGMOID,          /* 1 / (1 + exp(-x)) */
    FR_ACT_TANH,             /* tanh(x) */
    FR_ACT_RELU,             /* max(0, x) */
    FR_ACT_HARD_SIGMOID,     /* min(max(alpha * x + beta, 0), 1) */
    FR_ACT_SOFTSIGN,         /* x / (1 + |x|) */
    FR_ACT_SOFTPLUS,         /* log(1 + exp(x)) */
    FR_ACT_ELU,              /* x > 0 ? x : alpha * (exp(x) - 1) */
    FR_ACT_LEAKY_RELU,       /* x >= 0 ? x : alpha * x */
    FR_ACT_THRESHOLDED_RELU, /* x > alpha ? x : 0 */
    FR_ACT_SCALED_TANH,      /* alpha * tanh(beta * x) */
    FR_ACT_AFFINE            /* alpha * x + beta (linear: alpha 1, beta 0) */
} fr_act_kind;
#define FR_ACT_COUNT 12

typedef struct fr_activation {
    fr_act_kind kind;
    double alpha, beta;      /* used by the kinds that name them */
} fr_activation;

/* Activation slots: f = the gates (LSTM i, f, o; GRU z, r), g = the cell input (LSTM) or the
 * candidate (GRU), h = the LSTM output activation applied to c_t. */
enum { FR_SLOT_F = 0, FR_SLOT_G = 1, FR_SLOT_H = 2 };

typedef struct fr_layer_desc {
    fr_cell cell;
    fr_dtype dtype;
    int reset_after;      /* GRU only: 1 = reset applied after the recurrent matmul */
    int input_size;       /* I >= 1 */
    int hidden_size;      /* H >= 1 */
    int num_directions;   /* 1 or 2 (bidirectional: forward then backward) */
    int reverse;          /* num_directions == 1 only: process valid steps last to first */
    fr_masked_output masked_output;
    /* Cell variants (docs/variants.md); all zero = the plain cell (tanh / sigmoid, no clip,
     * no peepholes), which runs its own tuned epilogues. A variant's training record also
     * holds the gate pre-activations (G * Hp more elements per step). The derivative of a
     * clip is taken as 0 where the value sits on the bound. */
    fr_activation act[2][3];  /* per direction (forward first), per slot FR_SLOT_F/G/H */
    double clip;              /* > 0: every gate pre-activation clipped to [-clip, clip] */
    double cell_clip;         /* LSTM, > 0: c_t clipped to [-cell_clip, cell_clip] */
    int peepholes;            /* LSTM: fr_weights.peephole is read */
    int input_forget;         /* LSTM: coupled gates, f = 1 - i (the forget weights unused) */
    /* LSTM projection (PyTorch proj_size, TF1 num_proj): h_t = (o * act_h(c_t)) @ projection
     * has proj_size = P units. Then the output y is (B, T, D * P), h0 / h_n are (D, B, P),
     * c0 / c_n stay (D, B, H), the recurrent weights have P rows, and layer k > 0 of a model
     * takes D * P inputs. 0 = no projection. */
    int proj_size;
    double proj_clip;         /* > 0 with proj_size: h_t clipped to [-proj_clip, proj_clip] */
    /* FR_WEIGHTS_INT8 / FR_WEIGHTS_BF16: reduced-precision weights (fr_weights.qkernel /
     * qrecurrent; "Reduced precision" below): inference only, float32, no projection.
     * FR_WEIGHTS_FLOAT (0): float weights (kernel / recurrent). */
    int weight_format;
    /* 1: fr_weights.recurrent_packed holds the recurrent matrix as fr_pack_recurrent() laid it
     * out ("frozen" weights; float weights without a projection); 0: not read. */
    int packed_recurrent;
} fr_layer_desc;

enum { FR_WEIGHTS_FLOAT = 0, FR_WEIGHTS_INT8 = 1, FR_WEIGHTS_BF16 = 2 };

/* One direction's weights in the padded canonical layout (see above). */
typedef struct fr_weights {
    const void *kernel;         /* (input_size, ld) */
    const void *recurrent;      /* (hidden_size, ld) */
    const void *bias;           /* (num_gates * gate_stride) or NULL = zeros */
    const void *recurrent_bias; /* (num_gates * gate_stride) or NULL = zeros; GRU only */
    ptrdiff_t ld;               /* row stride of kernel and recurrent, in elements */
    /* LSTM with desc->peepholes: (3 * gate_stride) peephole weights of the gates input,
     * forget, output (in that order, each gate_stride apart); NULL otherwise. */
    const void *peephole;
    /* LSTM with desc->proj_size = P: (hidden_size, proj_ld) row-major, P columns used,
     * proj_ld >= fr_gate_stride(dtype, P) (the padding columns are read, never used). */
    const void *projection;
    ptrdiff_t proj_ld;
    /* With desc->weight_format INT8 or BF16: the quantized matrices ("Reduced precision"
     * below), which replace kernel and recurrent (not read then); not read otherwise. */
    const struct fr_qmatrix *qkernel, *qrecurrent;
    /* With desc->packed_recurrent: the recurrent matrix laid out once by fr_pack_recurrent()
     * ("frozen" weights). Float weights without a projection then read it instead of
     * `recurrent` in their recurrent products, and a call packs nothing per call (results
     * are bitwise the same either way: only the layout differs). It must hold the current
     * values of `recurrent`: after editing those, pack again. Not read otherwise. Like the
     * other weight pointers, fr_model_create borrows it (it must outlive the model), and
     * fr_step reads it too (each gate's rows contiguous: a faster step at batch 1). */
    const void *recurrent_packed;
} fr_weights;

/* One call's data. All arrays are C-contiguous in the layer's dtype. */
typedef struct fr_io {
    int batch;                  /* B >= 1 */
    int time;                   /* T >= 1 */
    const void *x;              /* (B, T, input_size) */
    const unsigned char *mask;  /* (B, T), nonzero = valid; NULL = all valid */
    const void *h0;             /* (num_directions, B, H) or NULL = zeros */
    const void *c0;             /* LSTM: (num_directions, B, H) or NULL = zeros */
    void *y;                    /* out (B, T, num_directions * H) */
    void *h_n;                  /* out (num_directions, B, H) or NULL */
    void *c_n;                  /* out LSTM: (num_directions, B, H) or NULL */
} fr_io;

/* ---- Reduced precision: int8 weights (inference; docs/quantization.md) ----
 * A quantized matrix stands for a padded canonical float32 matrix of `rows` rows (input_size or
 * hidden_size) and cols = num_gates * gate_stride columns, as symmetric int8 with one scale per
 * column (gate unit): w[k][c] ~ q[k][c] * scale[c], scale[c] = max_k |w[k][c]| / 127 and
 * q = w / scale rounded to nearest even (a zero column: scale 0, q 0). Bytes: panels of 16
 * columns, each holding its rows in groups of four (K4 = rows rounded up to 4, then / 4;
 * padding rows 0): q[k][c] at data[(c / 16) * K4 * 64 + (k / 4) * 64 + (c % 16) * 4 + k % 4]
 * (fr_qmatrix_data_size() bytes; cols is a multiple of 16); colsum[c] = sum_k q[k][c].
 * A call with quantized weights quantizes its activations (x_t, and h_{t-1} at every step) per
 * batch row: s = max |row| / 127, a = row / s rounded to nearest even (a row whose largest
 * magnitude is below FLT_MIN: s = 0, a = 0; a row holding NaN or infinity: s = NaN, so its
 * products are NaN), sums sum_k a[k] q[k][c] exactly in int32 on every kernel variant, and
 * hands the float32 product (float)sum * (s * scale[c]) to the same gate epilogues as the
 * float32 path: states, gates and outputs stay float32. Results do not depend on the thread
 * count or the batch composition. */
typedef struct fr_qmatrix {
    int rows, cols;             /* 1 <= rows <= 65536 (int32 sums cannot overflow); cols % 16 == 0 */
    const signed char *data;
    const float *scale;         /* cols */
    const int *colsum;          /* cols */
} fr_qmatrix;
size_t fr_qmatrix_data_size(int rows, int cols);
/* Quantize the float32 matrix w (rows x cols, row stride ld >= cols) by the rule above:
 * q (rows x cols, row stride cols) and scale (cols). FR_EINVAL for bad sizes or a weight that
 * is NaN or infinite. */
int fr_quantize_int8(const float *w, int rows, int cols, ptrdiff_t ld, signed char *q,
                     float *scale);
/* Lay out an int8 matrix q (rows x cols, cols a multiple of 16, row stride ld >= cols, values
 * in [-127, 127]) for the kernels: data (fr_qmatrix_data_size() bytes) and colsum (cols). */
int fr_pack_int8(const signed char *q, int rows, int cols, ptrdiff_t ld, signed char *data,
                 int *colsum);
/* The int8 kernel variant the next call would use: "int8-avx512vnni", "int8-avxvnni",
 * "int8-avx2" or "int8-baseline" (follows fr_get_isa(); AVX-512 without VNNI uses the best
 * 256-bit one). */
const char *fr_int8_kernel_name(void);

/* bf16 weights (FR_WEIGHTS_BF16): each weight rounded to bfloat16 (the upper 16 bits of its
 * float32, rounded to nearest even; NaN stays NaN; values below FLT_MIN in magnitude become
 * signed zeros). Bytes: panels of 16 columns holding the rows in pairs (K2 = rows rounded up to
 * 2, then / 2; padding rows 0): w[k][c] at data[(c / 16) * K2 * 32 + (k / 2) * 32
 * + (c % 16) * 2 + k % 2] (16-bit units, fr_bf16_data_size() of them; fr_qmatrix.data points
 * to them, scale and colsum are NULL). At every step x_t and h_{t-1} are rounded to bfloat16
 * the same way, and each output sums, in float32 and in increasing pairs of k, first the odd
 * then the even product of the pair (what AVX-512 BF16's vdpbf16ps computes; the products are
 * exact in float32). */
size_t fr_bf16_data_size(int rows, int cols);
/* Round and lay out the float32 matrix w (rows x cols, cols a multiple of 16, row stride ld):
 * FR_EINVAL for bad sizes or a weight that is NaN or infinite. */
int fr_pack_bf16(const float *w, int rows, int cols, ptrdiff_t ld, unsigned short *data);
/* The bf16 kernel variant the next call would use: "bf16-avx512", "bf16-avx2" or
 * "bf16-baseline". */
const char *fr_bf16_kernel_name(void);

/* Number of gates: 4 (LSTM) or 3 (GRU). */
int fr_num_gates(fr_cell cell);
/* Column distance between gates: hidden_size rounded up to the SIMD panel width. */
int fr_gate_stride(fr_dtype dtype, int hidden_size);
/* A row stride >= num_gates * gate_stride that avoids power-of-two cache aliasing. */
ptrdiff_t fr_recommended_ld(fr_cell cell, fr_dtype dtype, int hidden_size);

/* Copy plain row-major (rows, num_gates * hidden_size) matrices / (num_gates * hidden_size)
 * vectors into the padded layout; dst has rows * ld (matrix) or num_gates * gate_stride
 * (vector, pass rows = 1 and ld = num_gates * gate_stride) elements. Padding is zeroed. */
int fr_pack_weights(fr_cell cell, fr_dtype dtype, int hidden_size, int rows,
                    const void *src, void *dst, ptrdiff_t ld);

/* Frozen recurrent weights (fr_weights.recurrent_packed): bytes for one direction of this
 * layer (0 where packing does not apply: a projection, int8 / bf16 weights, a bad
 * descriptor), and the copy itself, from w->recurrent (row stride w->ld) into dst (that many
 * bytes, any alignment of at least the element size; 64 bytes is best). The layout is the one
 * a call otherwise packs per call: panels of the kernels' SIMD width, gate by gate, rows
 * contiguous; it is the same for every kernel variant, so fr_set_isa needs no repacking. */
size_t fr_packed_recurrent_size(const fr_layer_desc *desc);
int fr_pack_recurrent(const fr_layer_desc *desc, const fr_weights *w, void *dst);

/* Bytes of workspace fr_layer_forward needs for this shape and thread count. */
size_t fr_workspace_size(const fr_layer_desc *desc, int batch, int time, int num_threads);

/* Run one layer (all its directions) over a batch of sequences.
 * w: num_directions entries (forward first). Returns FR_OK or a negative status. */
int fr_layer_forward(const fr_layer_desc *desc, const fr_weights *w, const fr_io *io,
                     void *workspace, size_t workspace_size, int num_threads);

/* ---- Training: forward with a record, and the backward pass (BPTT) ----
 *
 * fr_layer_forward_train runs the same kernels as fr_layer_forward and also writes a record of
 * what the backward pass needs into a caller buffer of fr_record_size() bytes: per direction
 * and (batch, time) step, the activated gates and the state after the step, plus the cell
 * state (LSTM) or h @ U_candidate + b (GRU reset_after = 1): 6 * Hp elements for LSTM,
 * 5 * Hp for the reset-after GRU, 4 * Hp for the reset-before GRU (Hp = gate
 * stride), rounded up to 64 bytes per part, plus the dropped input (input_size elements)
 * when in_mask is given. in_mask applies input dropout (x * m, m per batch row and feature,
 * the same at every step, one mask per direction); rec_mask applies recurrent (variational)
 * dropout: h_{t-1} is multiplied by it wherever it meets the recurrent weights (all gates; the
 * GRU's z * h_{t-1} and the LSTM's state carry use the undropped h, as Keras does).
 *
 * fr_layer_backward takes the same desc, weights and io (x, mask, h0, c0 of the recorded call;
 * y unused), the record and the gradients of the outputs, and writes dx (summed over the
 * directions), the initial-state gradients and, if grads is not NULL, the weight gradients in
 * the padded canonical layout of each direction (kernel, recurrent, bias, recurrent_bias;
 * padding columns are written as 0; bias / recurrent_bias may be NULL to skip them). The LSTM
 * bias gradient covers the framework's two biases (they act as their sum). Gradients are
 * bitwise identical for any num_threads. */
typedef struct fr_train {
    const void *in_mask;   /* (num_directions, B, input_size) input dropout multipliers or NULL */
    const void *rec_mask;  /* (num_directions, B, H) dropout multipliers (0 or 1/(1-p)) or NULL */
    void *record;          /* fr_record_size() bytes, any alignment */
    size_t record_size;
} fr_train;

typedef struct fr_grad_io {
    const void *dy;            /* (B, T, num_directions * H): dL/dy */
    const void *dh_n, *dc_n;   /* (num_directions, B, H) dL/d final state, or NULL = 0 */
    void *dx;                  /* out (B, T, input_size) */
    void *dh0, *dc0;           /* out (num_directions, B, H) or NULL */
} fr_grad_io;

typedef struct fr_grads {
    void *kernel, *recurrent, *bias, *recurrent_bias;  /* like fr_weights, written */
    ptrdiff_t ld;
    void *peephole;             /* LSTM with peepholes: 3 * gate_stride, or NULL to skip */
    void *projection;           /* LSTM with proj_size: (hidden_size, proj_ld), or NULL */
    ptrdiff_t proj_ld;
} fr_grads;

size_t fr_record_size(const fr_layer_desc *desc, int batch, int time, int input_dropout);
int fr_layer_forward_train(const fr_layer_desc *desc, const fr_weights *w, const fr_io *io,
                           const fr_train *train, void *workspace, size_t workspace_size,
                           int num_threads);
size_t fr_backward_workspace_size(const fr_layer_desc *desc, int batch, int time,
                                  int num_threads);
int fr_layer_backward(const fr_layer_desc *desc, const fr_weights *w, const fr_io *io,
                      const fr_train *train, const fr_grad_io *grads_io,
                      const fr_grads *grads /* num_directions entries, or NULL */,
                      void *workspace, size_t workspace_size, int num_threads);

/* Kernel variant selection. The default is the best the CPU supports (avx512, then avx2, then
 * baseline), unless the environment variable FASTRNN_ISA names an available one (baseline,
 * avx2 or avx512). Every variant gives the same bits as avx2 except baseline, which has no
 * fused multiply-add. fr_set_isa is process-wide and
 * must not be called while another thread is inside fr_layer_forward. */
fr_isa fr_get_isa(void);
int fr_set_isa(fr_isa isa);
int fr_isa_available(fr_isa isa);
const char *fr_isa_name(fr_isa isa);
/* 1 if the library was compiled with OpenMP. */
int fr_openmp_enabled(void);

/* Sharing the cores. When the threads of two forward calls in a row took over work of a
 * thread that stopped running (team.h), the calls that follow use at most the threads that
 * kept up, for `cap_calls` calls (4 at first, doubling while it keeps happening, at most 256),
 * then try the full count again. Process-wide; the counters are for diagnostics and tests. */
typedef struct fr_contention {
    long long calls;        /* multi-threaded forward calls */
    long long contended;    /* of those, calls in which work moved to another thread */
    long long capped;       /* calls that ran with fewer threads because of the cap */
    int cap_threads;        /* 0: no cap now */
    int cap_calls;          /* calls left under the cap */
    int last_threads;       /* threads of the last forward call (any thread's) */
    int last_taken;         /* parts that moved to another thread in it */
} fr_contention;
void fr_get_contention(fr_contention *out);
/* Forget the cap and zero the counters. */
void fr_reset_contention(void);
/* Testing only: make thread `thread` of the next multi-threaded forward call sleep `usec`
 * microseconds at unit `unit` (-1: before it starts; 0: the prelude, then one per step),
 * before claiming it
 * (busy = 0: as if not running) or while running it (busy = 1: descheduled mid-work), once.
 * usec = 0 disarms. Not for concurrent calls. */
void fr_debug_delay(int thread, int unit, int usec, int busy);
/* Testing only: 1 while the delay armed by fr_debug_delay has not happened (on a loaded machine
 * another thread may have run that unit first). */
int fr_debug_delay_pending(void);
/* Testing only: the least time (microseconds) a thread may fall behind before its work is
 * taken over; usec <= 0 restores the default (250). Tests raise it so that a loaded machine's
 * own hiccups are not mistaken for the delays they arm. */
void fr_debug_patience(int usec);

/* The machine's FP32 arithmetic limit, measured now: num_threads threads (ignored without
 * OpenMP) each run independent register-only fused multiply-add chains for about `seconds`
 * seconds with the widest vector ISA the CPU supports (AVX-512 or AVX2+FMA on x86-64 when
 * available, whatever FASTRNN_ISA says). Returns GFLOP/s (one FMA = 2 flops) summed over the threads,
 * or a negative value for invalid arguments (num_threads < 1, seconds <= 0 or > 60).
 * Thread-safe; occupies the calling thread(s) for the whole duration. */
double fr_fma_peak_gflops(int num_threads, double seconds);

/* ==== Models and streaming ==================================================================
 *
 * A model is a stack of num_layers layers of one cell type and dtype (layer k > 0 takes the
 * (num_directions * hidden_size)-wide output of layer k - 1), loaded from a .frnn file
 * (byte layout: docs/frnn-format.md) or built over caller-owned weights.
 *
 *   fr_forward   whole sequences with per-row lengths or a mask; stacked and bidirectional.
 *                Same kernels and results (bitwise) as fr_layer_forward layer by layer.
 *   fr_step      one time step of a batch of independent streams, unidirectional forward
 *                models only (FR_ENOTSTREAMABLE otherwise). Every check is done once by
 *                fr_state_init / fr_state_create; a step allocates nothing, takes no lock and
 *                runs single-threaded. Its results are bitwise equal to fr_layer_forward run
 *                step by step on the same kernel variant (same operations in the same order).
 *
 * Error messages: functions taking (err, err_size) write a NUL-terminated message there when
 * err is not NULL (truncated to err_size). Model and state objects are immutable during steps,
 * except the state that fr_step advances: one state per thread, any number of states per model.
 */
enum {
    FR_EIO = -4,              /* the file could not be opened or read */
    FR_EFORMAT = -5,          /* not a .frnn file, or a corrupt / truncated / inconsistent one */
    FR_EVERSION = -6,         /* a .frnn version this library does not read */
    FR_ENOMEM = -7,           /* allocation failed */
    FR_ENOTSTREAMABLE = -8    /* fr_step needs a unidirectional, non-reversed model */
};

typedef struct fr_model fr_model;
typedef struct fr_state fr_state;

/* Parse and validate a .frnn image (every size is checked against len before anything is
 * allocated; the CRC32 must match) and pack its weights. On success *out owns its memory. */
int fr_model_load_buffer(const void *buf, size_t len, fr_model **out, char *err, size_t err_size);
int fr_model_load_file(const char *path, fr_model **out, char *err, size_t err_size);
/* A model over caller-owned weights in the padded canonical layout (no copy: they must stay
 * alive and unchanged while the model is used). desc describes layer 0; layers k > 0 get
 * input_size = num_directions * hidden_size. w: num_layers * num_directions entries. */
int fr_model_create(const fr_layer_desc *desc, int num_layers, const fr_weights *w,
                    fr_model **out);
void fr_model_free(fr_model *model);
int fr_model_num_layers(const fr_model *model);
/* Descriptor of one layer (NULL if layer is out of range). */
const fr_layer_desc *fr_model_layer(const fr_model *model, int layer);

/* Whole sequences. Arrays C-contiguous in the model's dtype; L = num_layers,
 * D = num_directions, H = hidden_size. */
typedef struct fr_sequence {
    int batch;                  /* B >= 1 */
    int time;                   /* T >= 1 */
    const void *x;              /* (B, T, input_size of layer 0) */
    const int *lengths;         /* (B,), 0 <= lengths[b] <= T, or NULL */
    const unsigned char *mask;  /* (B, T), nonzero = valid, or NULL; not both with lengths */
    const void *h0, *c0;        /* (L * D, B, H) or NULL = zeros; c0 LSTM only */
    void *y;                    /* out (B, T, D * H): the last layer's output */
    void *h_n, *c_n;            /* out (L * D, B, H) or NULL; c_n LSTM only */
} fr_sequence;

size_t fr_forward_workspace_size(const fr_model *model, int batch, int time, int num_threads);
/* workspace NULL: allocated and freed inside the call; otherwise at least
 * fr_forward_workspace_size() bytes. */
int fr_forward(const fr_model *model, const fr_sequence *seq, void *workspace,
               size_t workspace_size, int num_threads);

/* Streaming state of `batch` independent streams: h (and c) of every layer. */
size_t fr_state_size(const fr_model *model, int batch);
/* In caller memory of at least fr_state_size() bytes (any alignment); fr_state_free not needed. */
int fr_state_init(const fr_model *model, int batch, void *buf, size_t size, fr_state **out);
int fr_state_create(const fr_model *model, int batch, fr_state **out);
void fr_state_free(fr_state *state);
/* Zero every stream's state. */
void fr_state_reset(fr_state *state);
/* Copy the state in / out: h is (num_layers, batch, P) and c (num_layers, batch, H), P =
 * proj_size with a projection, else H; NULL = zeros (set) / skip (get). */
int fr_state_set(fr_state *state, const void *h, const void *c);
int fr_state_get(const fr_state *state, void *h, void *c);
/* One step: x_t (batch, input_size) -> y_t (batch, P), the last layer's new h. Uses the
 * kernel variant currently selected (fr_get_isa), like fr_layer_forward. */
int fr_step(const fr_model *model, fr_state *state, const void *x_t, void *y_t);
/* Latency probe: `repeats` times, run `steps` fr_step calls on the same x_t (the state keeps
 * evolving) under a monotonic clock; ns_per_step[r] = elapsed nanoseconds / steps. */
int fr_time_steps(const fr_model *model, fr_state *state, const void *x_t, void *y_t,
                  int steps, int repeats, double *ns_per_step);
/* Short description of a status code. */
const char *fr_strerror(int status);

#ifdef __cplusplus
}
#endif
#endif /* FASTRNN_H */
