/* fastrnn public entry points: validation, kernel-variant dispatch, thread planning. */
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "internal.h"

/* ---- instruction-set dispatch ---- */

static int cpu_has_avx2_fma(void)
{
#if defined(FR_HAVE_AVX2_BUILD) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

/* The OS must also save the zmm state: gcc's and clang's checks read XCR0 for that. */
static int cpu_has_avx512(void)
{
#if defined(FR_HAVE_AVX512_BUILD) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    return cpu_has_avx2_fma() && __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512vl");
#else
    return 0;
#endif
}

#if defined(FR_HAVE_AVX2_BUILD) && !defined(FR_STREAM_ONLY)  /* x86 int8 / bf16 (qkernel_table) */
/* int8 dot products on 512-bit vectors (vpdpbusd); the AVX-512 kernels' checks plus VNNI/BW. */
static int cpu_has_avx512vnni(void)
{
#if defined(FR_HAVE_AVX512_BUILD) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    return cpu_has_avx512() && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vnni");
#else
    return 0;
#endif
}

/* VEX-encoded int8 dot products on 256-bit vectors. */
static int cpu_has_avxvnni(void)
{
#if defined(FR_HAVE_AVX2_BUILD) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    return cpu_has_avx2_fma() && __builtin_cpu_supports("avxvnni");
#else
    return 0;
#endif
}

/* bfloat16 dot products on 512-bit vectors (vdpbf16ps). */
static int cpu_has_avx512bf16(void)
{
#if defined(FR_HAVE_AVX512_BUILD) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    return cpu_has_avx512() && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512bf16");
#else
    return 0;
#endif
}
#endif

#if defined(FR_HAVE_NEONDOT_BUILD) && !defined(FR_STREAM_ONLY)
#if defined(__linux__)
#include <sys/auxv.h>
#endif
/* AArch64 int8 dot products (ARMv8.2 sdot): the kernel's HWCAP bit on Linux; elsewhere (no
 * portable query) the baseline int8 kernel, which gives the same results. */
static int cpu_has_neondot(void)
{
#if defined(__linux__)
    return (getauxval(AT_HWCAP) & (1UL << 20)) != 0;  /* HWCAP_ASIMDDP */
#else
    return 0;
#endif
}
#endif

/* -1 = not chosen yet. Chosen lazily on first use (every racing first caller computes the
 * same value) or by fr_set_isa; atomic so concurrent callers never race. */
static _Atomic int g_isa = -1;

int fr_isa_available(fr_isa isa)
{
    if (isa == FR_ISA_BASELINE) return 1;
    if (isa == FR_ISA_AVX2) return cpu_has_avx2_fma();
    if (isa == FR_ISA_AVX512) return cpu_has_avx512();
    return 0;
}

fr_isa fr_get_isa(void)
{
    int isa = atomic_load_explicit(&g_isa, memory_order_relaxed);
    if (isa < 0) {
        const char *env = getenv("FASTRNN_ISA");
        for (int i = FR_ISA_COUNT - 1; i >= 0; i--) {  /* the widest available by default */
            if (!fr_isa_available((fr_isa)i)) continue;
            if (isa < 0) isa = i;
            if (env && strcmp(env, fr_isa_name((fr_isa)i)) == 0) { isa = i; break; }
        }
        atomic_store_explicit(&g_isa, isa, memory_order_relaxed);
    }
    return (fr_isa)isa;
}

int fr_set_isa(fr_isa isa)
{
    if (!fr_isa_available(isa)) return FR_EUNSUPPORTED;
    atomic_store_explicit(&g_isa, (int)isa, memory_order_relaxed);
    return FR_OK;
}

const char *fr_isa_name(fr_isa isa)
{
    switch (isa) {
    case FR_ISA_BASELINE: return "baseline";
    case FR_ISA_AVX2: return "avx2";
    case FR_ISA_AVX512: return "avx512";
    }
    return "unknown";
}

int fr_openmp_enabled(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

/* Kernel tables: forward, forward_proj, project, backward, backward_proj, step. Minimal builds
 * (src/Makefile FLOAT64=0, STREAM_ONLY=1) leave out entries as NULL; check_desc and the entry
 * points refuse those calls (FR_EUNSUPPORTED) before any table is read. */
#ifdef FR_STREAM_ONLY
#define FR_SEQ_KERNELS(t, isa) NULL, NULL, NULL, NULL, NULL
#else
#define FR_SEQ_KERNELS(t, isa)                                                                 \
    fr_dir_forward_##t##_##isa, fr_dir_forward_proj_##t##_##isa, fr_dir_project_##t##_##isa,   \
        fr_dir_backward_##t##_##isa, fr_dir_backward_proj_##t##_##isa
#endif
#ifdef FR_NO_FLOAT64
#define FR_KERNEL_TABLE(isa, step_isa)                                                         \
    {{FR_SEQ_KERNELS(f32, isa), fr_step_layer_f32_##step_isa}, {NULL, NULL, NULL, NULL, NULL, NULL}}
#else
#define FR_KERNEL_TABLE(isa, step_isa)                                                         \
    {{FR_SEQ_KERNELS(f32, isa), fr_step_layer_f32_##step_isa},                                 \
     {FR_SEQ_KERNELS(f64, isa), fr_step_layer_f64_##step_isa}}
#endif

const fr_kernels *fr_kernels_for(fr_dtype dtype)
{
    static const fr_kernels baseline[2] = FR_KERNEL_TABLE(baseline, baseline);
#ifdef FR_HAVE_AVX2_BUILD
    static const fr_kernels avx2[2] = FR_KERNEL_TABLE(avx2, avx2);
    if (fr_get_isa() == FR_ISA_AVX2) return &avx2[dtype == FR_FLOAT64];
#endif
#ifdef FR_HAVE_AVX512_BUILD
    /* The streaming step keeps the AVX2 kernels: its blocks are often half a panel wide, and
     * the wider registers measured no faster there. */
    static const fr_kernels avx512[2] = FR_KERNEL_TABLE(avx512, avx2);
    if (fr_get_isa() == FR_ISA_AVX512) return &avx512[dtype == FR_FLOAT64];
#endif
    return &baseline[dtype == FR_FLOAT64];
}

/* The int8 kernel of the selected ISA: VNNI where AVX-512 is selected and the CPU has it,
 * the AVX2 one for AVX2 (and AVX-512 without VNNI), else the portable one. All return the
 * same integers and the same float products. */
/* The reduced-precision kernels, best first per format; an entry is usable when its CPU check
 * passes and the selected ISA (fr_get_isa) is at least its level. */
typedef struct qkernel_entry {
    fr_qkernels k;
    int format;
    fr_isa level;
    int (*cpu_ok)(void);
} qkernel_entry;

#ifndef FR_STREAM_ONLY
static int always(void) { return 1; }
#endif

static const qkernel_entry *qkernel_table(size_t *n)
{
#ifdef FR_STREAM_ONLY  /* no reduced-precision kernels in this build */
    *n = 0;
    return NULL;
#else
    static const qkernel_entry table[] = {
#ifdef FR_HAVE_AVX2_BUILD
        {{"int8-avx512vnni", fr_qgemm_int8_avx512vnni, fr_quantize_rows_u8_avx512vnni, 4, 1},
         FR_WEIGHTS_INT8, FR_ISA_AVX512, cpu_has_avx512vnni},
        {{"int8-avxvnni", fr_qgemm_int8_avxvnni, fr_quantize_rows_u8_avxvnni, 4, 1},
         FR_WEIGHTS_INT8, FR_ISA_AVX2, cpu_has_avxvnni},
        {{"int8-avx2", fr_qgemm_int8_avx2, fr_quantize_rows_u8_avx2, 4, 1}, FR_WEIGHTS_INT8,
         FR_ISA_AVX2, cpu_has_avx2_fma},
        {{"bf16-avx512", fr_qgemm_bf16_avx512bf16, fr_round_rows_bf16_avx512bf16, 2, 2},
         FR_WEIGHTS_BF16, FR_ISA_AVX512, cpu_has_avx512bf16},
        {{"bf16-avx2", fr_qgemm_bf16_avx2, fr_round_rows_bf16_f32_avx2, 2, 4}, FR_WEIGHTS_BF16,
         FR_ISA_AVX2, cpu_has_avx2_fma},
#endif
#ifdef FR_HAVE_NEONDOT_BUILD
        {{"int8-neondot", fr_qgemm_int8_neondot, fr_quantize_rows_u8_baseline, 4, 1},
         FR_WEIGHTS_INT8, FR_ISA_BASELINE, cpu_has_neondot},
#endif
        {{"int8-baseline", fr_qgemm_int8_baseline, fr_quantize_rows_u8_baseline, 4, 1},
         FR_WEIGHTS_INT8, FR_ISA_BASELINE, always},
        {{"bf16-baseline", fr_qgemm_bf16_baseline, fr_round_rows_bf16_baseline, 2, 2},
         FR_WEIGHTS_BF16, FR_ISA_BASELINE, always},
    };
    *n = sizeof table / sizeof table[0];
    return table;
#endif
}

/* The best variant of a format at the selected ISA: VNNI / BF16 where AVX-512 is selected and
 * the CPU has them, else AVX-VNNI (int8) where the CPU has it, else the AVX2 one, else the
 * portable one.
 * Every int8 variant returns the same integers and products; see fastrnn.h for bf16. */
const fr_qkernels *fr_qkernels_current(int weight_format)
{
    size_t n;
    const qkernel_entry *t = qkernel_table(&n);
    const fr_isa isa = fr_get_isa();
    for (size_t i = 0; i < n; i++)
        if (t[i].format == weight_format && (int)isa >= (int)t[i].level && t[i].cpu_ok())
            return &t[i].k;
    return NULL;
}

const fr_qkernels *fr_qkernels_by_name(const char *name)
{
    size_t n;
    const qkernel_entry *t = qkernel_table(&n);
    for (size_t i = 0; name && i < n; i++)
        if (strcmp(name, t[i].k.name) == 0) return t[i].cpu_ok() ? &t[i].k : NULL;
    return NULL;
}

const char *fr_int8_kernel_name(void)
{
    const fr_qkernels *k = fr_qkernels_current(FR_WEIGHTS_INT8);
    return k ? k->name : "none";  /* none: a stream-only build */
}
const char *fr_bf16_kernel_name(void)
{
    const fr_qkernels *k = fr_qkernels_current(FR_WEIGHTS_BF16);
    return k ? k->name : "none";
}

/* ---- layout helpers ---- */

static size_t elem_size(fr_dtype dtype) { return dtype == FR_FLOAT64 ? 8 : 4; }

int fr_num_gates(fr_cell cell) { return cell == FR_LSTM ? 4 : 3; }

int fr_gate_stride(fr_dtype dtype, int hidden_size)
{
    int nr = (int)(FR_PANEL_BYTES / elem_size(dtype));
    return (hidden_size + nr - 1) / nr * nr;
}

ptrdiff_t fr_recommended_ld(fr_cell cell, fr_dtype dtype, int hidden_size)
{
    size_t e = elem_size(dtype);
    ptrdiff_t ld = (ptrdiff_t)fr_num_gates(cell) * fr_gate_stride(dtype, hidden_size);
    /* An odd number of cache lines per row makes the rows of a column panel fall into
     * different cache sets instead of fighting over one. */
    size_t line = 64 / e;
    if ((ld / line) % 2 == 0) ld += line;
    return ld;
}

int fr_pack_weights(fr_cell cell, fr_dtype dtype, int hidden_size, int rows, const void *src,
                    void *dst, ptrdiff_t ld)
{
    int G = fr_num_gates(cell), Hp = fr_gate_stride(dtype, hidden_size);
    size_t e = elem_size(dtype);
    if (!src || !dst || hidden_size < 1 || rows < 1 || ld < (ptrdiff_t)G * Hp) return FR_EINVAL;
    for (int r = 0; r < rows; r++) {
        char *d = (char *)dst + (size_t)r * ld * e;
        memset(d, 0, (size_t)ld * e);
        for (int g = 0; g < G; g++)
            memcpy(d + (size_t)g * Hp * e,
                   (const char *)src + ((size_t)r * G * hidden_size + (size_t)g * hidden_size) * e,
                   (size_t)hidden_size * e);
    }
    return FR_OK;
}

size_t fr_packed_recurrent_size(const fr_layer_desc *d)
{
    /* fr_workspace_size is 0 exactly when the descriptor is invalid */
    if (fr_workspace_size(d, 1, 1, 1) == 0 || d->proj_size > 0 || d->weight_format) return 0;
    const size_t Hp = (size_t)fr_gate_stride(d->dtype, d->hidden_size);
    return (size_t)fr_num_gates(d->cell) * Hp * (size_t)d->hidden_size * elem_size(d->dtype);
}

int fr_pack_recurrent(const fr_layer_desc *d, const fr_weights *w, void *dst)
{
    if (!fr_packed_recurrent_size(d) || !w || !w->recurrent || !dst) return FR_EINVAL;
    const int G = fr_num_gates(d->cell), H = d->hidden_size;
    const int Hp = fr_gate_stride(d->dtype, H);
    if (w->ld < (ptrdiff_t)G * Hp) return FR_EINVAL;
    const size_t e = elem_size(d->dtype), nr = FR_PANEL_BYTES / e;
    const char *src = (const char *)w->recurrent;
    char *out = (char *)dst;
    /* [block j][gate g][row k][nr units]: forward_impl.inc's per-call packing, done once */
    for (size_t j = 0; j < (size_t)Hp / nr; j++)
        for (int g = 0; g < G; g++)
            for (int k = 0; k < H; k++) {
                memcpy(out, src + ((size_t)k * w->ld + (size_t)g * Hp + j * nr) * e, nr * e);
                out += nr * e;
            }
    return FR_OK;
}

/* ---- thread planning ---- */

/* Work below this many multiply-adds per step and thread is not worth a barrier (~1 us). */
#define FR_MIN_MACS_PER_THREAD 32768

static int plan_threads(const fr_layer_desc *d, int B, int requested, fr_split *split)
{
    int G = fr_num_gates(d->cell), H = d->hidden_size;
    int nblocks = fr_gate_stride(d->dtype, H) / (int)(FR_PANEL_BYTES / elem_size(d->dtype));
    double macs = (double)B * G * H * ((double)H + d->input_size);
    int nt = requested < 1 ? 1 : requested > FR_MAX_THREADS ? FR_MAX_THREADS : requested;
#ifndef _OPENMP
    nt = 1;
#endif
    *split = FR_SPLIT_ROWS;
    if (nt == 1) return 1;
    while (nt > 1 && macs / nt < FR_MIN_MACS_PER_THREAD) nt--;
    if (nt == 1) return 1;
    if (B >= 4 * nt) return nt;           /* enough rows: each thread owns a row block */
    *split = FR_SPLIT_HIDDEN;
    if (nt > nblocks) nt = nblocks;
    return nt < 1 ? 1 : nt;
}

/* ---- sharing busy cores (fastrnn.h: fr_get_contention; team.h) ---- */

#define FR_BACKOFF_FIRST 4    /* calls under the cap the first time */
#define FR_BACKOFF_MAX 256
/* Contended calls in a row before a cap: one alone is as likely an interrupt or a short burst
 * of another thread (measured: a plain spinner on the other core stalled 4-7 of 60 short
 * 2-thread calls, and the other 53-56 still ran 1.4-1.9x faster than one thread). */
#define FR_CAP_AFTER 2

static _Atomic long long g_calls, g_contended, g_capped;
static _Atomic int g_cap_threads, g_cap_calls, g_backoff = FR_BACKOFF_FIRST, g_streak;
static _Atomic int g_last_threads, g_last_taken;

/* The threads a forward call may use now: fewer while a cap is in force. */
static int contention_threads(int nt)
{
    const int cap = atomic_load(&g_cap_threads);
    if (nt <= 1 || cap <= 0 || cap >= nt) return nt;
    if (atomic_fetch_sub(&g_cap_calls, 1) > 0) {
        atomic_fetch_add(&g_capped, 1);
        return cap;
    }
    atomic_store(&g_cap_threads, 0);  /* the cap ran out: try every thread again */
    return nt;
}

/* After a forward call on `threads` threads in which `taken` parts moved to another thread
 * (-1: not a team call). */
static void contention_report(int threads, int taken)
{
    atomic_store(&g_last_threads, threads);
    atomic_store(&g_last_taken, taken > 0 ? taken : 0);
    if (threads <= 1 || taken < 0) return;
    atomic_fetch_add(&g_calls, 1);
    if (taken > 0) {
        atomic_fetch_add(&g_contended, 1);
        if (atomic_fetch_add(&g_streak, 1) + 1 < FR_CAP_AFTER) return;
        const int backoff = atomic_load(&g_backoff);
        atomic_store(&g_cap_calls, backoff);
        atomic_store(&g_cap_threads, threads - taken < 1 ? 1 : threads - taken);
        atomic_store(&g_backoff, backoff * 2 > FR_BACKOFF_MAX ? FR_BACKOFF_MAX : backoff * 2);
    } else if (atomic_load(&g_cap_threads) == 0) {
        atomic_store(&g_streak, 0);  /* every thread kept up: start over */
        atomic_store(&g_backoff, FR_BACKOFF_FIRST);
    }
}

void fr_get_contention(fr_contention *out)
{
    if (!out) return;
    out->calls = atomic_load(&g_calls);
    out->contended = atomic_load(&g_contended);
    out->capped = atomic_load(&g_capped);
    out->cap_threads = atomic_load(&g_cap_threads);
    out->cap_calls = out->cap_threads ? atomic_load(&g_cap_calls) : 0;
    if (out->cap_calls < 0) out->cap_calls = 0;
    out->last_threads = atomic_load(&g_last_threads);
    out->last_taken = atomic_load(&g_last_taken);
}

void fr_reset_contention(void)
{
    atomic_store(&g_cap_threads, 0);
    atomic_store(&g_cap_calls, 0);
    atomic_store(&g_backoff, FR_BACKOFF_FIRST);
    atomic_store(&g_streak, 0);
    atomic_store(&g_calls, 0);
    atomic_store(&g_contended, 0);
    atomic_store(&g_capped, 0);
    atomic_store(&g_last_threads, 0);
    atomic_store(&g_last_taken, 0);
}

/* A member late by less than this is noise (an interrupt, a hypervisor tick), not a busy core:
 * a core shared with a spinning thread is lost for slices of about a millisecond. */
#define FR_TEAM_PATIENCE_NS 250000
static _Atomic long long g_patience_ns = FR_TEAM_PATIENCE_NS;

long long fr_team_patience_ns(void)
{
    return atomic_load_explicit(&g_patience_ns, memory_order_relaxed);
}

void fr_debug_patience(int usec)
{
    atomic_store(&g_patience_ns, usec > 0 ? (long long)usec * 1000 : FR_TEAM_PATIENCE_NS);
}

static _Atomic int g_delay_thread = -1, g_delay_unit, g_delay_usec, g_delay_busy;

void fr_debug_delay(int thread, int unit, int usec, int busy)
{
    atomic_store(&g_delay_unit, unit);
    atomic_store(&g_delay_usec, usec);
    atomic_store(&g_delay_busy, busy != 0);
    atomic_store(&g_delay_thread, usec > 0 ? thread : -1);
}

int fr_debug_delay_pending(void)
{
    return atomic_load(&g_delay_thread) >= 0;
}

/* team.h: the armed delay for this thread and unit, once (0: none). */
int fr_debug_delay_for(int thread, int unit, int busy)
{
    int armed = atomic_load_explicit(&g_delay_thread, memory_order_relaxed);
    if (armed < 0 || armed != thread || atomic_load(&g_delay_unit) != unit
        || atomic_load(&g_delay_busy) != busy)
        return 0;
    if (!atomic_compare_exchange_strong(&g_delay_thread, &armed, -1)) return 0;
    return atomic_load(&g_delay_usec);
}

/* ---- cell variants ---- */

static int check_activation(const fr_activation *f)
{
    if ((int)f->kind < 0 || (int)f->kind >= FR_ACT_COUNT) return 0;
    return f->alpha == f->alpha && f->beta == f->beta;  /* not NaN */
}

int fr_desc_is_variant(const fr_layer_desc *d)
{
    static const fr_act_kind plain[3] = {FR_ACT_SIGMOID, FR_ACT_TANH, FR_ACT_TANH};
    if (d->clip != 0 || d->cell_clip != 0 || d->peepholes || d->input_forget || d->proj_size)
        return 1;
    for (int dir = 0; dir < 2; dir++)
        for (int k = 0; k < 3; k++) {
            const fr_act_kind kind = d->act[dir][k].kind;
            if (kind != FR_ACT_DEFAULT && kind != plain[k]) return 1;
        }
    return 0;
}

void fr_cell_variant_of(const fr_layer_desc *d, const fr_weights *w, int dir,
                        fr_cell_variant *v)
{
    static const fr_act_kind plain[3] = {FR_ACT_SIGMOID, FR_ACT_TANH, FR_ACT_TANH};
    memset(v, 0, sizeof *v);
    v->on = fr_desc_is_variant(d);
    if (!v->on) return;
    for (int k = 0; k < 3; k++) {
        v->act[k] = d->act[dir][k];
        if (v->act[k].kind == FR_ACT_DEFAULT) v->act[k].kind = plain[k];
    }
    v->clip = d->clip;
    v->cell_clip = d->cell == FR_LSTM ? d->cell_clip : 0;
    v->input_forget = d->cell == FR_LSTM && d->input_forget;
    v->peephole = d->cell == FR_LSTM && d->peepholes ? w[dir].peephole : NULL;
}

/* ---- validation and the layer entry point ---- */

static int check_desc(const fr_layer_desc *d)
{
    if (!d) return FR_EINVAL;
    if (d->cell != FR_LSTM && d->cell != FR_GRU) return FR_EINVAL;
    if (d->dtype != FR_FLOAT32 && d->dtype != FR_FLOAT64) return FR_EINVAL;
#ifdef FR_NO_FLOAT64
    if (d->dtype == FR_FLOAT64) return FR_EUNSUPPORTED;  /* built without (make FLOAT64=0) */
#endif
    if (d->input_size < 1 || d->hidden_size < 1) return FR_EINVAL;
    if (d->num_directions != 1 && d->num_directions != 2) return FR_EINVAL;
    if (d->reverse && d->num_directions != 1) return FR_EINVAL;
    if (d->masked_output != FR_MASKED_ZERO && d->masked_output != FR_MASKED_CARRY)
        return FR_EINVAL;
    for (int dir = 0; dir < 2; dir++)
        for (int k = 0; k < 3; k++)
            if (!check_activation(&d->act[dir][k])) return FR_EINVAL;
    if (!(d->clip >= 0) || !(d->cell_clip >= 0)) return FR_EINVAL;  /* NaN fails too */
    if (d->cell != FR_LSTM && (d->cell_clip != 0 || d->peepholes || d->input_forget))
        return FR_EINVAL;
    if (d->proj_size < 0 || (d->proj_size > 0 && d->cell != FR_LSTM)) return FR_EINVAL;
    if (!(d->proj_clip >= 0) || (d->proj_clip > 0 && d->proj_size == 0)) return FR_EINVAL;
    if (d->weight_format < FR_WEIGHTS_FLOAT || d->weight_format > FR_WEIGHTS_BF16)
        return FR_EINVAL;
    return FR_OK;
}

/* Units of h (the output, the recurrence's input): proj_size with a projection, else H. */
static int out_units(const fr_layer_desc *d)
{
    return d->proj_size > 0 ? d->proj_size : d->hidden_size;
}

size_t fr_workspace_size(const fr_layer_desc *d, int batch, int time, int num_threads)
{
    if (check_desc(d) != FR_OK || batch < 1 || time < 1) return 0;
    int nt = num_threads < 1 ? 1 : num_threads;
    size_t e = elem_size(d->dtype);
    if (d->proj_size > 0)
        return FR_ALIGN + fr_proj_workspace_bytes(e, fr_num_gates(d->cell), batch, time,
                                                  fr_gate_stride(d->dtype, d->hidden_size),
                                                  fr_gate_stride(d->dtype, d->proj_size));
    return FR_ALIGN + fr_dir_workspace_bytes(e, fr_num_gates(d->cell), batch, time,
                                             d->input_size,
                                             fr_gate_stride(d->dtype, d->hidden_size), nt);
}

/* Bytes of one direction's training record (layout in internal.h, fr_dir_args), plus the
 * dropped input when there is input dropout. */
static size_t record_dir_bytes(const fr_layer_desc *d, int B, int T, int input_dropout)
{
    size_t e = elem_size(d->dtype), bt = (size_t)B * T;
    size_t Hp = (size_t)fr_gate_stride(d->dtype, d->hidden_size);
    if (d->proj_size > 0) {  /* gates, pre-activations, c, m (Hp), h (Pp) */
        size_t Pp = (size_t)fr_gate_stride(d->dtype, d->proj_size);
        size_t n = 2 * fr_round_up(bt * (size_t)fr_num_gates(d->cell) * Hp * e, FR_ALIGN)
                   + 2 * fr_round_up(bt * Hp * e, FR_ALIGN) + fr_round_up(bt * Pp * e, FR_ALIGN);
        if (input_dropout) n += fr_round_up(bt * (size_t)d->input_size * e, FR_ALIGN);
        return n;
    }
    size_t state = fr_round_up(bt * Hp * e, FR_ALIGN);
    size_t n = fr_round_up(bt * (size_t)fr_num_gates(d->cell) * Hp * e, FR_ALIGN) + state;
    if (d->cell == FR_LSTM) n += state;                   /* cell states */
    if (d->cell == FR_GRU && d->reset_after) n += state;  /* h @ U_n + b_hn */
    if (fr_desc_is_variant(d))                             /* gate pre-activations */
        n += fr_round_up(bt * (size_t)fr_num_gates(d->cell) * Hp * e, FR_ALIGN);
    if (input_dropout) n += fr_round_up(bt * (size_t)d->input_size * e, FR_ALIGN);
    return n;
}

size_t fr_record_size(const fr_layer_desc *d, int batch, int time, int input_dropout)
{
    if (check_desc(d) != FR_OK || batch < 1 || time < 1) return 0;
    return FR_ALIGN + (size_t)d->num_directions * record_dir_bytes(d, batch, time,
                                                                    input_dropout != 0);
}

static void *align_up(void *p)
{
    return (void *)(((uintptr_t)p + FR_ALIGN - 1) & ~(uintptr_t)(FR_ALIGN - 1));
}

/* The forward arguments of one direction; the record parts when training. */
static void dir_args(const fr_layer_desc *d, const fr_weights *w, const fr_io *io,
                     const fr_train *tr, int dir, int threads, fr_split split, fr_dir_args *a)
{
    const int G = fr_num_gates(d->cell), H = d->hidden_size, P = out_units(d);
    const size_t e = elem_size(d->dtype);
    const size_t state = (size_t)io->batch * H * e, hstate = (size_t)io->batch * P * e;
    memset(a, 0, sizeof *a);
    a->cell = d->cell;
    a->reset_after = d->reset_after;
    a->B = io->batch;
    a->T = io->time;
    a->I = d->input_size;
    a->H = H;
    a->Hp = fr_gate_stride(d->dtype, H);
    a->G = G;
    a->backward = dir == 1 || d->reverse;
    a->masked_output = d->masked_output;
    a->Wx = w[dir].kernel;
    a->Wh = w[dir].recurrent;
    a->ld = w[dir].ld;
    a->Whp = d->packed_recurrent && !d->proj_size && !d->weight_format
             ? w[dir].recurrent_packed : NULL;
    a->bias = w[dir].bias;
    a->rbias = d->cell == FR_GRU ? w[dir].recurrent_bias : NULL;
    a->x = io->x;
    a->mask = io->mask;
    a->h0 = io->h0 ? (const char *)io->h0 + dir * hstate : NULL;
    a->c0 = io->c0 ? (const char *)io->c0 + dir * state : NULL;
    a->y = io->y;
    a->y_ld = (ptrdiff_t)d->num_directions * P;
    a->y_off = (ptrdiff_t)dir * P;
    a->h_n = io->h_n ? (char *)io->h_n + dir * hstate : NULL;
    a->c_n = io->c_n ? (char *)io->c_n + dir * state : NULL;
    a->num_threads = threads;
    a->split = split;
    fr_cell_variant_of(d, w, dir, &a->var);
    if (d->weight_format) {
        a->qWx = w[dir].qkernel;
        a->qWh = w[dir].qrecurrent;
        a->qk = fr_qkernels_current(d->weight_format);
    }
    if (d->proj_size > 0) {
        a->P = P;
        a->Pp = fr_gate_stride(d->dtype, P);
        a->Wp = w[dir].projection;
        a->proj_ld = w[dir].proj_ld;
        a->proj_clip = d->proj_clip;
    }
    if (tr) {
        const size_t bt = (size_t)io->batch * io->time, Hp = (size_t)a->Hp;
        const size_t st = fr_round_up(bt * Hp * e, FR_ALIGN);
        const int drop_in = tr->in_mask != NULL;
        char *p = (char *)align_up(tr->record)
                  + dir * record_dir_bytes(d, io->batch, io->time, drop_in);
        a->gates = p; p += fr_round_up(bt * G * Hp * e, FR_ALIGN);
        if (d->proj_size > 0) {
            a->pre = p; p += fr_round_up(bt * G * Hp * e, FR_ALIGN);
            a->cs = p; p += st;
            a->ms = p; p += st;
            a->hs = p; p += fr_round_up(bt * (size_t)a->Pp * e, FR_ALIGN);
            if (drop_in) a->x = p;
            a->rec_mask = NULL;  /* refused with a projection (layer_forward) */
            return;
        }
        a->hs = p; p += st;
        if (d->cell == FR_LSTM) { a->cs = p; p += st; }
        if (d->cell == FR_GRU && d->reset_after) { a->ghn = p; p += st; }
        if (a->var.on) { a->pre = p; p += fr_round_up(bt * G * Hp * e, FR_ALIGN); }
        if (drop_in) a->x = p;  /* this direction's dropped input, made by drop_input() */
        a->rec_mask = tr->rec_mask ? (const char *)tr->rec_mask + dir * state : NULL;
    }
}

/* Input dropout: x * m (m per batch row and feature, the same at every step) into the
 * direction's record, where the projection and the weight gradient read it. */
static void drop_input(const fr_layer_desc *d, const fr_io *io, const fr_train *tr, int dir,
                       void *xd)
{
    const ptrdiff_t B = io->batch, T = io->time, I = d->input_size;
    if (d->dtype == FR_FLOAT32) {
        const float *x = io->x, *m = (const float *)tr->in_mask + dir * B * I;
        float *o = xd;
        for (ptrdiff_t b = 0; b < B; b++)
            for (ptrdiff_t t = 0; t < T; t++)
                for (ptrdiff_t i = 0; i < I; i++)
                    o[(b * T + t) * I + i] = x[(b * T + t) * I + i] * m[b * I + i];
    } else {
        const double *x = io->x, *m = (const double *)tr->in_mask + dir * B * I;
        double *o = xd;
        for (ptrdiff_t b = 0; b < B; b++)
            for (ptrdiff_t t = 0; t < T; t++)
                for (ptrdiff_t i = 0; i < I; i++)
                    o[(b * T + t) * I + i] = x[(b * T + t) * I + i] * m[b * I + i];
    }
}

static int check_qmatrix(const fr_qmatrix *q, int rows, int cols, int int8)
{
    return q && q->rows == rows && q->cols == cols && rows <= 65536 && q->data
           && (!int8 || (q->scale && q->colsum));
}

/* Reduced-precision weights: both matrices, shaped for this layer; float32 layers without a
 * projection. */
static int check_qweights(const fr_layer_desc *d, const fr_weights *w)
{
    const int cols = fr_num_gates(d->cell) * fr_gate_stride(d->dtype, d->hidden_size);
    const int int8 = d->weight_format == FR_WEIGHTS_INT8;
    if (d->dtype != FR_FLOAT32 || d->proj_size > 0) return FR_EUNSUPPORTED;
    if (!check_qmatrix(w->qkernel, d->input_size, cols, int8)
        || !check_qmatrix(w->qrecurrent, d->hidden_size, cols, int8))
        return FR_EINVAL;
    return FR_OK;
}

static int check_call(const fr_layer_desc *d, const fr_weights *w, const fr_io *io)
{
    int rc = check_desc(d);
    if (rc != FR_OK) return rc;
    if (!w || !io || !io->x || io->batch < 1 || io->time < 1) return FR_EINVAL;
    const int G = fr_num_gates(d->cell);
    const int Hp = fr_gate_stride(d->dtype, d->hidden_size);
    for (int dir = 0; dir < d->num_directions; dir++) {
        if (d->weight_format) {
            int rc_q = check_qweights(d, &w[dir]);
            if (rc_q != FR_OK) return rc_q;
        } else if (!w[dir].kernel || !w[dir].recurrent || w[dir].ld < (ptrdiff_t)G * Hp)
            return FR_EINVAL;
        if (d->peepholes && !w[dir].peephole) return FR_EINVAL;
        if (d->packed_recurrent && !d->proj_size && !d->weight_format
            && !w[dir].recurrent_packed)
            return FR_EINVAL;
        if (d->proj_size > 0 && (!w[dir].projection
                                 || w[dir].proj_ld < fr_gate_stride(d->dtype, d->proj_size)))
            return FR_EINVAL;
    }
    return FR_OK;
}

/* A training record big enough for this call. */
static int record_ok(const fr_layer_desc *d, const fr_io *io, const fr_train *tr)
{
    return tr->record &&
           tr->record_size >= fr_record_size(d, io->batch, io->time, tr->in_mask != NULL);
}

/* An unmasked inference call of one row (or a few rows of a tiny layer, see FR_STREAM_MAX_ROWS)
 * on one thread whose recurrent weights fit L2 runs its
 * sequence as T streaming steps (stream_impl.inc: the recurrent products and the epilogue of a
 * hidden block in one pass, no per-step bookkeeping), which compute exactly what the forward
 * kernel computes (stream_impl.inc says why; the tests compare them bitwise). Small input
 * weights are multiplied inside each step; larger ones are projected for the whole sequence
 * first, by the forward kernel's own GEMM. Measured at T=100 against the forward kernel: LSTM
 * I=1 H=8 1.6x faster, H=16-32 1.3x, H=64 1.2x, H=128 1.1x, H=256 1.07x; I=H=16 1.2x; with
 * the projection first, I=H=64 5% (LSTM) and 11% (GRU), I=H=128 5%, I=H=256 2%. With the input
 * products inside each step, I=H=64 (48-64 KB of input weights) was 1.12x slower and I=H=128
 * 1.24x slower than the forward kernel, hence the projection first above 24 KB. */
#define FR_STREAM_STEP_WX_BYTES ((size_t)24 << 10)
#define FR_STREAM_MAX_WH_BYTES ((size_t)1 << 20)
/* Several rows run as streaming steps only when the hidden size is at most half a panel (8
 * float32 units): the step then computes a half-width block, where the forward kernel computes
 * the whole padded panel. Measured at T=100, LSTM H=8: B=2-16 2.1-2.2x faster; H=16: B=4
 * 0.88-1.03x; H >= 64: 1.3-1.8x slower. */
#define FR_STREAM_MAX_ROWS 16

static int stream_eligible(const fr_layer_desc *d, const fr_io *io, const fr_train *tr,
                           int threads)
{
    const size_t e = elem_size(d->dtype);
    const size_t gh = (size_t)fr_num_gates(d->cell) * fr_gate_stride(d->dtype, d->hidden_size);
    const int rows_ok = io->batch == 1 || (io->batch <= FR_STREAM_MAX_ROWS
                                           && (size_t)d->hidden_size * e <= FR_PANEL_BYTES / 2);
    return !tr && !io->mask && rows_ok && threads == 1 && d->proj_size == 0 && !d->weight_format
           && !d->packed_recurrent
           && gh * d->hidden_size * e <= FR_STREAM_MAX_WH_BYTES;
}

/* One direction of a one-row, unmasked inference call as T streaming steps (see above). The
 * forward workspace holds more than the T * G * Hp + 2 * G * Hp + 7 * Hp elements used here. */
static void stream_direction(const fr_layer_desc *d, const fr_dir_args *a,
                             const fr_kernels *kernels, void *ws)
{
    const size_t e = elem_size(d->dtype);
    const int B = a->B, T = a->T, H = a->H, G = a->G, lstm = a->cell == FR_LSTM;
    const size_t gh = (size_t)G * a->Hp, Hp = (size_t)a->Hp;
    const size_t vec = fr_round_up((size_t)B * Hp * e, FR_ALIGN);  /* B rows of Hp */
    const int project = gh * a->I * e > FR_STREAM_STEP_WX_BYTES;
    char *p = ws;
    char *xproj = p;
    if (project) p += fr_round_up((size_t)B * T * gh * e, FR_ALIGN);
    char *pws = p;  /* fr_dir_project's G * Hp + Hp */
    p += fr_round_up((gh + Hp) * e, FR_ALIGN);
    char *h[2] = {p, p + vec};
    char *c = p + 2 * vec, *z = p + 3 * vec, *rh = p + 4 * vec, *xn = p + 5 * vec;
    char *zeros = p + 6 * vec;  /* G * Hp: stands in for missing biases */
    memset(p, 0, 6 * vec + gh * e);
    for (int b = 0; b < B; b++) {
        if (a->h0) memcpy(h[0] + b * Hp * e, (const char *)a->h0 + (size_t)b * H * e, H * e);
        if (a->c0 && lstm) memcpy(c + b * Hp * e, (const char *)a->c0 + (size_t)b * H * e,
                                  H * e);
    }
    if (project) kernels->project(a, xproj, pws);
    fr_step_args s;
    memset(&s, 0, sizeof s);
    s.cell = a->cell;
    s.reset_after = a->cell == FR_GRU && a->reset_after;
    s.B = B;
    s.I = a->I;
    s.H = H;
    s.Hp = a->Hp;
    s.Wx = a->Wx;
    s.Wh = a->Wh;
    s.Whp = a->Whp;
    s.ld = a->ld;
    s.bias = a->bias ? a->bias : zeros;
    s.has_rbias = a->cell == FR_GRU && a->rbias != NULL;
    s.rbias = s.has_rbias ? a->rbias : zeros;
    s.x_ld = (ptrdiff_t)T * a->I;        /* row b of step t at x + (b * T + t) * I */
    s.xproj_ld = (ptrdiff_t)T * gh;      /* and of the projection at (b * T + t) * G * Hp */
    s.c = c;
    s.z = z;
    s.rh = rh;
    s.xn = xn;
    s.var = a->var;
    const unsigned fpmode = fr_fpmode_enter();  /* denormals as in the forward kernels */
    for (int i = 0; i < T; i++) {
        const int t = a->backward ? T - 1 - i : i;
        s.x = (const char *)a->x + (size_t)t * a->I * e;
        if (project) s.xproj = xproj + (size_t)t * gh * e;
        s.hprev = h[i & 1];
        s.hnew = h[(i + 1) & 1];
        kernels->step(&s);
        for (int b = 0; b < B; b++)
            memcpy((char *)a->y + (((size_t)b * T + t) * a->y_ld + a->y_off) * e,
                   (const char *)s.hnew + b * Hp * e, H * e);
    }
    fr_fpmode_leave(fpmode);
    for (int b = 0; b < B; b++) {
        if (a->h_n) memcpy((char *)a->h_n + (size_t)b * H * e, h[T & 1] + b * Hp * e, H * e);
        if (a->c_n && lstm) memcpy((char *)a->c_n + (size_t)b * H * e, c + b * Hp * e, H * e);
    }
}

static int layer_forward(const fr_layer_desc *d, const fr_weights *w, const fr_io *io,
                         const fr_train *tr, void *workspace, size_t workspace_size,
                         int num_threads)
{
#ifdef FR_STREAM_ONLY
    (void)d; (void)w; (void)io; (void)tr; (void)workspace; (void)workspace_size; (void)num_threads;
    return FR_EUNSUPPORTED;  /* built for fr_step only (make STREAM_ONLY=1) */
#endif
    int rc = check_call(d, w, io);
    if (rc != FR_OK) return rc;
    if (!io->y) return FR_EINVAL;
    if (tr && !record_ok(d, io, tr)) return FR_EINVAL;
    if (tr && d->weight_format) return FR_EUNSUPPORTED;  /* int8 / bf16 weights: inference only */
    if (d->proj_size > 0 && tr && tr->rec_mask) return FR_EUNSUPPORTED;  /* no recurrent
                                                                              dropout there */
    int nt = num_threads < 1 ? 1 : num_threads;
    size_t need = fr_workspace_size(d, io->batch, io->time, nt);
    if (!workspace || workspace_size < need) return FR_EWORKSPACE;

    fr_split split;
    int threads = plan_threads(d, io->batch, contention_threads(nt), &split);
    const fr_kernels *kernels = fr_kernels_for(d->dtype);
    const int stream = stream_eligible(d, io, tr, threads);
    int taken = d->proj_size > 0 || stream ? -1 : 0;
    for (int dir = 0; dir < d->num_directions; dir++) {
        fr_dir_args a;
        dir_args(d, w, io, tr, dir, threads, split, &a);
        if (tr && tr->in_mask) drop_input(d, io, tr, dir, (void *)a.x);
        a.ws = align_up(workspace);
        int dir_taken = 0;
        a.team_taken = &dir_taken;
        if (d->proj_size > 0) kernels->forward_proj(&a);
        else if (stream) stream_direction(d, &a, kernels, a.ws);
        else kernels->forward(&a);
        if (taken >= 0) taken += dir_taken;
    }
    contention_report(threads, taken);
    return FR_OK;
}

int fr_layer_forward(const fr_layer_desc *d, const fr_weights *w, const fr_io *io,
                     void *workspace, size_t workspace_size, int num_threads)
{
    return layer_forward(d, w, io, NULL, workspace, workspace_size, num_threads);
}

int fr_layer_forward_train(const fr_layer_desc *d, const fr_weights *w, const fr_io *io,
                           const fr_train *tr, void *workspace, size_t workspace_size,
                           int num_threads)
{
    if (!tr) return FR_EINVAL;
    return layer_forward(d, w, io, tr, workspace, workspace_size, num_threads);
}

size_t fr_backward_workspace_size(const fr_layer_desc *d, int batch, int time, int num_threads)
{
    if (check_desc(d) != FR_OK || batch < 1 || time < 1) return 0;
    int nt = num_threads < 1 ? 1 : num_threads;
    if (d->proj_size > 0)
        return FR_ALIGN + fr_proj_bwd_workspace_bytes(
            elem_size(d->dtype), fr_num_gates(d->cell), batch, time, d->input_size,
            fr_gate_stride(d->dtype, d->hidden_size), fr_gate_stride(d->dtype, d->proj_size));
    return FR_ALIGN + fr_dir_bwd_workspace_bytes(
        elem_size(d->dtype), fr_num_gates(d->cell), batch, time, d->input_size,
        fr_gate_stride(d->dtype, d->hidden_size), nt);
}

int fr_layer_backward(const fr_layer_desc *d, const fr_weights *w, const fr_io *io,
                      const fr_train *tr, const fr_grad_io *g, const fr_grads *grads,
                      void *workspace, size_t workspace_size, int num_threads)
{
#ifdef FR_STREAM_ONLY
    return FR_EUNSUPPORTED;  /* built for fr_step only (make STREAM_ONLY=1) */
#endif
    int rc = check_call(d, w, io);
    if (rc != FR_OK) return rc;
    if (!tr || !record_ok(d, io, tr)) return FR_EINVAL;
    if (!g || !g->dy || !g->dx) return FR_EINVAL;
    if (d->weight_format) return FR_EUNSUPPORTED;  /* int8 / bf16 weights: inference only */
    if (d->proj_size > 0 && tr->rec_mask) return FR_EUNSUPPORTED;
    const int G = fr_num_gates(d->cell);
    const int Hp = fr_gate_stride(d->dtype, d->hidden_size);
    if (grads)
        for (int dir = 0; dir < d->num_directions; dir++)
            if (!grads[dir].kernel || !grads[dir].recurrent || grads[dir].ld < (ptrdiff_t)G * Hp
                || (d->proj_size > 0 && grads[dir].projection
                    && grads[dir].proj_ld < fr_gate_stride(d->dtype, d->proj_size)))
                return FR_EINVAL;
    int nt = num_threads < 1 ? 1 : num_threads;
    size_t need = fr_backward_workspace_size(d, io->batch, io->time, nt);
    if (!workspace || workspace_size < need) return FR_EWORKSPACE;

    fr_split split;
    int threads = plan_threads(d, io->batch, nt, &split);
    const fr_kernels *kernels = fr_kernels_for(d->dtype);
    fr_dir_bwd_fn kernel = d->proj_size > 0 ? kernels->backward_proj : kernels->backward;
    const size_t state = (size_t)io->batch * d->hidden_size * elem_size(d->dtype);
    const size_t hstate = (size_t)io->batch * out_units(d) * elem_size(d->dtype);
    for (int dir = 0; dir < d->num_directions; dir++) {
        fr_dir_args a;
        dir_args(d, w, io, tr, dir, threads, split, &a);
        fr_dir_bwd_args b;
        memset(&b, 0, sizeof b);
        b.f = &a;
        b.dy = g->dy;
        b.dh_n = g->dh_n ? (const char *)g->dh_n + dir * hstate : NULL;
        b.dc_n = g->dc_n ? (const char *)g->dc_n + dir * state : NULL;
        b.dx = g->dx;
        b.dx_accumulate = dir > 0;
        b.in_mask = tr->in_mask
            ? (const char *)tr->in_mask + dir * (size_t)io->batch * d->input_size * elem_size(d->dtype)
            : NULL;
        b.dh0 = g->dh0 ? (char *)g->dh0 + dir * hstate : NULL;
        b.dc0 = g->dc0 ? (char *)g->dc0 + dir * state : NULL;
        if (grads) {
            b.dWx = grads[dir].kernel;
            b.dWh = grads[dir].recurrent;
            b.db = grads[dir].bias;
            b.drb = d->cell == FR_GRU ? grads[dir].recurrent_bias : NULL;
            b.dpeep = a.var.peephole ? grads[dir].peephole : NULL;
            b.dWp = d->proj_size > 0 ? grads[dir].projection : NULL;
            b.gpld = grads[dir].proj_ld;
            b.gld = grads[dir].ld;
        }
        b.ws = align_up(workspace);
        b.num_threads = threads;
        b.split = split;
        kernel(&b);
    }
    return FR_OK;
}

/* ---- machine limit ---- */

double fr_fma_peak_gflops(int num_threads, double seconds)
{
    if (num_threads < 1 || !(seconds > 0.0 && seconds <= 60.0)) return -1.0;
#ifdef FR_STREAM_ONLY
    return -1.0;  /* the peak loops live with the sequence kernels */
#else
#ifdef FR_HAVE_AVX512_BUILD
    if (fr_isa_available(FR_ISA_AVX512)) return fr_fma_peak_gflops_avx512(num_threads, seconds);
#endif
#ifdef FR_HAVE_AVX2_BUILD
    if (fr_isa_available(FR_ISA_AVX2)) return fr_fma_peak_gflops_avx2(num_threads, seconds);
#endif
    return fr_fma_peak_gflops_baseline(num_threads, seconds);
#endif
}
