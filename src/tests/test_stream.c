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
typedef struct packed { void *mem[16][4]; fr_weights w[16]; } packed;

static void pack_model(const test_model *m, packed *pk)
{
    const fr_layer_desc *d = &m->d;
    int G = fr_num_gates(d->cell), H = d->hidden_size, Hp = fr_gate_stride(d->dtype, H);
    size_t e = d->dtype == FR_FLOAT32 ? 4 : 8;
    ptrdiff_t ld = fr_recommended_ld(d->cell, d->dtype, H);
    for (int i = 0; i < m->L * d->num_directions; i++) {
        int in = tm_in(m, i / d->num_directions);
        void *tx = typed(m->Wx[i], (size_t)in * G * H, d->dtype);
        void *th = typed(m->Wh[i], (size_t)H * G * H, d->dtype);
        void *tb = typed(m->b[i], (size_t)G * H, d->dtype);
        void *trb = typed(m->rb[i], (size_t)G * H, d->dtype);
        pk->mem[i][0] = calloc((size_t)in * ld, e);
        pk->mem[i][1] = calloc((size_t)H * ld, e);
        pk->mem[i][2] = calloc((size_t)G * Hp, e);
        pk->mem[i][3] = calloc((size_t)G * Hp, e);
        fr_pack_weights(d->cell, d->dtype, H, in, tx, pk->mem[i][0], ld);
        fr_pack_weights(d->cell, d->dtype, H, H, th, pk->mem[i][1], ld);
        fr_pack_weights(d->cell, d->dtype, H, 1, tb, pk->mem[i][2], (ptrdiff_t)G * Hp);
        fr_pack_weights(d->cell, d->dtype, H, 1, trb, pk->mem[i][3], (ptrdiff_t)G * Hp);
        fr_weights w = {pk->mem[i][0], pk->mem[i][1], pk->mem[i][2],
                        d->cell == FR_GRU ? pk->mem[i][3] : NULL, ld};
        pk->w[i] = w;
        free(tx); free(th); free(tb); free(trb);
    }
}

static void unpack_model(const test_model *m, packed *pk)
{
    for (int i = 0; i < m->L * m->d.num_directions; i++)
        for (int k = 0; k < 4; k++) free(pk->mem[i][k]);
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
    /* the same bytes through a file */
    FILE *f = fopen("build/test_stream.frnn", "wb");
    fwrite(img, 1, len, f);
    fclose(f);
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
        double err = 0;
        for (size_t i = 0; i < ny; i++) {
            double a = e == 4 ? ((float *)ystep)[i] : ((double *)ystep)[i];
            double b = e == 4 ? ((float *)yref)[i] : ((double *)yref)[i];
            err = fmax(err, fabs(a - b));
        }
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
    img[4] = 2;  /* version 2 */
    frnn_fix_crc(img, len);
    check(fr_model_load_buffer(img, len, &m, err, sizeof err) == FR_EVERSION && m == NULL &&
          strstr(err, "version 2") != NULL, "version 2 rejected with a message");
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
    fr_layer_desc bad = {FR_LSTM, FR_FLOAT32, 0, 0, 4, 1, 0, FR_MASKED_ZERO};
    float dummy[4] = {0};
    fr_weights w = {dummy, dummy, NULL, NULL, 1000};
    check(fr_model_create(&bad, 1, &w, &m) == FR_EINVAL && m == NULL, "bad desc rejected");
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
    }
    format_errors();
    if (!quick) isa_switch_case();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
