/* Standalone tests of models, .frnn loading and streaming (no Python):
 *  - fr_forward on a model loaded from a .frnn image (written by frnn_writer.h from the spec)
 *    equals fr_layer_forward run layer by layer on weights packed here: bitwise, for LSTM and
 *    both GRU variants, float32/float64, stacked, bidirectional, reverse, lengths;
 *  - fr_step, step by step, equals fr_forward over the whole sequence: bitwise (same operations);
 *  - fr_step allocates nothing (malloc/calloc/realloc/free wrapped at link time: --wrap);
 *  - error codes for bad calls, wrong versions, bidirectional stepping, missing files.
 * Prints "N passed, N failed". */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fastrnn.h"
#include "frnn_writer.h"
#include "test_util.h"

/* ---- allocation counting: the linker routes the library's calls here (--wrap) ---- */
static long g_alloc_calls = 0;
#ifdef FR_COUNT_ALLOCS
void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t s);
void *__real_realloc(void *p, size_t n);
void __real_free(void *p);
void *__wrap_malloc(size_t n) { g_alloc_calls++; return __real_malloc(n); }
void *__wrap_calloc(size_t n, size_t s) { g_alloc_calls++; return __real_calloc(n, s); }
void *__wrap_realloc(void *p, size_t n) { g_alloc_calls++; return __real_realloc(p, n); }
void __wrap_free(void *p) { if (p) g_alloc_calls++; __real_free(p); }
#endif

static int passed = 0, failed = 0;
static void check(int ok, const char *what)
{
    if (ok) passed++;
    else { failed++; printf("FAIL: %s\n", what); }
}

static void *typed(const double *src, size_t n, fr_dtype dt)
{
    size_t e = dt == FR_FLOAT32 ? 4 : 8;
    void *p = malloc(n * e + 1);
    for (size_t i = 0; i < n; i++) {
        if (dt == FR_FLOAT32) ((float *)p)[i] = (float)src[i];
        else ((double *)p)[i] = src[i];
    }
    return p;
}

/* The test's own packing of the plain weights (independent of the loader). */
typedef struct packed { void *mem[16][6]; fr_weights w[16]; } packed;

static void pack_model(const test_model *m, packed *pk)
{
    const fr_layer_desc *d = &m->d;
    int G = fr_num_gates(d->cell), H = d->hidden_size, Hp = fr_gate_stride(d->dtype, H);
    int R = tm_units(m), P = d->proj_size, Pp = P > 0 ? fr_gate_stride(d->dtype, P) + 3 : 0;
    size_t e = d->dtype == FR_FLOAT32 ? 4 : 8;
    ptrdiff_t ld = fr_recommended_ld(d->cell, d->dtype, H);
    for (int i = 0; i < m->L * d->num_directions; i++) {
        int in = tm_in(m, i / d->num_directions);
        void *tx = typed(m->Wx[i], (size_t)in * G * H, d->dtype);
        void *th = typed(m->Wh[i], (size_t)R * G * H, d->dtype);
        void *tb = typed(m->b[i], (size_t)G * H, d->dtype);
        void *trb = typed(m->rb[i], (size_t)G * H, d->dtype);
        pk->mem[i][0] = calloc((size_t)in * ld, e);
        pk->mem[i][1] = calloc((size_t)R * ld, e);
        pk->mem[i][2] = calloc((size_t)G * Hp, e);
        pk->mem[i][3] = calloc((size_t)G * Hp, e);
        pk->mem[i][4] = calloc((size_t)3 * Hp, e);
        pk->mem[i][5] = calloc((size_t)H * (Pp > 0 ? Pp : 1), e);
        fr_pack_weights(d->cell, d->dtype, H, in, tx, pk->mem[i][0], ld);
        fr_pack_weights(d->cell, d->dtype, H, R, th, pk->mem[i][1], ld);
        fr_pack_weights(d->cell, d->dtype, H, 1, tb, pk->mem[i][2], (ptrdiff_t)G * Hp);
        fr_pack_weights(d->cell, d->dtype, H, 1, trb, pk->mem[i][3], (ptrdiff_t)G * Hp);
        for (int g = 0; g < 3; g++)  /* peepholes: gate g at g * Hp */
            for (int u = 0; u < H; u++) {
                double v = m->pp[i][g * H + u];
                if (e == 4) ((float *)pk->mem[i][4])[g * Hp + u] = (float)v;
                else ((double *)pk->mem[i][4])[g * Hp + u] = v;
            }
        for (int r = 0; r < H; r++)  /* projection (H, P), rows Pp apart (not the loader's) */
            for (int c = 0; c < P; c++) {
                double v = m->Wp[i][r * P + c];
                if (e == 4) ((float *)pk->mem[i][5])[(size_t)r * Pp + c] = (float)v;
                else ((double *)pk->mem[i][5])[(size_t)r * Pp + c] = v;
            }
        fr_weights w = {pk->mem[i][0], pk->mem[i][1], pk->mem[i][2],
                        d->cell == FR_GRU ? pk->mem[i][3] : NULL, ld,
                        d->peepholes ? pk->mem[i][4] : NULL, P > 0 ? pk->mem[i][5] : NULL,
                        P > 0 ? Pp : 0};
        pk->w[i] = w;
        free(tx); free(th); free(tb); free(trb);
    }
}

static void unpack_model(const test_model *m, packed *pk)
{
    for (int i = 0; i < m->L * m->d.num_directions; i++)
        for (int k = 0; k < 6; k++) free(pk->mem[i][k]);
}

static void rand_fill(double *p, size_t n, double scale)
{
    for (size_t i = 0; i < n; i++) p[i] = scale * wr_urand();
}

/* fr_forward (model from .frnn bytes and from a file) vs fr_layer_forward per layer. */
static void forward_case(fr_cell cell, int ra, fr_dtype dt, int I, int H, int L, int D, int rev,
                         int carry, int B, int T, int use_bias)
{
    char what[200];
    snprintf(what, sizeof what, "forward %s%s %s I=%d H=%d L=%d D=%d rev=%d B=%d T=%d isa=%s",
             cell == FR_LSTM ? "lstm" : "gru", cell == FR_GRU ? (ra ? "(after)" : "(before)") : "",
             dt == FR_FLOAT32 ? "f32" : "f64", I, H, L, D, rev, B, T, fr_isa_name(fr_get_isa()));
    test_model tm;
    tm_init(&tm, cell, ra, dt, I, H, L, D, rev, carry, use_bias);
    size_t len;
    unsigned char *img = frnn_write(&tm, "test", &len);
    fr_model *m = NULL;
    char err[256] = "";
    int rc = fr_model_load_buffer(img, len, &m, err, sizeof err);
    check(rc == FR_OK, what);
    if (rc != FR_OK) { printf("  %s\n", err); free(img); tm_free(&tm); return; }
    check(fr_model_num_layers(m) == L && fr_model_layer(m, L - 1)->input_size == (L > 1 ? D * H : I)
          && fr_model_layer(m, L) == NULL, "model descriptors");
    /* loaded float models carry frozen recurrent weights (fr_pack_recurrent at load) */
    check(fr_model_layer(m, 0)->packed_recurrent == 1 && fr_model_layer(m, L - 1)->packed_recurrent == 1,
          "loaded model: recurrent weights packed once");
    /* the same bytes through a file */
    FILE *f = fopen("build/test_stream.frnn", "wb");  /* relative to src/, where make runs it */
    check(f != NULL, "create build/test_stream.frnn (run from src/)");
    if (f) {
        fwrite(img, 1, len, f);
        fclose(f);
    }
    fr_model *mf = NULL;
    check(fr_model_load_file("build/test_stream.frnn", &mf, err, sizeof err) == FR_OK, "load file");

    size_t e = dt == FR_FLOAT32 ? 4 : 8, nx = (size_t)B * T * I, ny = (size_t)B * T * D * H;
    size_t ns = (size_t)L * D * B * H;
    double *xd = malloc(sizeof(double) * nx), *h0d = malloc(sizeof(double) * ns);
    double *c0d = malloc(sizeof(double) * ns);
    rand_fill(xd, nx, 1.0); rand_fill(h0d, ns, 0.5); rand_fill(c0d, ns, 0.5);
    void *x = typed(xd, nx, dt), *h0 = typed(h0d, ns, dt), *c0 = typed(c0d, ns, dt);
    int *lengths = malloc(sizeof(int) * B);
    unsigned char *mask = malloc((size_t)B * T);
    for (int b = 0; b < B; b++) {
        lengths[b] = b == 0 ? T : (b * 5 + 1) % (T + 1);
        for (int t = 0; t < T; t++) mask[b * T + t] = t < lengths[b];
    }
    void *y1 = calloc(ny, e), *y2 = calloc(ny, e), *y3 = calloc(ny, e);
    void *hn1 = calloc(ns, e), *hn2 = calloc(ns, e), *cn1 = calloc(ns, e), *cn2 = calloc(ns, e);
    fr_sequence seq = {B, T, x, lengths, NULL, h0, c0, y1, hn1, cn1};
    check(fr_forward(m, &seq, NULL, 0, 2) == FR_OK, what);
    /* file-loaded model with a caller workspace and one thread: identical */
    size_t wsz = fr_forward_workspace_size(mf, B, T, 1);
    void *ws = malloc(wsz);
    seq.y = y3;
    check(mf && fr_forward(mf, &seq, ws, wsz, 1) == FR_OK && memcmp(y1, y3, ny * e) == 0,
          "file model, 1 thread, caller workspace: same output");
    check(fr_forward(mf, &seq, ws, wsz - 1, 1) == FR_EWORKSPACE, "short workspace rejected");
    free(ws);

    /* reference: fr_layer_forward layer by layer on weights packed here */
    packed pk;
    pack_model(&tm, &pk);
    size_t state = (size_t)D * B * H * e;
    void *in = x, *inter = NULL;
    for (int k = 0; k < L; k++) {
        fr_layer_desc d = tm.d;
        d.input_size = tm_in(&tm, k);
        void *yk = k == L - 1 ? y2 : calloc(ny, e);
        fr_io io = {B, T, in, mask, (char *)h0 + k * state, (char *)c0 + k * state, yk,
                    (char *)hn2 + k * state, (char *)cn2 + k * state};
        size_t wz = fr_workspace_size(&d, B, T, 1);
        void *w = malloc(wz);
        check(fr_layer_forward(&d, &pk.w[k * D], &io, w, wz, 1) == FR_OK, "reference layer");
        free(w);
        free(inter);
        inter = k == L - 1 ? NULL : yk;
        in = yk;
    }
    check(memcmp(y1, y2, ny * e) == 0, "fr_forward == fr_layer_forward per layer (bitwise)");
    check(memcmp(hn1, hn2, ns * e) == 0 && (cell != FR_LSTM || memcmp(cn1, cn2, ns * e) == 0),
          "final states bitwise");
    /* mask instead of lengths: same; both: rejected; bad length: rejected */
    seq.y = y3; seq.lengths = NULL; seq.mask = mask;
    check(fr_forward(m, &seq, NULL, 0, 1) == FR_OK && memcmp(y1, y3, ny * e) == 0, "mask form");
    seq.lengths = lengths;
    check(fr_forward(m, &seq, NULL, 0, 1) == FR_EINVAL, "lengths and mask rejected");
    seq.mask = NULL;
    lengths[0] = T + 1;
    check(fr_forward(m, &seq, NULL, 0, 1) == FR_EINVAL, "length > T rejected");
    if (D == 2 || rev) {
        fr_state *s = NULL;
        check(fr_state_create(m, 1, &s) == FR_ENOTSTREAMABLE && s == NULL &&
              fr_state_size(m, 1) == 0, "bidirectional / reverse model cannot step");
    }
    unpack_model(&tm, &pk);
    fr_model_free(m);
    fr_model_free(mf);
    free(img); free(xd); free(h0d); free(c0d); free(x); free(h0); free(c0); free(lengths);
    free(mask); free(y1); free(y2); free(y3); free(hn1); free(hn2); free(cn1); free(cn2);
    tm_free(&tm);
}

/* fr_step over T steps == fr_forward over the sequence; zero allocations while stepping. */
static void step_case(fr_cell cell, int ra, fr_dtype dt, int I, int H, int L, int B, int T,
                      int caller_buffer)
{
    char what[200];
    snprintf(what, sizeof what, "step %s%s %s I=%d H=%d L=%d B=%d T=%d isa=%s",
             cell == FR_LSTM ? "lstm" : "gru", cell == FR_GRU ? (ra ? "(after)" : "(before)") : "",
             dt == FR_FLOAT32 ? "f32" : "f64", I, H, L, B, T, fr_isa_name(fr_get_isa()));
    test_model tm;
    tm_init(&tm, cell, ra, dt, I, H, L, 1, 0, 0, 1);
    size_t len;
    unsigned char *img = frnn_write(&tm, "", &len);
    fr_model *m = NULL;
    if (fr_model_load_buffer(img, len, &m, NULL, 0) != FR_OK) { check(0, what); return; }
    size_t e = dt == FR_FLOAT32 ? 4 : 8, nx = (size_t)B * T * I, ny = (size_t)B * T * H;
    size_t ns = (size_t)L * B * H;
    double *xd = malloc(sizeof(double) * nx), *h0d = malloc(sizeof(double) * ns);
    double *c0d = malloc(sizeof(double) * ns);
    rand_fill(xd, nx, 1.0); rand_fill(h0d, ns, 0.5); rand_fill(c0d, ns, 0.5);
    void *x = typed(xd, nx, dt), *h0 = typed(h0d, ns, dt), *c0 = typed(c0d, ns, dt);
    void *yref = calloc(ny, e), *hn = calloc(ns, e), *cn = calloc(ns, e);
    fr_sequence seq = {B, T, x, NULL, NULL, h0, c0, yref, hn, cn};
    check(fr_forward(m, &seq, NULL, 0, 1) == FR_OK, "sequence reference");

    fr_state *s = NULL;
    void *sbuf = NULL;
    if (caller_buffer) {
        size_t n = fr_state_size(m, B);
        sbuf = malloc(n + 1);
        check(fr_state_init(m, B, (char *)sbuf + 1, n - 1, &s) == FR_EWORKSPACE,
              "short state buffer rejected");
        check(fr_state_init(m, B, (char *)sbuf + 1, n, &s) == FR_OK, "state in caller memory");
    } else {
        check(fr_state_create(m, B, &s) == FR_OK, "state create");
    }
    check(fr_state_set(s, h0, c0) == FR_OK, "state set");
    void *xt = malloc((size_t)B * I * e), *yt = malloc((size_t)B * H * e);
    void *ystep = calloc(ny, e);
    long allocs = 0;
    int ok = 1;
    for (int t = 0; t < T; t++) {
        for (int b = 0; b < B; b++)
            memcpy((char *)xt + (size_t)b * I * e, (char *)x + ((size_t)b * T + t) * I * e, I * e);
        long before = g_alloc_calls;
        ok &= fr_step(m, s, xt, yt) == FR_OK;
        allocs += g_alloc_calls - before;
        for (int b = 0; b < B; b++)
            memcpy((char *)ystep + ((size_t)b * T + t) * H * e, (char *)yt + (size_t)b * H * e, H * e);
    }
    check(ok, what);
#ifdef FR_COUNT_ALLOCS
    check(allocs == 0, "fr_step allocates nothing");
    if (allocs == 0) { /* the counter itself works: an allocation through the library counts */
        long before = g_alloc_calls;
        fr_state *tmp = NULL;
        fr_state_create(m, 1, &tmp);
        fr_state_free(tmp);
        check(g_alloc_calls - before == 2, "allocation counter sees the library's malloc/free");
    }
#endif
    check(memcmp(ystep, yref, ny * e) == 0, "fr_step == fr_forward (bitwise)");
    if (memcmp(ystep, yref, ny * e) != 0) {
        double err = tu_max_abs_diff(0, ystep, yref, 1, e == 4, ny);
        printf("  %s: max abs diff %.3g\n", what, err);
    }
    void *hg = calloc(ns, e), *cg = calloc(ns, e);
    fr_state_get(s, hg, cg);
    check(memcmp(hg, hn, ns * e) == 0 && (cell != FR_LSTM || memcmp(cg, cn, ns * e) == 0),
          "fr_state_get == final state of fr_forward");
    /* reset: zero state equals a run without initial state */
    fr_state_reset(s);
    seq.h0 = NULL; seq.c0 = NULL;
    check(fr_forward(m, &seq, NULL, 0, 1) == FR_OK, "sequence without state");
    for (int b = 0; b < B; b++)
        memcpy((char *)xt + (size_t)b * I * e, (char *)x + (size_t)b * T * I * e, I * e);
    fr_step(m, s, xt, yt);
    int same = 1;
    for (int b = 0; b < B; b++)
        same &= memcmp((char *)yt + (size_t)b * H * e, (char *)yref + (size_t)b * T * H * e, H * e) == 0;
    check(same, "reset state == zero initial state");
    /* timing probe */
    double ns_step[3] = {0, 0, 0};
    check(fr_time_steps(m, s, xt, yt, 10, 3, ns_step) == FR_OK && ns_step[0] > 0 && ns_step[2] > 0,
          "fr_time_steps");
    check(fr_time_steps(m, s, xt, yt, 0, 3, ns_step) == FR_EINVAL, "fr_time_steps steps=0");
    /* a state bound to another model is refused */
    fr_model *m2 = NULL;
    fr_model_load_buffer(img, len, &m2, NULL, 0);
    check(fr_step(m2, s, xt, yt) == FR_EINVAL, "state of another model rejected");
    check(fr_step(m, s, NULL, yt) == FR_EINVAL, "NULL x_t rejected");
    fr_model_free(m2);
    if (caller_buffer) free(sbuf);
    else fr_state_free(s);
    fr_model_free(m);
    free(img); free(xd); free(h0d); free(c0d); free(x); free(h0); free(c0); free(yref);
    free(hn); free(cn); free(xt); free(yt); free(ystep); free(hg); free(cg);
    tm_free(&tm);
}

static void format_errors(void)
{
    test_model tm;
    tm_init(&tm, FR_GRU, 1, FR_FLOAT32, 3, 5, 2, 1, 0, 0, 1);
    size_t len;
    unsigned char *img = frnn_write(&tm, "gru", &len);
    fr_model *m = NULL;
    char err[200];
    check(fr_model_load_buffer(img, len, &m, err, sizeof err) == FR_OK, "valid image loads");
    fr_model_free(m);
    img[4] = 4;  /* version 4 */
    frnn_fix_crc(img, len);
    check(fr_model_load_buffer(img, len, &m, err, sizeof err) == FR_EVERSION && m == NULL &&
          strstr(err, "version 4") != NULL, "version 4 rejected with a message");
    img[4] = 2;  /* a version-1 image relabelled 2: its name and payload are no variant block */
    frnn_fix_crc(img, len);
    check(fr_model_load_buffer(img, len, &m, err, sizeof err) == FR_EFORMAT && m == NULL,
          "version-1 image relabelled 2 rejected");
    img[4] = 1;
    img[0] = 'X';
    check(fr_model_load_buffer(img, len, &m, err, sizeof err) == FR_EFORMAT &&
          strstr(err, "magic") != NULL, "bad magic");
    img[0] = 'F';
    img[100] ^= 1;
    check(fr_model_load_buffer(img, len, &m, err, sizeof err) == FR_EFORMAT &&
          strstr(err, "CRC32") != NULL, "flipped payload bit: CRC mismatch");
    img[100] ^= 1;
    check(fr_model_load_buffer(img, len - 1, &m, err, sizeof err) == FR_EFORMAT, "truncated");
    check(fr_model_load_buffer(img, len, NULL, err, sizeof err) == FR_EINVAL, "NULL out");
    check(fr_model_load_file("build/no/such/file.frnn", &m, err, sizeof err) == FR_EIO, "no file");
    img[24] = 200;  /* hidden_size lies; CRC fixed so the size check must catch it */
    frnn_fix_crc(img, len);
    check(fr_model_load_buffer(img, len, &m, err, sizeof err) == FR_EFORMAT, "lying size");
    check(strcmp(fr_strerror(FR_ENOTSTREAMABLE), "unknown status") != 0, "strerror");
    free(img);
    tm_free(&tm);
    /* fr_model_create over caller weights */
    fr_layer_desc bad = {.cell = FR_LSTM, .dtype = FR_FLOAT32, .input_size = 0,
                         .hidden_size = 4, .num_directions = 1};
    float dummy[4] = {0};
    fr_weights w = {.kernel = dummy, .recurrent = dummy, .ld = 1000};
    check(fr_model_create(&bad, 1, &w, &m) == FR_EINVAL && m == NULL, "bad desc rejected");
}

/* ---- .frnn version 2: cell variants ---- */

static int same_desc_variant(const fr_layer_desc *a, const fr_layer_desc *b)
{
    for (int dir = 0; dir < a->num_directions; dir++)
        for (int s = 0; s < 3; s++) {
            fr_activation x = a->act[dir][s], y = b->act[dir][s];
            if (x.kind != y.kind || x.alpha != y.alpha || x.beta != y.beta) return 0;
        }
    return a->clip == b->clip && a->cell_clip == b->cell_clip && a->peepholes == b->peepholes
           && a->input_forget == b->input_forget && a->proj_size == b->proj_size
           && a->proj_clip == b->proj_clip;
}

/* A variant model from a version-2 image: its descriptors carry the variant; fr_forward equals
 * fr_layer_forward layer by layer on weights packed here (bitwise); unidirectional models also
 * step (fr_step == fr_forward, bitwise), projections included. */
static void variant_case(const char *label, test_model *tm, int B, int T)
{
    char what[300];
    const fr_layer_desc *d0 = &tm->d;
    const int L = tm->L, D = d0->num_directions, H = d0->hidden_size, R = tm_units(tm);
    const fr_dtype dt = d0->dtype;
    snprintf(what, sizeof what, "variant %s %s isa=%s", label, dt == FR_FLOAT32 ? "f32" : "f64",
             fr_isa_name(fr_get_isa()));
    size_t len;
    unsigned char *img = frnn_write(tm, "variant", &len);
    check(tm->version == 2 && img[4] == 2, "variant image is version 2");
    fr_model *m = NULL;
    char err[256] = "";
    int rc = fr_model_load_buffer(img, len, &m, err, sizeof err);
    check(rc == FR_OK, what);
    if (rc != FR_OK) { printf("  %s: %s\n", what, err); free(img); return; }
    int descs = fr_model_num_layers(m) == L;
    for (int k = 0; k < L; k++) {
        const fr_layer_desc *dk = fr_model_layer(m, k);
        descs &= dk && same_desc_variant(dk, d0) && dk->input_size == tm_in(tm, k)
                 && dk->hidden_size == H && dk->cell == d0->cell;
    }
    check(descs, "variant descriptors of every layer");

    size_t e = dt == FR_FLOAT32 ? 4 : 8, nx = (size_t)B * T * d0->input_size;
    size_t ny = (size_t)B * T * D * R, nh = (size_t)L * D * B * R, nc = (size_t)L * D * B * H;
    double *xd = malloc(sizeof(double) * nx), *h0d = malloc(sizeof(double) * nh);
    double *c0d = malloc(sizeof(double) * nc);
    rand_fill(xd, nx, 1.5); rand_fill(h0d, nh, 0.5); rand_fill(c0d, nc, 0.8);
    void *x = typed(xd, nx, dt), *h0 = typed(h0d, nh, dt), *c0 = typed(c0d, nc, dt);
    int *lengths = malloc(sizeof(int) * B);
    unsigned char *mask = malloc((size_t)B * T);
    for (int b = 0; b < B; b++) {
        lengths[b] = b == 0 ? T : (b * 3 + 1) % (T + 1);
        for (int t = 0; t < T; t++) mask[b * T + t] = t < lengths[b];
    }
    /* reference: fr_layer_forward layer by layer on weights packed here */
    void *y2 = calloc(ny, e), *hn2 = calloc(nh, e), *cn2 = calloc(nc, e);
    packed pk;
    pack_model(tm, &pk);
    const size_t hs = (size_t)D * B * R * e, cs = (size_t)D * B * H * e;
    void *in = x, *inter = NULL;
    int ref_ok = 1;
    for (int k = 0; k < L; k++) {
        fr_layer_desc d = *d0;
        d.input_size = tm_in(tm, k);
        void *yk = k == L - 1 ? y2 : calloc(ny, e);
        fr_io io = {B, T, in, mask, (char *)h0 + k * hs, (char *)c0 + k * cs, yk,
                    (char *)hn2 + k * hs, (char *)cn2 + k * cs};
        size_t wz = fr_workspace_size(&d, B, T, 1);
        void *w = malloc(wz);
        ref_ok &= fr_layer_forward(&d, &pk.w[k * D], &io, w, wz, 1) == FR_OK;
        free(w);
        free(inter);
        inter = k == L - 1 ? NULL : yk;
        in = yk;
    }
    check(ref_ok, "variant reference (fr_layer_forward)");
    void *y1 = calloc(ny, e), *hn1 = calloc(nh, e), *cn1 = calloc(nc, e);
    fr_sequence seq = {B, T, x, lengths, NULL, h0, c0, y1, hn1, cn1};
    rc = fr_forward(m, &seq, NULL, 0, 2);
    check(rc == FR_OK, what);
    check(memcmp(y1, y2, ny * e) == 0, "variant: fr_forward == fr_layer_forward (bitwise)");
    check(memcmp(hn1, hn2, nh * e) == 0
          && (d0->cell != FR_LSTM || memcmp(cn1, cn2, nc * e) == 0),
          "variant: final states bitwise");
    /* the same image through a file */
    FILE *f = fopen("build/test_stream.frnn", "wb");
    fwrite(img, 1, len, f);
    fclose(f);
    fr_model *mf = NULL;
    check(fr_model_load_file("build/test_stream.frnn", &mf, err, sizeof err) == FR_OK
          && same_desc_variant(fr_model_layer(mf, 0), d0), "variant: load file");
    fr_model_free(mf);

    if (D == 1 && !d0->reverse) {  /* fr_step, step by step == fr_forward without lengths */
        fr_state *s = NULL;
        rc = fr_state_create(m, B, &s);
        {
            check(rc == FR_OK, "variant: state create");
            seq.lengths = NULL;
            seq.y = y1; seq.h_n = hn1; seq.c_n = cn1;
            check(fr_forward(m, &seq, NULL, 0, 1) == FR_OK, "variant: sequence reference");
            check(fr_state_set(s, h0, c0) == FR_OK, "variant: state set");
            void *xt = malloc((size_t)B * d0->input_size * e), *yt = malloc((size_t)B * R * e);
            int same = 1;
            for (int t = 0; t < T; t++) {
                for (int b = 0; b < B; b++)
                    memcpy((char *)xt + (size_t)b * d0->input_size * e,
                           (char *)x + ((size_t)b * T + t) * d0->input_size * e,
                           d0->input_size * e);
                same &= fr_step(m, s, xt, yt) == FR_OK;
                for (int b = 0; b < B; b++)
                    same &= memcmp((char *)yt + (size_t)b * R * e,
                                   (char *)y1 + ((size_t)b * T + t) * R * e, R * e) == 0;
            }
            check(same, "variant: fr_step == fr_forward (bitwise)");
            void *hg = calloc(nh, e), *cg = calloc(nc, e);
            fr_state_get(s, hg, cg);
            check(memcmp(hg, hn1, nh * e) == 0
                  && (d0->cell != FR_LSTM || memcmp(cg, cn1, nc * e) == 0),
                  "variant: fr_state_get == final state");
            free(hg); free(cg); free(xt); free(yt);
            fr_state_free(s);
        }
    }
    unpack_model(tm, &pk);
    fr_model_free(m);
    free(img); free(xd); free(h0d); free(c0d); free(x); free(h0); free(c0); free(lengths);
    free(mask); free(y1); free(y2); free(hn1); free(hn2); free(cn1); free(cn2);
}

static fr_layer_desc mkdesc(fr_cell cell, fr_dtype dt, int ra, int I, int H, int D, int rev,
                            fr_masked_output mo)
{
    fr_layer_desc d;
    memset(&d, 0, sizeof d);
    d.cell = cell; d.dtype = dt; d.reset_after = ra; d.input_size = I; d.hidden_size = H;
    d.num_directions = D; d.reverse = rev; d.masked_output = mo;
    return d;
}

static fr_activation act(fr_act_kind kind, double alpha, double beta)
{
    fr_activation a = {kind, alpha, beta};
    return a;
}

static void variant_cases(fr_dtype dt)
{
    test_model tm;
    fr_layer_desc d;
    /* LSTM: peepholes, clip, cell_clip; stacked, bidirectional, carry */
    d = mkdesc(FR_LSTM, dt, 0, 3, 5, 2, 0, FR_MASKED_CARRY);
    d.peepholes = 1; d.clip = 1.25; d.cell_clip = 0.75;
    tm_init_desc(&tm, &d, 2, 1);
    variant_case("lstm peepholes clip cell_clip L=2 D=2", &tm, 4, 6);
    tm_free(&tm);
    /* LSTM: input_forget, per-direction activations with alpha / beta */
    d = mkdesc(FR_LSTM, dt, 0, 4, 17, 2, 0, FR_MASKED_ZERO);
    d.input_forget = 1;
    d.act[0][0] = act(FR_ACT_HARD_SIGMOID, 0.2, 0.5);
    d.act[0][1] = act(FR_ACT_ELU, 0.7, 0);
    d.act[0][2] = act(FR_ACT_SCALED_TANH, 1.3, 0.8);
    d.act[1][0] = act(FR_ACT_SIGMOID, 0, 0);
    d.act[1][1] = act(FR_ACT_SOFTSIGN, 0, 0);
    d.act[1][2] = act(FR_ACT_LEAKY_RELU, 0.1, 0);
    tm_init_desc(&tm, &d, 1, 1);
    variant_case("lstm input_forget activations D=2", &tm, 3, 7);
    tm_free(&tm);
    /* LSTM, every feature but the projection, unidirectional and stacked (steps), no biases */
    d = mkdesc(FR_LSTM, dt, 0, 5, 19, 1, 0, FR_MASKED_ZERO);
    d.peepholes = 1; d.input_forget = 1; d.clip = 2.5; d.cell_clip = 1.5;
    d.act[0][0] = act(FR_ACT_HARD_SIGMOID, 1.0 / 6.0, 0.5);
    d.act[0][1] = act(FR_ACT_SOFTSIGN, 0, 0);
    d.act[0][2] = act(FR_ACT_AFFINE, 0.9, 0.05);
    tm_init_desc(&tm, &d, 3, 0);
    variant_case("lstm all L=3 steps", &tm, 3, 9);
    tm_free(&tm);
    /* LSTM: peepholes only, and slot h linear (file code 12) */
    d = mkdesc(FR_LSTM, dt, 0, 2, 8, 1, 0, FR_MASKED_ZERO);
    d.peepholes = 1;
    tm_init_desc(&tm, &d, 2, 1);
    tm_set_linear(&tm, 0, FR_SLOT_H);
    variant_case("lstm peepholes linear-h steps", &tm, 2, 5);
    tm_free(&tm);
    /* reverse, clip only */
    d = mkdesc(FR_LSTM, dt, 0, 3, 6, 1, 1, FR_MASKED_ZERO);
    d.clip = 0.5;
    tm_init_desc(&tm, &d, 1, 1);
    variant_case("lstm reverse clip", &tm, 2, 5);
    tm_free(&tm);
    /* GRU (reset after): clip and activations, stacked, steps */
    d = mkdesc(FR_GRU, dt, 1, 4, 9, 1, 0, FR_MASKED_ZERO);
    d.clip = 1.0;
    d.act[0][0] = act(FR_ACT_HARD_SIGMOID, 0.2, 0.5);
    d.act[0][1] = act(FR_ACT_LEAKY_RELU, 0.1, 0);
    tm_init_desc(&tm, &d, 2, 1);
    variant_case("gru(after) clip activations L=2 steps", &tm, 3, 8);
    tm_free(&tm);
    /* GRU (reset before): per-direction activations, bidirectional, carry */
    d = mkdesc(FR_GRU, dt, 0, 3, 16, 2, 0, FR_MASKED_CARRY);
    d.act[0][0] = act(FR_ACT_SIGMOID, 0, 0);
    d.act[0][1] = act(FR_ACT_THRESHOLDED_RELU, 0.3, 0);
    d.act[1][0] = act(FR_ACT_HARD_SIGMOID, 0.25, 0.4);
    d.act[1][1] = act(FR_ACT_SOFTPLUS, 0, 0);
    tm_init_desc(&tm, &d, 2, 1);
    variant_case("gru(before) activations L=2 D=2", &tm, 4, 5);
    tm_free(&tm);
    /* a version-2 image of the plain cell (all-zero variant block) loads as the plain cell */
    d = mkdesc(FR_GRU, dt, 1, 3, 7, 1, 0, FR_MASKED_ZERO);
    tm_init_desc(&tm, &d, 2, 1);
    tm.version = 2;
    variant_case("plain cell in a version-2 image", &tm, 2, 4);
    tm_free(&tm);
    /* LSTM projection (with peepholes, proj_clip): loading now, running once available */
    d = mkdesc(FR_LSTM, dt, 0, 3, 6, 2, 0, FR_MASKED_ZERO);
    d.peepholes = 1; d.proj_size = 4; d.proj_clip = 0.6;
    tm_init_desc(&tm, &d, 2, 1);
    variant_case("lstm projection P=4 L=2 D=2", &tm, 3, 5);
    tm_free(&tm);
    d = mkdesc(FR_LSTM, dt, 0, 5, 20, 1, 0, FR_MASKED_ZERO);
    d.proj_size = 7; d.cell_clip = 2.0;
    tm_init_desc(&tm, &d, 2, 1);
    variant_case("lstm projection P=7 L=2 steps", &tm, 2, 6);
    tm_free(&tm);
}

/* Every variant-block check, each with its own message (CRC fixed after each edit). */
static void variant_format_errors(void)
{
    test_model tm;
    fr_layer_desc d = mkdesc(FR_LSTM, FR_FLOAT32, 0, 3, 4, 1, 0, FR_MASKED_ZERO);
    d.peepholes = 1; d.clip = 1.0; d.proj_size = 2; d.proj_clip = 0.5;
    d.act[0][0] = act(FR_ACT_HARD_SIGMOID, 0.2, 0.5);
    d.act[0][1] = act(FR_ACT_ELU, 1.0, 0);
    tm_init_desc(&tm, &d, 1, 1);
    size_t len;
    unsigned char *img = frnn_write(&tm, "v", &len), *mut = malloc(len);
    fr_model *m = NULL;
    char err[256];
    check(fr_model_load_buffer(img, len, &m, err, sizeof err) == FR_OK, "variant image loads");
    fr_model_free(m);
    const double nan = strtod("nan", NULL), inf = strtod("inf", NULL);
    struct { size_t off; int bytes; uint64_t v; double f; const char *msg; } cases[] = {
        {64, 4, 143, 0, "variant block size"},
        {70, 1, 1, 0, "reserved bytes"},
        {76, 4, 1, 0, "reserved bytes"},
        {110, 1, 1, 0, "reserved bytes"},
        {68, 1, 2, 0, "peepholes"},
        {69, 1, 7, 0, "input_forget"},
        {72, 4, (1u << 20) + 1, 0, "proj_size"},
        {80, -1, 0, -1.0, "clip (finite"},
        {80, -1, 0, nan, "clip (finite"},
        {88, -1, 0, inf, "cell_clip (finite"},
        {96, -1, 0, -0.5, "proj_clip (finite"},
        {104, 1, 13, 0, "activation kind 13"},
        {112, -1, 0, inf, "alpha / beta not finite"},
        {120, -1, 0, nan, "alpha / beta not finite"},
        {136, -1, 0, 0.5, "takes no beta"},        /* elu's beta */
        {107, 1, 1, 0, "direction 1, slot f is unused"},
        {176, -1, 0, 1.0, "direction 1, slot g is unused"},
        {72, 4, 3, 0, "payload size"},             /* proj_size lies: the sizes catch it */
        {56, -1, 0, 0.25, "recurrent_dropout with a projection"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memcpy(mut, img, len);
        if (cases[i].bytes > 0) wr_put(mut + cases[i].off, cases[i].v, cases[i].bytes);
        else wr_f64(mut + cases[i].off, cases[i].f);
        frnn_fix_crc(mut, len);
        m = NULL;
        err[0] = 0;
        int rc = fr_model_load_buffer(mut, len, &m, err, sizeof err);
        char what[200];
        snprintf(what, sizeof what, "variant block edit at %zu: \"%s\"", cases[i].off, cases[i].msg);
        check(rc == FR_EFORMAT && m == NULL && strstr(err, cases[i].msg) != NULL, what);
        if (!(rc == FR_EFORMAT && strstr(err, cases[i].msg))) printf("  got %d: %s\n", rc, err);
    }
    /* slot h is tanh by default (kind 0): a sigmoid there with an alpha is refused */
    memcpy(mut, img, len);
    mut[106] = FR_ACT_SIGMOID;
    wr_f64(mut + 112 + 2 * 16, 0.3);
    frnn_fix_crc(mut, len);
    check(fr_model_load_buffer(mut, len, &m, err, sizeof err) == FR_EFORMAT
          && strstr(err, "takes no alpha") != NULL, "alpha of a function without one");
    /* truncated inside the variant block */
    check(fr_model_load_buffer(img, 100, &m, err, sizeof err) == FR_EFORMAT
          && strstr(err, "variant block") != NULL, "truncated inside the variant block");
    /* proj_clip without a projection; LSTM features in a GRU file */
    tm_free(&tm);
    fr_layer_desc g = mkdesc(FR_GRU, FR_FLOAT32, 1, 3, 4, 1, 0, FR_MASKED_ZERO);
    g.clip = 0.5;
    tm_init_desc(&tm, &g, 1, 1);
    free(img); free(mut);
    img = frnn_write(&tm, "", &len);
    mut = malloc(len);
    check(fr_model_load_buffer(img, len, &m, err, sizeof err) == FR_OK, "GRU variant image loads");
    fr_model_free(m);
    static const struct { size_t off; int bytes; uint64_t v; double f; const char *msg; } gcases[] = {
        {68, 1, 1, 0, "peepholes is an LSTM feature"},
        {69, 1, 1, 0, "input_forget is an LSTM feature"},
        {88, -1, 0, 0.5, "cell_clip is an LSTM feature"},
        {72, 4, 2, 0, "proj_size is an LSTM feature"},
        {96, -1, 0, 0.5, "proj_clip without a projection"},
        {106, 1, FR_ACT_TANH, 0, "direction 0, slot h is unused"},
    };
    for (size_t i = 0; i < sizeof gcases / sizeof gcases[0]; i++) {
        memcpy(mut, img, len);
        if (gcases[i].bytes > 0) wr_put(mut + gcases[i].off, gcases[i].v, gcases[i].bytes);
        else wr_f64(mut + gcases[i].off, gcases[i].f);
        frnn_fix_crc(mut, len);
        m = NULL;
        int rc = fr_model_load_buffer(mut, len, &m, err, sizeof err);
        check(rc == FR_EFORMAT && m == NULL && strstr(err, gcases[i].msg) != NULL, gcases[i].msg);
        if (!(rc == FR_EFORMAT && strstr(err, gcases[i].msg))) printf("  got %d: %s\n", rc, err);
    }
    free(img); free(mut);
    tm_free(&tm);
}

/* fr_step follows fr_set_isa made after the state was created (as fr_layer_forward does). */
static void isa_switch_case(void)
{
    if (!fr_isa_available(FR_ISA_AVX2)) return;
    test_model tm;
    tm_init(&tm, FR_LSTM, 0, FR_FLOAT32, 3, 20, 1, 1, 0, 0, 1);
    size_t len;
    unsigned char *img = frnn_write(&tm, "", &len);
    fr_model *m = NULL;
    fr_state *s = NULL;
    fr_model_load_buffer(img, len, &m, NULL, 0);
    fr_set_isa(FR_ISA_AVX2);
    fr_state_create(m, 1, &s);
    float x[3] = {0.3f, -1.0f, 0.7f}, y_step[20], y_seq[20];
    fr_set_isa(FR_ISA_BASELINE);
    fr_step(m, s, x, y_step);
    fr_sequence seq = {1, 1, x, NULL, NULL, NULL, NULL, y_seq, NULL, NULL};
    fr_forward(m, &seq, NULL, 0, 1);
    check(memcmp(y_step, y_seq, sizeof y_seq) == 0, "fr_step follows fr_set_isa");
    fr_set_isa(FR_ISA_AVX2);
    fr_state_free(s);
    fr_model_free(m);
    free(img);
    tm_free(&tm);
}

int main(int argc, char **argv)
{
    /* "quick": the default kernel variant and the small cases only (for runs under valgrind) */
    const int quick = argc > 1 && strcmp(argv[1], "quick") == 0;
    for (int isa = 0; isa < FR_ISA_COUNT; isa++) {
        if (quick ? isa != (int)fr_get_isa() : fr_set_isa((fr_isa)isa) != FR_OK) continue;
        for (int dt = 0; dt < 2; dt++)
            for (int cv = 0; cv < 3; cv++) {
                fr_cell cell = cv == 0 ? FR_LSTM : FR_GRU;
                int ra = cv == 1;
                forward_case(cell, ra, (fr_dtype)dt, 3, 5, 1, 1, 0, 0, 2, 4, 1);
                forward_case(cell, ra, (fr_dtype)dt, 4, 17, 3, 2, 0, 1, 5, 9, 1);
                forward_case(cell, ra, (fr_dtype)dt, 2, 33, 2, 1, 1, 0, 3, 12, 0);
                forward_case(cell, ra, (fr_dtype)dt, 7, 8, 2, 2, 0, 0, 13, 10, 1);
                step_case(cell, ra, (fr_dtype)dt, 1, 8, 1, 1, 12, 0);
                step_case(cell, ra, (fr_dtype)dt, 3, 17, 2, 3, 9, 1);
                step_case(cell, ra, (fr_dtype)dt, 5, 1, 1, 7, 3, 1);
                if (quick) continue;
                step_case(cell, ra, (fr_dtype)dt, 16, 64, 3, 2, 10, 0);
                step_case(cell, ra, (fr_dtype)dt, 300, 40, 1, 1, 8, 0);  /* K > 256 blocking */
            }
        for (int dt = 0; dt < 2; dt++) variant_cases((fr_dtype)dt);
    }
    format_errors();
    variant_format_errors();
    if (!quick) isa_switch_case();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
