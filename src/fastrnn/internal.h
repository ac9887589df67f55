/* fastrnn internals shared by the dispatcher and the per-ISA kernel objects. Not installed. */
#ifndef FASTRNN_INTERNAL_H
#define FASTRNN_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include "fastrnn.h"

/* SIMD panel: every micro-kernel works on 32-byte vectors, two per panel. */
#define FR_VEC_BYTES 32
#define FR_PANEL_BYTES (2 * FR_VEC_BYTES)
#define FR_MR 6             /* rows per micro-tile */
#define FR_ALIGN 64
#define FR_PACK_MIN_STEPS 8  /* sequences at least this long get a packed recurrent matrix */

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
    const void *bias, *rbias;    /* G * Hp or NULL */
    const void *x;               /* (B, T, I) */
    const unsigned char *mask;   /* (B, T) or NULL */
    const void *h0, *c0;         /* (B, H) or NULL */
    void *y;                     /* element (b, t, u) at y[(b*T + t) * y_ld + y_off + u] */
    ptrdiff_t y_ld, y_off;
    void *h_n, *c_n;             /* (B, H) or NULL */
    void *gates;                 /* training record (B, T, G * Hp) activated gates, or NULL */
    void *ws;                    /* FR_ALIGN-aligned workspace of dir_workspace_bytes() */
    int num_threads;             /* threads to use (already planned) */
    fr_split split;
} fr_dir_args;

typedef void (*fr_dir_fn)(const fr_dir_args *a);

/* Workspace of one direction, in order: xproj (B*T*G*Hp), bias_eff (G*Hp), rbias_n (Hp),
 * h double buffer (2*B*Hp), c (B*Hp), z (B*Hp), r*h (B*Hp), packed recurrent weights
 * (G*Hp*H, sized G*Hp*Hp), per-thread tile scratch
 * (threads * FR_MR * G * panel). Each part starts on an FR_ALIGN boundary. */
static inline size_t fr_round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

static inline size_t fr_dir_workspace_bytes(size_t elem, int G, int B, int T, int Hp,
                                            int threads)
{
    size_t panel = FR_PANEL_BYTES / elem;
    size_t n = 0;
    n += fr_round_up((size_t)B * T * G * Hp * elem, FR_ALIGN);
    n += fr_round_up((size_t)G * Hp * elem, FR_ALIGN);
    n += fr_round_up((size_t)Hp * elem, FR_ALIGN);
    n += fr_round_up((size_t)2 * B * Hp * elem, FR_ALIGN);
    n += 3 * fr_round_up((size_t)B * Hp * elem, FR_ALIGN);
    n += fr_round_up((size_t)G * Hp * Hp * elem, FR_ALIGN); /* packed recurrent weights */
    n += (size_t)threads * fr_round_up((size_t)FR_MR * G * panel * elem, FR_ALIGN);
    return n;
}

/* Per-ISA, per-dtype direction kernels (defined in kernels_<isa>.c). */
void fr_dir_forward_f32_baseline(const fr_dir_args *a);
void fr_dir_forward_f64_baseline(const fr_dir_args *a);
#if defined(__x86_64__) || defined(_M_X64)
#define FR_HAVE_AVX2_BUILD 1
void fr_dir_forward_f32_avx2(const fr_dir_args *a);
void fr_dir_forward_f64_avx2(const fr_dir_args *a);
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
    const void *bias, *rbias;
    int has_rbias;
    const void *x;
    ptrdiff_t x_ld;
    const void *hprev;
    void *hnew, *c;
    void *z, *rh, *xn;           /* GRU reset-before scratch */
} fr_step_args;

typedef void (*fr_step_fn)(const fr_step_args *a);

void fr_step_layer_f32_baseline(const fr_step_args *a);
void fr_step_layer_f64_baseline(const fr_step_args *a);
#ifdef FR_HAVE_AVX2_BUILD
void fr_step_layer_f32_avx2(const fr_step_args *a);
void fr_step_layer_f64_avx2(const fr_step_args *a);
#endif

#endif /* FASTRNN_INTERNAL_H */
