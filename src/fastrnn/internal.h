/* fastrnn internals shared by the dispatcher and the per-ISA kernel objects. Not installed. */
#ifndef FASTRNN_INTERNAL_H
#define FASTRNN_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include "fastrnn.h"
#include "qgemm.h"

/* Layout: weights are packed in 64-byte panels of units (two 32-byte halves) on every target,
 * so packed arrays and workspace sizes do not depend on the build. */
#define FR_VEC_BYTES 32
#define FR_PANEL_BYTES (2 * FR_VEC_BYTES)
/* The vector the kernels compute on: one SIMD register of the target (kernels_impl.h and
 * stream_impl.inc split panels into such vectors). 16 bytes on ARM (NEON q registers: 32 of
 * them on AArch64, 16 on armv7), 32 elsewhere (x86 AVX2 ymm; the AVX-512 kernels take a whole
 * panel). A 32-byte generic vector on a 16-byte target is kept in memory by gcc, not in
 * registers. Every lane runs the same operations whatever the width, so results do not
 * depend on it. */
#if defined(__ARM_NEON) || defined(__aarch64__)
#define FR_SIMD_BYTES 16
#else
#define FR_SIMD_BYTES FR_VEC_BYTES
#endif

/* The float32 epilogue lane of one SIMD register (kernels_impl.h, stream_kernels.h; the AVX-512
 * kernels use a panel-wide one): activations.h's 4- or 8-wide vectors. */
#if FR_SIMD_BYTES == 16
#define FR_SIMD_LANE_F32 fr_f32x4
#define FR_SIMD_VTANH_F32 fr_vtanh_f32x4
#define FR_SIMD_VSIGMOID_F32 fr_vsigmoid_f32x4
#else
#define FR_SIMD_LANE_F32 fr_f32x8
#define FR_SIMD_VTANH_F32 fr_vtanh_f32x8
#define FR_SIMD_VSIGMOID_F32 fr_vsigmoid_f32x8
#endif

/* acc += b * a for a kernel vector b and a scalar a (float or double), one fused multiply-add
 * per lane wherever the target has FMA. gcc fuses the plain expression itself (the build sets
 * -ffp-contract=fast), except for float vectors on armv7: NEON flushes denormals, so gcc
 * computes them on scalar VFP registers unless told -funsafe-math-optimizations; there float32
 * names NEON's vfma (both branches compile for both types; one is chosen by a's type). */
#if defined(__ARM_NEON) && !defined(__aarch64__) && defined(__ARM_FEATURE_FMA)
#include <arm_neon.h>
#define FR_MADD(acc, b, a)                                                                   \
    _Generic((a),                                                                           \
        float: ((acc) = (__typeof__(acc))vfmaq_f32((float32x4_t)(acc), (float32x4_t)(b),     \
                                                    vdupq_n_f32((float)(a)))),                 \
        default: ((acc) += (b) * (a)))
#else
#define FR_MADD(acc, b, a) ((acc) += (b) * (a))
#endif
#define FR_MAX_THREADS 64   /* threads of one call (team.h: one part each) */
/* fr_debug_delay's armed delay for this thread and unit of a team (team.h), once; 0: none. */
int fr_debug_delay_for(int thread, int unit, int busy);
/* The least time a team member may fall behind before its work is taken over (team.h):
 * FR_TEAM_PATIENCE_NS, or what fr_debug_patience set. */
long long fr_team_patience_ns(void);
#define FR_MR 6             /* rows per micro-tile */
#define FR_CHUNK_ROWS (4 * FR_MR) /* rows per gate-outer chunk of a step (forward_impl.inc) */
/* A batch of at most FR_ROWSTREAM_MAX_ROWS rows, at most FR_ROWSTREAM_MAX_STEPS long, whose
 * recurrent weights take [FR_ROWSTREAM_MIN_BYTES, FR_ROWSTREAM_MAX_BYTES) streams them row by
 * row (forward_impl.inc, step_rowstream) instead of packing them per call. Below: they fit L2 and the tiled kernels
 * are faster; above (H = 1024: rows 16 KB apart) the packed layout streams faster per step. */
#define FR_ROWSTREAM_MIN_BYTES ((size_t)2 << 20)
#define FR_ROWSTREAM_MAX_BYTES ((size_t)8 << 20)
#define FR_ROWSTREAM_MAX_STEPS 32
#define FR_ROWSTREAM_MAX_ROWS 4
#define FR_ALIGN 64
#define FR_PACK_MIN_STEPS 8  /* sequences at least this long get a packed recurrent matrix */

/* Denormals flushed to zero inside the kernels' parallel regions only (MXCSR FTZ | DAZ), each
 * thread restoring its previous mode on the way out: on many x86 cores every operation on a
 * denormal costs ~100 cycles, and RNN states decaying towards 0 produce them. Never
 * process-wide. */
#if defined(__x86_64__) || defined(_M_X64)
#include <xmmintrin.h>
static inline unsigned fr_fpmode_enter(void)
{
    unsigned old = _mm_getcsr();
    _mm_setcsr(old | 0x8040u);
    return old;
}
static inline void fr_fpmode_leave(unsigned old) { _mm_setcsr(old); }
#elif defined(__aarch64__) && defined(__GNUC__)
/* FPCR.FZ (bit 24): denormal inputs and results of single and double operations read as 0, as
 * with x86's FTZ | DAZ, so ARM gives the bits x86 gives (docs/api.md, "Determinism"). */
static inline unsigned fr_fpmode_enter(void)
{
    uint64_t old;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(old));
    __asm__ __volatile__("msr fpcr, %0" : : "r"(old | ((uint64_t)1 << 24)));
    return (unsigned)old;
}
static inline void fr_fpmode_leave(unsigned old)
{
    __asm__ __volatile__("msr fpcr, %0" : : "r"((uint64_t)old));
}
#elif defined(__arm__) && defined(__ARM_FP) && defined(__GNUC__)
/* armv7 FPSCR.FZ (bit 24): scalar VFP operations flush denormals as NEON always does. */
static inline unsigned fr_fpmode_enter(void)
{
    unsigned old;
    __asm__ __volatile__("vmrs %0, fpscr" : "=r"(old));
    __asm__ __volatile__("vmsr fpscr, %0" : : "r"(old | (1u << 24)));
    return old;
}
static inline void fr_fpmode_leave(unsigned old)
{
    __asm__ __volatile__("vmsr fpscr, %0" : : "r"(old));
}
#else
static inline unsigned fr_fpmode_enter(void) { return 0; }
static inline void fr_fpmode_leave(unsigned old) { (void)old; }
#endif

/* The cell variant of one direction (docs/variants.md), resolved from the layer descriptor:
 * on = 0 is the plain cell, whose tuned epilogues run; otherwise the variant epilogues of
 * cell_impl.inc run on the same GEMM products. Activation kinds are never FR_ACT_DEFAULT
 * here (resolved to the slot's function). */
typedef struct fr_cell_variant {
    int on;
    fr_activation act[3];        /* slots FR_SLOT_F, FR_SLOT_G, FR_SLOT_H */
    double clip, cell_clip;      /* 0 = none */
    int input_forget;
    const void *peephole;        /* LSTM: 3 * Hp (input, forget, output) or NULL */
} fr_cell_variant;

/* Fills v for direction dir of a layer (fastrnn.c). */
void fr_cell_variant_of(const fr_layer_desc *d, const fr_weights *w, int dir,
                        fr_cell_variant *v);
/* 1 if the descriptor asks for anything but the plain cell. */
int fr_desc_is_variant(const fr_layer_desc *d);

/* How one direction's work is split across threads. */
typedef enum {
    FR_SPLIT_ROWS = 0,   /* each thread owns a block of batch rows for every step: no barriers */
    FR_SPLIT_HIDDEN = 1  /* each thread owns a block of hidden units: one barrier per step */
} fr_split;

typedef struct fr_dir_args {
    fr_cell cell;
    int reset_after;
    int B, T, I, H;
    int Hp;                      /* gate stride (padded H) */
    int G;                       /* gates */
    int backward;                /* process t = T-1 .. 0 */
    fr_masked_output masked_output;
    const void *Wx, *Wh;         /* padded canonical, row stride ld */
    ptrdiff_t ld;
    const void *Whp;             /* Wh packed once ([block][gate][k][panel]) or NULL */
    const void *bias, *rbias;    /* G * Hp or NULL */
    const void *x;               /* (B, T, I) */
    const unsigned char *mask;   /* (B, T) or NULL */
    const void *h0, *c0;         /* (B, H) or NULL */
    void *y;                     /* element (b, t, u) at y[(b*T + t) * y_ld + y_off + u] */
    ptrdiff_t y_ld, y_off;
    void *h_n, *c_n;             /* (B, H) or NULL */
    const void *rec_mask;        /* (B, H) recurrent dropout multipliers on h_{t-1}, or NULL */
    /* Training record (NULL in inference): per (b, t), in processing order of this direction,
     * gates (B, T, G * Hp) activated gates of valid steps; hs / cs (B, T, Hp) the state after
     * the step (carried through masked steps); ghn (B, T, Hp) GRU reset-after h@U_n + b_hn. */
    void *gates, *hs, *cs, *ghn;
    /* Variant cells only: (B, T, G * Hp) gate pre-activations after the clip, from which the
     * backward pass takes the activations' derivatives. */
    void *pre;
    /* Projection only: (B, T, Hp) m_t = o * act_h(c_t) before the projection; hs then holds
     * h_t with a row stride of Pp. */
    void *ms;
    void *ws;                    /* FR_ALIGN-aligned workspace of dir_workspace_bytes() */
    int num_threads;             /* threads to use (already planned) */
    fr_split split;
    int *team_taken;             /* fr_dir_forward: parts moved to another thread (team.h), or NULL */
    fr_cell_variant var;         /* var.on = 0: the plain cell */
    /* LSTM projection (proj_impl.inc): P > 0 output units, Pp = P padded to a panel;
     * Wp (H, proj_ld); h0 / h_n / y rows hold P units. */
    int P, Pp;
    const void *Wp;
    ptrdiff_t proj_ld;
    double proj_clip;
    /* int8 weights (inference, float32 only): both set, they replace Wx and Wh, and qk's
     * kernels make the products the epilogues consume (forward_impl.inc, qstep / qproject). */
    const fr_qmatrix *qWx, *qWh;
    const fr_qkernels *qk;
} fr_dir_args;

typedef void (*fr_dir_fn)(const fr_dir_args *a);
/* The input projection alone (forward_impl.inc, fr_dir_project). */
typedef void (*fr_dir_project_fn)(const fr_dir_args *a, void *xproj, void *ws);

/* Backward pass of one direction: reads the forward arguments (with their training record)
 * and the output gradients, writes input / initial-state / weight gradients. */
typedef struct fr_dir_bwd_args {
    const fr_dir_args *f;        /* this direction's forward arguments (record included) */
    const void *dy;              /* element (b, t, u) at dy[(b*T + t) * f->y_ld + f->y_off + u] */
    const void *dh_n, *dc_n;     /* (B, H) or NULL = zeros */
    void *dx;                    /* (B, T, I) */
    int dx_accumulate;           /* add into dx (second direction) instead of overwriting */
    const void *in_mask;         /* (B, I) input dropout multipliers or NULL (dx *= m) */
    void *dh0, *dc0;             /* (B, H) or NULL */
    void *dWx, *dWh, *db, *drb;  /* padded canonical, row stride gld; dWx NULL = none */
    void *dpeep;                 /* LSTM peepholes (3 * Hp) or NULL */
    void *dWp;                   /* projection (H, gpld) or NULL */
    ptrdiff_t gpld;
    ptrdiff_t gld;
    void *ws;                    /* FR_ALIGN-aligned, fr_dir_bwd_workspace_bytes() */
    int num_threads;
    fr_split split;
} fr_dir_bwd_args;

typedef void (*fr_dir_bwd_fn)(const fr_dir_bwd_args *a);

/* Workspace of one direction, in order: xproj (B*T*G*Hp), bias_eff (G*Hp), rbias_n (Hp),
 * h double buffer (2*B*Hp), c (B*Hp), z (B*Hp), r*h (B*Hp), recurrent dropout multipliers
 * (B*Hp), dropped-h double buffer (2*B*Hp), packed recurrent weights
 * (G*Hp*H, sized G*Hp*Hp), per-thread tile scratch (threads * fr_tile_scratch_elems), and for
 * masked calls the row order (3*B ints), the valid-step map (B*T) and the gathered valid
 * inputs (B*T*I), then per-thread int8 scratch (fr_qscratch_bytes). Each part starts on an FR_ALIGN boundary. */
static inline size_t fr_round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

/* Per-thread scratch of a forward step: the chunk tile (FR_CHUNK_ROWS rows of G panels), or
 * the products of all gates of up to FR_ROWSTREAM_MAX_ROWS rows (one row of a tiled step, or
 * the rows of a row-streamed one), plus one gathered block. */
static inline size_t fr_tile_scratch_elems(int G, int Hp, size_t panel)
{
    size_t chunk = (size_t)FR_CHUNK_ROWS * G * panel;
    size_t row = (size_t)FR_ROWSTREAM_MAX_ROWS * G * Hp + G * panel;
    return chunk > row ? chunk : row;
}

/* Per-thread scratch of the int8 / bf16 path: FR_QCHUNK rows of quantized activations (the
 * wider of x and h) and their scales, then the products of FR_QSTEP_ROWS rows (all gates) of a
 * step. A step multiplies that many rows per pass over the recurrent weights (forward_impl.inc,
 * qstep), so the weights stream from L2 / L3 once per 16 rows instead of once per 4. */
#define FR_QSTEP_ROWS 16
static inline size_t fr_qscratch_bytes(int I, int Hp)
{
    const int K = I > Hp ? I : Hp;  /* int8: 1 byte per value, bf16: 2 or 4 (fr_qkernels) */
    return fr_round_up((size_t)FR_QCHUNK * (16 * (size_t)fr_qk4(K) + sizeof(float)), FR_ALIGN)
           + fr_round_up((size_t)FR_QSTEP_ROWS * 4 * Hp * sizeof(float), FR_ALIGN);
}

static inline size_t fr_dir_workspace_bytes(size_t elem, int G, int B, int T, int I, int Hp,
                                            int threads)
{
    size_t panel = FR_PANEL_BYTES / elem;
    size_t n = 0;
    n += fr_round_up((size_t)B * T * G * Hp * elem, FR_ALIGN);
    n += fr_round_up((size_t)G * Hp * elem, FR_ALIGN);
    n += fr_round_up((size_t)Hp * elem, FR_ALIGN);
    n += fr_round_up((size_t)2 * B * Hp * elem, FR_ALIGN);
    n += 4 * fr_round_up((size_t)B * Hp * elem, FR_ALIGN);
    n += fr_round_up((size_t)2 * B * Hp * elem, FR_ALIGN);
    n += fr_round_up((size_t)G * Hp * Hp * elem, FR_ALIGN); /* packed recurrent weights */
    n += (size_t)threads * fr_round_up(fr_tile_scratch_elems(G, Hp, panel) * elem, FR_ALIGN);
    n += fr_round_up((size_t)3 * B * sizeof(int), FR_ALIGN);           /* row order (masked) */
    n += fr_round_up((size_t)B * T * sizeof(ptrdiff_t), FR_ALIGN);     /* valid-step map */
    n += fr_round_up((size_t)B * T * I * elem, FR_ALIGN);              /* gathered inputs */
    n += (size_t)threads * fr_qscratch_bytes(I, Hp);                    /* int8 activations */
    return n;
}

/* Workspace of one projection direction (proj_impl.inc): xproj (B*T*G*Hp), bias_eff (G*Hp),
 * rbn (Hp), S (B*G*Hp), M (B*Hp), c (B*Hp), h double buffer (2*B*Pp). */
static inline size_t fr_proj_workspace_bytes(size_t elem, int G, int B, int T, int Hp, int Pp)
{
    size_t n = fr_round_up((size_t)B * T * G * Hp * elem, FR_ALIGN);
    n += fr_round_up((size_t)G * Hp * elem, FR_ALIGN);
    n += fr_round_up((size_t)Hp * elem, FR_ALIGN);
    n += fr_round_up((size_t)B * G * Hp * elem, FR_ALIGN);
    n += 2 * fr_round_up((size_t)B * Hp * elem, FR_ALIGN);
    n += fr_round_up((size_t)2 * B * Pp * elem, FR_ALIGN);
    return n;
}

/* Backward workspace of one projection direction (proj_impl.inc): DP (B*T*G*Hp), DY and DH
 * (B*T*Pp each), XT (I*B*T), HT (Pp*B*T), MT (Hp*B*T), WhT (G*Hp*Pp), WpT (Pp*Hp),
 * WxT (G*Hp*Ip), DXP (B*T*Ip), DM (B*Hp), dh (2*B*Pp), dc (B*Hp), h0p (B*Pp), c0p (B*Hp). */
static inline size_t fr_proj_bwd_workspace_bytes(size_t elem, int G, int B, int T, int I, int Hp,
                                                 int Pp)
{
    const size_t panel = FR_PANEL_BYTES / elem;
    const size_t BT = (size_t)B * T, Ip = fr_round_up((size_t)I, panel);
    size_t n = fr_round_up(BT * G * Hp * elem, FR_ALIGN);
    n += 2 * fr_round_up(BT * Pp * elem, FR_ALIGN);
    n += fr_round_up((size_t)I * BT * elem, FR_ALIGN);
    n += fr_round_up((size_t)Pp * BT * elem, FR_ALIGN);
    n += fr_round_up((size_t)Hp * BT * elem, FR_ALIGN);
    n += fr_round_up((size_t)G * Hp * Pp * elem, FR_ALIGN);
    n += fr_round_up((size_t)Pp * Hp * elem, FR_ALIGN);
    n += fr_round_up((size_t)G * Hp * Ip * elem, FR_ALIGN);
    n += fr_round_up(BT * Ip * elem, FR_ALIGN);
    n += 2 * fr_round_up((size_t)B * Hp * elem, FR_ALIGN);
    n += fr_round_up((size_t)2 * B * Pp * elem, FR_ALIGN);
    n += fr_round_up((size_t)B * Pp * elem, FR_ALIGN);
    n += fr_round_up((size_t)B * Hp * elem, FR_ALIGN);
    return n;
}

/* Backward workspace of one direction, in order: DP (B*T*G*Hp) pre-activation gradients,
 * DPN (B*T*Hp) GRU candidate gradient on the recurrent side, DY (B*T*Hp), XT (I*B*T),
 * HT and RHT (Hp*B*T each), WhT (G*Hp*Hp), WxT (G*Hp*Ip), DXP (B*T*Ip), then six (B*Hp)
 * buffers (h0, c0, dropout multipliers, dh double buffer, dc), drh (B*Hp) and per-thread
 * scratch (threads * FR_MR * panel). Ip = I rounded up to a panel. */
static inline size_t fr_dir_bwd_workspace_bytes(size_t elem, int G, int B, int T, int I, int Hp,
                                                int threads)
{
    size_t panel = FR_PANEL_BYTES / elem;
    size_t BT = (size_t)B * T, Ip = fr_round_up((size_t)I, panel);
    size_t n = 0;
    n += fr_round_up(BT * G * Hp * elem, FR_ALIGN);
    n += 2 * fr_round_up(BT * Hp * elem, FR_ALIGN);
    n += fr_round_up((size_t)I * BT * elem, FR_ALIGN);
    n += 2 * fr_round_up((size_t)Hp * BT * elem, FR_ALIGN);
    n += fr_round_up((size_t)G * Hp * Hp * elem, FR_ALIGN);
    n += fr_round_up((size_t)G * Hp * Ip * elem, FR_ALIGN);
    n += fr_round_up(BT * Ip * elem, FR_ALIGN);
    n += 7 * fr_round_up((size_t)B * Hp * elem, FR_ALIGN);
    n += (size_t)threads * fr_round_up((size_t)2 * FR_MR * panel * elem, FR_ALIGN);
    return n;
}

/* Per-ISA, per-dtype direction kernels (defined in kernels_<isa>.c). */
void fr_dir_forward_f32_baseline(const fr_dir_args *a);
void fr_dir_forward_proj_f32_baseline(const fr_dir_args *a);
void fr_dir_project_f32_baseline(const fr_dir_args *a, void *xproj, void *ws);
void fr_dir_forward_f64_baseline(const fr_dir_args *a);
void fr_dir_forward_proj_f64_baseline(const fr_dir_args *a);
void fr_dir_project_f64_baseline(const fr_dir_args *a, void *xproj, void *ws);
void fr_dir_backward_f32_baseline(const fr_dir_bwd_args *a);
void fr_dir_backward_proj_f32_baseline(const fr_dir_bwd_args *a);
void fr_dir_backward_f64_baseline(const fr_dir_bwd_args *a);
void fr_dir_backward_proj_f64_baseline(const fr_dir_bwd_args *a);
#if defined(__x86_64__) || defined(_M_X64)
#define FR_HAVE_AVX2_BUILD 1
void fr_dir_forward_f32_avx2(const fr_dir_args *a);
void fr_dir_forward_proj_f32_avx2(const fr_dir_args *a);
void fr_dir_project_f32_avx2(const fr_dir_args *a, void *xproj, void *ws);
void fr_dir_forward_f64_avx2(const fr_dir_args *a);
void fr_dir_forward_proj_f64_avx2(const fr_dir_args *a);
void fr_dir_project_f64_avx2(const fr_dir_args *a, void *xproj, void *ws);
void fr_dir_backward_f32_avx2(const fr_dir_bwd_args *a);
void fr_dir_backward_proj_f32_avx2(const fr_dir_bwd_args *a);
void fr_dir_backward_f64_avx2(const fr_dir_bwd_args *a);
void fr_dir_backward_proj_f64_avx2(const fr_dir_bwd_args *a);
/* AVX-512: the same sources, whose micro-kernels then hold a whole panel in one register. */
#define FR_HAVE_AVX512_BUILD 1
void fr_dir_forward_f32_avx512(const fr_dir_args *a);
void fr_dir_forward_proj_f32_avx512(const fr_dir_args *a);
void fr_dir_project_f32_avx512(const fr_dir_args *a, void *xproj, void *ws);
void fr_dir_forward_f64_avx512(const fr_dir_args *a);
void fr_dir_forward_proj_f64_avx512(const fr_dir_args *a);
void fr_dir_project_f64_avx512(const fr_dir_args *a, void *xproj, void *ws);
void fr_dir_backward_f32_avx512(const fr_dir_bwd_args *a);
void fr_dir_backward_proj_f32_avx512(const fr_dir_bwd_args *a);
void fr_dir_backward_f64_avx512(const fr_dir_bwd_args *a);
void fr_dir_backward_proj_f64_avx512(const fr_dir_bwd_args *a);
#endif

/* FP32 FMA peak loops (peak_impl.inc, instantiated per ISA like the kernels). */
double fr_fma_peak_gflops_baseline(int nthreads, double seconds);
#ifdef FR_HAVE_AVX2_BUILD
double fr_fma_peak_gflops_avx2(int nthreads, double seconds);
#endif
#ifdef FR_HAVE_AVX512_BUILD
double fr_fma_peak_gflops_avx512(int nthreads, double seconds);
#endif

/* ---- streaming step kernels (stream_impl.inc, compiled per ISA like the forward kernels) ---- */

/* One layer of one step for rows [0, B). Input row b at x + b * x_ld (I elements read);
 * h rows, c, z, rh and xn have row stride Hp. bias and rbias never NULL (zeros substituted);
 * has_rbias says whether the layer really has recurrent biases (the fold then adds them,
 * exactly as the forward kernels build their effective bias). */
typedef struct fr_step_args {
    fr_cell cell;
    int reset_after;
    int B, I, H, Hp;
    const void *Wx, *Wh;
    ptrdiff_t ld;
    const void *Whp;             /* Wh packed once (fr_pack_recurrent) or NULL */
    const void *bias, *rbias;
    int has_rbias;
    const void *x;
    ptrdiff_t x_ld;
    const void *hprev;
    void *hnew, *c;
    void *z, *rh, *xn;           /* GRU reset-before scratch */
    /* NULL, or the input projection made beforehand (fr_dir_project: effective bias + x @ Wx,
     * G * Hp per row, row b at xproj + b * xproj_ld elements); x and Wx are then not read. */
    const void *xproj;
    ptrdiff_t xproj_ld;
    fr_cell_variant var;         /* var.on = 0: the plain cell */
    /* LSTM projection (P > 0): h has P units, hprev / hnew rows are h_ld apart (>= Pp; Hp
     * otherwise), m (B rows of Hp) is scratch for o * act_h(c); Wp (H, proj_ld). */
    int P;
    ptrdiff_t h_ld;
    const void *Wp;
    ptrdiff_t proj_ld;
    double proj_clip;
    void *m;
} fr_step_args;

typedef void (*fr_step_fn)(const fr_step_args *a);

void fr_step_layer_f32_baseline(const fr_step_args *a);
void fr_step_layer_f64_baseline(const fr_step_args *a);
#ifdef FR_HAVE_AVX2_BUILD
void fr_step_layer_f32_avx2(const fr_step_args *a);
void fr_step_layer_f64_avx2(const fr_step_args *a);
#endif

/* The kernels of one (ISA, dtype): chosen once per call by fr_kernels_for (fastrnn.c) from the
 * ISA selected now (an atomic load, so fr_set_isa applies to the next call). */
typedef struct fr_kernels {
    fr_dir_fn forward;
    fr_dir_fn forward_proj;
    fr_dir_project_fn project;
    fr_dir_bwd_fn backward;
    fr_dir_bwd_fn backward_proj;
    fr_step_fn step;
} fr_kernels;

const fr_kernels *fr_kernels_for(fr_dtype dtype);

#endif /* FASTRNN_INTERNAL_H */
