/* Standalone test of the fastrnn C core: no Python anywhere. Compares fr_layer_forward with a
 * naive double-precision reference written here from the equations in fastrnn.h, for LSTM and
 * both GRU variants, float32 and float64, random masks, both directions, every kernel variant,
 * and checks that 1 and 2 threads give bitwise identical results.
 * Build: see src/Makefile (kernels_avx2.c needs -mavx2 -mfma on x86-64). Prints "N passed, N failed". */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fastrnn.h"
#include "test_util.h"

static unsigned long long rng = 88172645463325252ULL;
static double urand(void) /* xorshift64 in [-1, 1) */
{
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (double)(rng >> 11) / (double)(1ULL << 53) * 2.0 - 1.0;
}

static double sig(double x) { return 1.0 / (1.0 + exp(-x)); }

/* Naive reference for one direction; weights plain (rows, G*H), gate-major columns. */
static void ref_dir(fr_cell cell, int reset_after, int B, int T, int I, int H, int backward,
                    int carry, const double *Wx, const double *Wh, const double *b,
                    const double *rb, const double *x, const unsigned char *mask,
                    const double *h0, const double *c0, double *y, int y_ld, int y_off,
                    double *hn, double *cn)
{
    int G = cell == FR_LSTM ? 4 : 3;
    double *pre = malloc(sizeof(double) * G * H), *rec = malloc(sizeof(double) * G * H);
    double *rh = malloc(sizeof(double) * H), *hnew = malloc(sizeof(double) * H);
    for (int bb = 0; bb < B; bb++) {
        double *h = hn + bb * H, *c = cn + bb * H;
        for (int u = 0; u < H; u++) { h[u] = h0[bb * H + u]; c[u] = c0[bb * H + u]; }
        for (int s = 0; s < T; s++) {
            int t = backward ? T - 1 - s : s;
            double *yo = y + ((size_t)bb * T + t) * y_ld + y_off;
            if (!mask[bb * T + t]) {
                for (int u = 0; u < H; u++)
                    yo[u] = (carry && s > 0) ? yo[(backward ? 1 : -1) * y_ld + u] : 0.0;
                continue;
            }
            const double *xt = x + ((size_t)bb * T + t) * I;
            for (int n = 0; n < G * H; n++) {
                double v = b[n];
                for (int k = 0; k < I; k++) v += xt[k] * Wx[k * G * H + n];
                pre[n] = v;
                double r = rb[n];
                for (int k = 0; k < H; k++) r += h[k] * Wh[k * G * H + n];
                rec[n] = r;
            }
            if (cell == FR_LSTM) {
                for (int u = 0; u < H; u++) {
                    double i = sig(pre[u] + rec[u]), f = sig(pre[H + u] + rec[H + u]);
                    double g = tanh(pre[2 * H + u] + rec[2 * H + u]);
                    double o = sig(pre[3 * H + u] + rec[3 * H + u]);
                    c[u] = f * c[u] + i * g;
                    hnew[u] = o * tanh(c[u]);
                }
            } else {
                for (int u = 0; u < H; u++) rh[u] = sig(pre[H + u] + rec[H + u]) * h[u];
                for (int u = 0; u < H; u++) {
                    double z = sig(pre[u] + rec[u]), r = sig(pre[H + u] + rec[H + u]), n;
                    if (reset_after) {
                        n = tanh(pre[2 * H + u] + r * rec[2 * H + u]);
                    } else {
                        double acc = pre[2 * H + u] + rb[2 * H + u];
                        for (int k = 0; k < H; k++) acc += rh[k] * Wh[k * G * H + 2 * H + u];
                        n = tanh(acc);
                    }
                    hnew[u] = z * h[u] + (1 - z) * n;
                }
            }
            for (int u = 0; u < H; u++) { h[u] = hnew[u]; yo[u] = hnew[u]; }
        }
    }
    free(pre); free(rec); free(rh); free(hnew);
}

static int passed = 0, failed = 0;

static void check(int ok, const char *what)
{
    if (ok) passed++;
    else { failed++; printf("FAIL: %s\n", what); }
}

/* Runs one configuration and compares with the reference. */
static void run_case(fr_cell cell, int reset_after, fr_dtype dtype, int B, int T, int I, int H,
                     int ndir, int reverse, int carry, int mask_kind)
{
    int G = fr_num_gates(cell), GH = G * H, Hp = fr_gate_stride(dtype, H);
    size_t e = dtype == FR_FLOAT32 ? 4 : 8;
    ptrdiff_t ld = fr_recommended_ld(cell, dtype, H);
    fr_layer_desc d = {cell, dtype, reset_after, I, H, ndir, reverse,
                       carry ? FR_MASKED_CARRY : FR_MASKED_ZERO};
    /* reference data in double */
    double *Wx[2], *Wh[2], *bb[2], *rb[2];
    void *pWx[2], *pWh[2], *pb[2], *prb[2];
    fr_weights w[2];
    for (int dir = 0; dir < ndir; dir++) {
        Wx[dir] = malloc(sizeof(double) * I * GH); Wh[dir] = malloc(sizeof(double) * H * GH);
        bb[dir] = malloc(sizeof(double) * GH); rb[dir] = malloc(sizeof(double) * GH);
        for (int i = 0; i < I * GH; i++) Wx[dir][i] = 0.5 * urand();
        for (int i = 0; i < H * GH; i++) Wh[dir][i] = 0.5 * urand();
        for (int i = 0; i < GH; i++) { bb[dir][i] = 0.3 * urand(); rb[dir][i] = cell == FR_GRU ? 0.3 * urand() : 0.0; }
        /* cast to dtype, plain layout, then pack */
        void *tx = malloc(e * I * GH), *th = malloc(e * H * GH), *tb = malloc(e * GH), *trb = malloc(e * GH);
        for (int i = 0; i < I * GH; i++) { if (e == 4) ((float *)tx)[i] = (float)Wx[dir][i]; else ((double *)tx)[i] = Wx[dir][i]; }
        for (int i = 0; i < H * GH; i++) { if (e == 4) ((float *)th)[i] = (float)Wh[dir][i]; else ((double *)th)[i] = Wh[dir][i]; }
        for (int i = 0; i < GH; i++) {
            if (e == 4) { ((float *)tb)[i] = (float)bb[dir][i]; ((float *)trb)[i] = (float)rb[dir][i]; }
            else { ((double *)tb)[i] = bb[dir][i]; ((double *)trb)[i] = rb[dir][i]; }
        }
        pWx[dir] = calloc((size_t)I * ld, e); pWh[dir] = calloc((size_t)H * ld, e);
        pb[dir] = calloc((size_t)G * Hp, e); prb[dir] = calloc((size_t)G * Hp, e);
        fr_pack_weights(cell, dtype, H, I, tx, pWx[dir], ld);
        fr_pack_weights(cell, dtype, H, H, th, pWh[dir], ld);
        fr_pack_weights(cell, dtype, H, 1, tb, pb[dir], (ptrdiff_t)G * Hp);
        fr_pack_weights(cell, dtype, H, 1, trb, prb[dir], (ptrdiff_t)G * Hp);
        free(tx); free(th); free(tb); free(trb);
        w[dir].kernel = pWx[dir]; w[dir].recurrent = pWh[dir]; w[dir].bias = pb[dir];
        w[dir].recurrent_bias = cell == FR_GRU ? prb[dir] : NULL; w[dir].ld = ld;
    }
    size_t nx = (size_t)B * T * I, ny = (size_t)B * T * ndir * H, ns = (size_t)ndir * B * H;
    double *x = malloc(sizeof(double) * nx), *h0 = malloc(sizeof(double) * ns), *c0 = malloc(sizeof(double) * ns);
    unsigned char *mask = malloc((size_t)B * T);
    for (size_t i = 0; i < nx; i++) x[i] = urand();
    for (size_t i = 0; i < ns; i++) { h0[i] = 0.5 * urand(); c0[i] = cell == FR_LSTM ? 0.5 * urand() : 0.0; }
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            int len = (b * 7 + 3) % (T + 1);
            mask[b * T + t] = mask_kind == 0 ? 1 : mask_kind == 1 ? (t < len) : (urand() > -0.2);
        }
    double *yr = calloc(ny, sizeof(double)), *hr = malloc(sizeof(double) * ns), *cr = malloc(sizeof(double) * ns);
    for (int dir = 0; dir < ndir; dir++)
        ref_dir(cell, reset_after, B, T, I, H, dir == 1 || reverse, carry, Wx[dir], Wh[dir], bb[dir],
                rb[dir], x, mask, h0 + dir * B * H, c0 + dir * B * H, yr, ndir * H, dir * H,
                hr + dir * B * H, cr + dir * B * H);
    /* typed inputs */
    void *xt = malloc(e * nx), *h0t = malloc(e * ns), *c0t = malloc(e * ns);
    for (size_t i = 0; i < nx; i++) { if (e == 4) ((float *)xt)[i] = (float)x[i]; else ((double *)xt)[i] = x[i]; }
    for (size_t i = 0; i < ns; i++) {
        if (e == 4) { ((float *)h0t)[i] = (float)h0[i]; ((float *)c0t)[i] = (float)c0[i]; }
        else { ((double *)h0t)[i] = h0[i]; ((double *)c0t)[i] = c0[i]; }
    }
    void *y1 = malloc(e * ny), *y2 = malloc(e * ny), *hn1 = malloc(e * ns), *hn2 = malloc(e * ns);
    void *cn1 = malloc(e * ns), *cn2 = malloc(e * ns);
    size_t wsz = fr_workspace_size(&d, B, T, 2);
    void *ws = malloc(wsz);
    fr_io io = {B, T, xt, mask_kind ? mask : NULL, h0t, c0t, y1, hn1, cn1};
    int rc1 = fr_layer_forward(&d, w, &io, ws, wsz, 1);
    io.y = y2; io.h_n = hn2; io.c_n = cn2;
    int rc2 = fr_layer_forward(&d, w, &io, ws, wsz, 2);
    char what[256];
    snprintf(what, sizeof what, "%s%s %s B=%d T=%d I=%d H=%d dirs=%d rev=%d carry=%d mask=%d isa=%s",
             cell == FR_LSTM ? "lstm" : "gru", cell == FR_GRU ? (reset_after ? "(after)" : "(before)") : "",
             e == 4 ? "f32" : "f64", B, T, I, H, ndir, reverse, carry, mask_kind, fr_isa_name(fr_get_isa()));
    check(rc1 == FR_OK && rc2 == FR_OK, what);
    double tol = e == 4 ? 2e-5 : 1e-12, err = 0;
    err = tu_max_abs_diff(err, y1, yr, 0, e == 4, ny);
    err = tu_max_abs_diff(err, hn1, hr, 0, e == 4, ns);
    if (cell == FR_LSTM) err = tu_max_abs_diff(err, cn1, cr, 0, e == 4, ns);
    if (!(err <= tol)) printf("  max error %.3g (tol %.1g)\n", err, tol);
    check(err <= tol, what);
    check(memcmp(y1, y2, e * ny) == 0 && memcmp(hn1, hn2, e * ns) == 0 &&
          (cell != FR_LSTM || memcmp(cn1, cn2, e * ns) == 0), "threads 1 vs 2 bitwise");
    /* Frozen weights (fr_pack_recurrent once): bitwise the same as the live weights. */
    fr_layer_desc dp = d;
    dp.packed_recurrent = 1;
    void *packed[2] = {NULL, NULL};
    int rcp = FR_OK;
    for (int dir = 0; dir < ndir; dir++) {
        packed[dir] = malloc(fr_packed_recurrent_size(&d));
        rcp |= fr_pack_recurrent(&d, &w[dir], packed[dir]);
        w[dir].recurrent_packed = packed[dir];
    }
    for (int nt = 1; nt <= 2; nt++) {
        io.y = y2; io.h_n = hn2; io.c_n = cn2;
        rcp |= fr_layer_forward(&dp, w, &io, ws, wsz, nt);
        check(rcp == FR_OK && memcmp(y1, y2, e * ny) == 0 && memcmp(hn1, hn2, e * ns) == 0 &&
              (cell != FR_LSTM || memcmp(cn1, cn2, e * ns) == 0), "frozen weights bitwise");
    }
    for (int dir = 0; dir < ndir; dir++) free(packed[dir]);
    for (int dir = 0; dir < ndir; dir++) {
        free(Wx[dir]); free(Wh[dir]); free(bb[dir]); free(rb[dir]);
        free(pWx[dir]); free(pWh[dir]); free(pb[dir]); free(prb[dir]);
    }
    free(x); free(h0); free(c0); free(mask); free(yr); free(hr); free(cr); free(xt); free(h0t); free(c0t);
    free(y1); free(y2); free(hn1); free(hn2); free(cn1); free(cn2); free(ws);
}

static void bad_input_cases(void)
{
    fr_layer_desc d = {FR_LSTM, FR_FLOAT32, 0, 3, 4, 1, 0, FR_MASKED_ZERO};
    float x[3 * 2], y[4 * 2];
    fr_io io = {1, 2, x, NULL, NULL, NULL, y, NULL, NULL};
    fr_weights w = {x, x, NULL, NULL, 1};
    char ws[64];
    check(fr_layer_forward(&d, &w, &io, ws, sizeof ws, 1) == FR_EINVAL, "ld too small rejected");
    w.ld = fr_recommended_ld(FR_LSTM, FR_FLOAT32, 4);
    check(fr_layer_forward(&d, &w, &io, ws, sizeof ws, 1) == FR_EWORKSPACE, "small workspace rejected");
    d.packed_recurrent = 1;   /* frozen, but no packed copy given */
    w.recurrent_packed = NULL;
    check(fr_layer_forward(&d, &w, &io, ws, sizeof ws, 1) == FR_EINVAL,
          "packed_recurrent without a copy rejected");
    d.packed_recurrent = 0;
    check(fr_pack_recurrent(&d, &w, NULL) == FR_EINVAL, "pack into NULL rejected");
    d.proj_size = 2;
    check(fr_packed_recurrent_size(&d) == 0, "no packed size with a projection");
    d.proj_size = 0;
    check(fr_packed_recurrent_size(&d) == (size_t)4 * 16 * 4 * sizeof(float),
          "packed size G * Hp * H elements");
    d.num_directions = 3;
    check(fr_layer_forward(&d, &w, &io, ws, sizeof ws, 1) == FR_EINVAL, "bad directions rejected");
    check(fr_packed_recurrent_size(&d) == 0, "no packed size for a bad descriptor");
    check(fr_workspace_size(&d, 1, 1, 1) == 0, "workspace size of bad desc is 0");
}

static void fma_peak_cases(void)
{
    double g = fr_fma_peak_gflops(1, 0.01);
    /* any CPU this runs on does between 0.001 and 10000 GFLOP/s per thread: an emulator too
     * (QEMU's s390x on a busy host measured under 0.1) */
    check(g > 1e-3 && g < 1e4, "fma peak plausible");
    check(fr_fma_peak_gflops(0, 0.01) < 0, "fma peak rejects 0 threads");
    check(fr_fma_peak_gflops(1, 0.0) < 0, "fma peak rejects 0 seconds");
}

int main(void)
{
    static const int shapes[][4] = {{1, 1, 1, 1}, {1, 5, 3, 17}, {3, 4, 2, 16}, {7, 6, 5, 33},
                                    {13, 3, 8, 8}, {2, 9, 1, 40}, {9, 2, 40, 9},
                                    {12, 4, 30, 64}, {2, 5, 64, 96}, {3, 3, 20, 70}};
    for (int isa = 0; isa < FR_ISA_COUNT; isa++) {
        if (fr_set_isa((fr_isa)isa) != FR_OK) continue;
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            for (int dt = 0; dt < 2; dt++)
                for (int cv = 0; cv < 3; cv++) {
                    fr_cell cell = cv == 0 ? FR_LSTM : FR_GRU;
                    int ra = cv == 1;
                    int B = shapes[s][0], T = shapes[s][1], I = shapes[s][2], H = shapes[s][3];
                    int mk = (int)(s % 3), ndir = 1 + (int)(s % 2), carry = (int)((s / 2) % 2);
                    run_case(cell, ra, (fr_dtype)dt, B, T, I, H, ndir, 0, carry, mk);
                    run_case(cell, ra, (fr_dtype)dt, B, T, I, H, 1, 1, !carry, 2);
                    run_case(cell, ra, (fr_dtype)dt, B, T, I, H, 2, 0, carry, (mk + 1) % 3);
                }
    }
    bad_input_cases();
    fma_peak_cases();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
