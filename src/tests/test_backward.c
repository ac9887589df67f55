/* C-level check of fr_layer_backward: directional derivatives of
 *   L = <y, dy> + <h_n, dh_n> + <c_n, dc_n>
 * against 5-point central finite differences of fr_layer_forward_train (float64), for every cell,
 * both directions, masks with holes and empty rows, carry mode and dropout masks held fixed;
 * plus bitwise equality of all gradients for 1, 2 and 3 threads. Prints "N passed, N failed". */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fastrnn.h"

static unsigned long long rng = 0x9E3779B97F4A7C15ULL;
static double urand(void)
{
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0 * 2.0 - 1.0;
}
static int passed = 0, failed = 0;
static void check(int ok, const char *what)
{
    if (ok) passed++;
    else { failed++; printf("FAIL: %s\n", what); }
}
static double *vec(size_t n, double scale)
{
    double *v = malloc((n ? n : 1) * sizeof *v);
    for (size_t i = 0; i < n; i++) v[i] = scale * urand();
    return v;
}
static double dot(const double *a, const double *b, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

typedef struct {
    fr_layer_desc d;
    int B, T, D, G, Hp;
    ptrdiff_t ld;
    size_t nw[4];           /* elements of kernel, recurrent, bias, recurrent_bias per direction */
    double *w[2][4];        /* weights, padded layout */
    double *x, *h0, *c0, *in_mask, *rec_mask;
    unsigned char *mask;
    double *dy, *dhn, *dcn; /* loss weights */
} problem;

static double loss(problem *p, double eps, double *const vw[2][4], const double *vx,
                   const double *vh, const double *vc)
{
    const int B = p->B, T = p->T, D = p->D, H = p->d.hidden_size, I = p->d.input_size;
    size_t nx = (size_t)B * T * I, ns = (size_t)D * B * H;
    double *x = malloc(nx * sizeof *x), *h0 = malloc(ns * sizeof *h0), *c0 = malloc(ns * sizeof *c0);
    for (size_t i = 0; i < nx; i++) x[i] = p->x[i] + eps * vx[i];
    for (size_t i = 0; i < ns; i++) { h0[i] = p->h0[i] + eps * vh[i]; c0[i] = p->c0[i] + eps * vc[i]; }
    fr_weights w[2];
    double *wp[2][4];
    for (int dir = 0; dir < D; dir++) {
        for (int k = 0; k < 4; k++) {
            wp[dir][k] = malloc(p->nw[k] * sizeof(double));
            for (size_t i = 0; i < p->nw[k]; i++) wp[dir][k][i] = p->w[dir][k][i] + eps * vw[dir][k][i];
        }
        w[dir] = (fr_weights){wp[dir][0], wp[dir][1], wp[dir][2], wp[dir][3], p->ld};
    }
    size_t ny = (size_t)B * T * D * H;
    double *y = malloc(ny * sizeof *y), *hn = malloc(ns * sizeof *hn), *cn = malloc(ns * sizeof *cn);
    fr_io io = {B, T, x, p->mask, h0, c0, y, hn, cn};
    fr_train tr = {p->in_mask, p->rec_mask, NULL, fr_record_size(&p->d, B, T, p->in_mask != NULL)};
    tr.record = malloc(tr.record_size);
    size_t wsz = fr_workspace_size(&p->d, B, T, 1);
    void *ws = malloc(wsz);
    int rc = fr_layer_forward_train(&p->d, w, &io, &tr, ws, wsz, 1);
    double L = rc == FR_OK ? dot(y, p->dy, ny) + dot(hn, p->dhn, ns)
                             + (p->d.cell == FR_LSTM ? dot(cn, p->dcn, ns) : 0) : NAN;
    free(ws); free(tr.record); free(y); free(hn); free(cn); free(x); free(h0); free(c0);
    for (int dir = 0; dir < D; dir++) for (int k = 0; k < 4; k++) free(wp[dir][k]);
    return L;
}

/* Gradients with n threads into freshly allocated arrays. */
typedef struct { double *dx, *dh0, *dc0, *g[2][4]; } grads;

static grads backward(problem *p, int threads)
{
    const int B = p->B, T = p->T, D = p->D, H = p->d.hidden_size, I = p->d.input_size;
    size_t ns = (size_t)D * B * H;
    fr_weights w[2];
    fr_grads gw[2];
    grads g;
    for (int dir = 0; dir < D; dir++) {
        w[dir] = (fr_weights){p->w[dir][0], p->w[dir][1], p->w[dir][2], p->w[dir][3], p->ld};
        for (int k = 0; k < 4; k++) g.g[dir][k] = calloc(p->nw[k], sizeof(double));
        gw[dir] = (fr_grads){g.g[dir][0], g.g[dir][1], g.g[dir][2], g.g[dir][3], p->ld};
    }
    g.dx = calloc((size_t)B * T * I, sizeof(double));
    g.dh0 = calloc(ns, sizeof(double));
    g.dc0 = calloc(ns, sizeof(double));
    double *y = malloc((size_t)B * T * D * H * sizeof *y);
    fr_io io = {B, T, p->x, p->mask, p->h0, p->c0, y, NULL, NULL};
    fr_train tr = {p->in_mask, p->rec_mask, NULL, fr_record_size(&p->d, B, T, p->in_mask != NULL)};
    tr.record = malloc(tr.record_size);
    size_t wsz = fr_workspace_size(&p->d, B, T, threads);
    size_t bsz = fr_backward_workspace_size(&p->d, B, T, threads);
    void *ws = malloc(wsz > bsz ? wsz : bsz);
    check(fr_layer_forward_train(&p->d, w, &io, &tr, ws, wsz, threads) == FR_OK, "forward_train");
    fr_grad_io gio = {p->dy, p->dhn, p->dcn, g.dx, g.dh0, g.dc0};
    check(fr_layer_backward(&p->d, w, &io, &tr, &gio, gw, ws, bsz, threads) == FR_OK, "backward");
    check(fr_layer_backward(&p->d, w, &io, &tr, &gio, gw, ws, bsz - 1, threads) == FR_EWORKSPACE,
          "backward rejects a short workspace");
    free(ws); free(tr.record); free(y);
    return g;
}

static void free_grads(problem *p, grads *g)
{
    free(g->dx); free(g->dh0); free(g->dc0);
    for (int dir = 0; dir < p->D; dir++) for (int k = 0; k < 4; k++) free(g->g[dir][k]);
}

static void run_case(fr_cell cell, int reset_after, int B, int T, int I, int H, int D, int rev,
                     int carry, int masking, int dropout)
{
    problem p;
    memset(&p, 0, sizeof p);
    p.d = (fr_layer_desc){cell, FR_FLOAT64, reset_after, I, H, D, rev,
                          carry ? FR_MASKED_CARRY : FR_MASKED_ZERO};
    p.B = B; p.T = T; p.D = D;
    p.G = fr_num_gates(cell);
    p.Hp = fr_gate_stride(FR_FLOAT64, H);
    p.ld = fr_recommended_ld(cell, FR_FLOAT64, H);
    p.nw[0] = (size_t)I * p.ld; p.nw[1] = (size_t)H * p.ld;
    p.nw[2] = p.nw[3] = (size_t)p.G * p.Hp;
    for (int dir = 0; dir < D; dir++)
        for (int k = 0; k < 4; k++) {
            p.w[dir][k] = vec(p.nw[k], 0.6);
            /* padding columns hold garbage on purpose: it must never reach a result */
        }
    size_t ns = (size_t)D * B * H;
    p.x = vec((size_t)B * T * I, 1.0);
    p.h0 = vec(ns, 0.5);
    p.c0 = vec(ns, 0.5);
    p.mask = malloc((size_t)B * T);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            p.mask[b * T + t] = masking == 0 ? 1 : masking == 1 ? (b % 3 != 1 && urand() > -0.5)
                                                               : t < (b * 7) % (T + 1);
    if (dropout) {
        p.in_mask = vec((size_t)D * B * I, 1.0);
        p.rec_mask = vec(ns, 1.0);
        for (size_t i = 0; i < (size_t)D * B * I; i++) p.in_mask[i] = p.in_mask[i] > -0.3 ? 1.0 / 0.65 : 0;
        for (size_t i = 0; i < ns; i++) p.rec_mask[i] = p.rec_mask[i] > -0.2 ? 1.0 / 0.6 : 0;
    }
    p.dy = vec((size_t)B * T * D * H, 1.0);
    p.dhn = vec(ns, 1.0);
    p.dcn = vec(ns, 1.0);

    grads g1 = backward(&p, 1);
    char what[200];
    snprintf(what, sizeof what, "cell %d ra %d B %d T %d I %d H %d D %d rev %d carry %d mask %d drop %d",
             cell, reset_after, B, T, I, H, D, rev, carry, masking, dropout);
    /* directional derivative along a random direction (only the real, unpadded weights move) */
    double *vw[2][4];
    for (int dir = 0; dir < D; dir++)
        for (int k = 0; k < 4; k++) {
            vw[dir][k] = vec(p.nw[k], 1.0);
            if (cell == FR_LSTM && k == 3) memset(vw[dir][k], 0, p.nw[k] * sizeof(double));
        }
    double *vx = vec((size_t)B * T * I, 1.0), *vh = vec(ns, 1.0), *vc = vec(ns, 1.0);
    double analytic = dot(g1.dx, vx, (size_t)B * T * I) + dot(g1.dh0, vh, ns)
                      + (cell == FR_LSTM ? dot(g1.dc0, vc, ns) : 0);
    for (int dir = 0; dir < D; dir++)
        for (int k = 0; k < 4; k++) {
            if (cell == FR_LSTM && k == 3) continue;
            const int rows = k == 0 ? I : k == 1 ? H : 1;
            const ptrdiff_t stride = k < 2 ? p.ld : 0;
            for (int r = 0; r < rows; r++)
                for (int gte = 0; gte < p.G; gte++)
                    for (int u = 0; u < H; u++) {
                        ptrdiff_t idx = r * stride + (ptrdiff_t)gte * p.Hp + u;
                        analytic += g1.g[dir][k][idx] * vw[dir][k][idx];
                    }
        }
    const double e = 1e-4;
    double numeric = (-loss(&p, 2 * e, vw, vx, vh, vc) + 8 * loss(&p, e, vw, vx, vh, vc)
                      - 8 * loss(&p, -e, vw, vx, vh, vc) + loss(&p, -2 * e, vw, vx, vh, vc)) / (12 * e);
    double scale = fabs(numeric) > 1 ? fabs(numeric) : 1;
    if (!(fabs(analytic - numeric) <= 1e-7 * scale))
        printf("  %s: analytic %.12g numeric %.12g\n", what, analytic, numeric);
    check(fabs(analytic - numeric) <= 1e-7 * scale, what);
    /* padding columns of every weight gradient are written as 0 */
    int pad_ok = 1;
    for (int dir = 0; dir < D; dir++)
        for (int gte = 0; gte < p.G; gte++)
            for (int u = H; u < p.Hp; u++)
                pad_ok &= g1.g[dir][2][gte * p.Hp + u] == 0 && g1.g[dir][0][gte * p.Hp + u] == 0;
    check(pad_ok, "padding of gradients is 0");
    for (int nt = 2; nt <= 3; nt++) {
        grads gn = backward(&p, nt);
        int same = !memcmp(gn.dx, g1.dx, (size_t)B * T * I * sizeof(double))
                   && !memcmp(gn.dh0, g1.dh0, ns * sizeof(double));
        for (int dir = 0; dir < D; dir++)
            for (int k = 0; k < 4; k++)
                same &= !memcmp(gn.g[dir][k], g1.g[dir][k], p.nw[k] * sizeof(double))
                        || (k >= 2 && cell == FR_LSTM && k == 3);
        check(same, "gradients bitwise identical across thread counts");
        free_grads(&p, &gn);
    }
    free_grads(&p, &g1);
    for (int dir = 0; dir < D; dir++)
        for (int k = 0; k < 4; k++) { free(p.w[dir][k]); free(vw[dir][k]); }
    free(vx); free(vh); free(vc); free(p.x); free(p.h0); free(p.c0); free(p.mask);
    free(p.in_mask); free(p.rec_mask); free(p.dy); free(p.dhn); free(p.dcn);
}

int main(void)
{
    static const int shapes[][4] = {{1, 1, 1, 1}, {3, 5, 2, 9}, {7, 4, 5, 17}, {13, 3, 4, 8},
                                    {2, 6, 3, 20}};
    for (int isa = 0; isa < FR_ISA_COUNT; isa++) {
        if (fr_set_isa((fr_isa)isa) != FR_OK) continue;
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            for (int cv = 0; cv < 3; cv++) {
                fr_cell cell = cv == 0 ? FR_LSTM : FR_GRU;
                int B = shapes[s][0], T = shapes[s][1], I = shapes[s][2], H = shapes[s][3];
                run_case(cell, cv == 1, B, T, I, H, 1, 0, 0, 0, 0);
                run_case(cell, cv == 1, B, T, I, H, 2, 0, 1, 1, 0);
                run_case(cell, cv == 1, B, T, I, H, 1, 1, 0, 2, 1);
                run_case(cell, cv == 1, B, T, I, H, 2, 0, (int)(s % 2), 1, 1);
            }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
