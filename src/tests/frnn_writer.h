/* A .frnn writer for the C tests, written from docs/frnn-format.md independently of the
 * library's reader (its own CRC32 too), plus the random weights the tests use. */
#ifndef FRNN_TEST_WRITER_H
#define FRNN_TEST_WRITER_H
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "fastrnn.h"

static unsigned long long wr_rng = 88172645463325252ULL;
static double wr_urand(void) /* xorshift64 in [-1, 1) */
{
    wr_rng ^= wr_rng << 13; wr_rng ^= wr_rng >> 7; wr_rng ^= wr_rng << 17;
    return (double)(wr_rng >> 11) / (double)(1ULL << 53) * 2.0 - 1.0;
}

static uint32_t wr_crc32(const unsigned char *p, size_t n) /* bitwise, reflected 0xEDB88320 */
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return ~c;
}

/* Model in plain double form: per (layer, direction) Wx (I_k, G*H), Wh (R, G*H) with R = P
 * with a projection and H otherwise, b, rb (G*H), gates side by side in canonical order;
 * with the variant fields of d: pp (3*H: peepholes input, forget, output) and Wp (H, P). */
typedef struct test_model {
    fr_layer_desc d;   /* layer 0, variant fields included */
    int L, use_bias;
    int version;       /* written version: 2 for a variant descriptor, else 1 (may be forced) */
    unsigned char linear[2][3];  /* write activation code 12 (linear) for this entry */
    double *Wx[16], *Wh[16], *b[16], *rb[16], *pp[16], *Wp[16];
} test_model;

static int tm_units(const test_model *m) /* R: units of h */
{
    return m->d.proj_size > 0 ? m->d.proj_size : m->d.hidden_size;
}

static int tm_in(const test_model *m, int k)
{
    return k == 0 ? m->d.input_size : m->d.num_directions * tm_units(m);
}

static int tm_is_variant(const fr_layer_desc *d)
{
    if (d->clip != 0 || d->cell_clip != 0 || d->peepholes || d->input_forget || d->proj_size
        || d->proj_clip != 0)
        return 1;
    for (int i = 0; i < 6; i++) if (d->act[i / 3][i % 3].kind != FR_ACT_DEFAULT) return 1;
    return 0;
}

/* A model for any descriptor (variant fields included); random weights. */
static void tm_init_desc(test_model *m, const fr_layer_desc *d, int L, int use_bias)
{
    memset(m, 0, sizeof *m);
    m->d = *d;
    m->L = L;
    m->use_bias = use_bias;
    m->version = tm_is_variant(d) ? 2 : 1;
    const int H = d->hidden_size, R = tm_units(m), GH = fr_num_gates(d->cell) * H;
    for (int i = 0; i < L * d->num_directions; i++) {
        int in = tm_in(m, i / d->num_directions);
        m->Wx[i] = malloc(sizeof(double) * in * GH);
        m->Wh[i] = malloc(sizeof(double) * R * GH);
        m->b[i] = calloc(GH, sizeof(double));
        m->rb[i] = calloc(GH, sizeof(double));
        m->pp[i] = calloc((size_t)3 * H, sizeof(double));
        m->Wp[i] = calloc((size_t)H * (d->proj_size > 0 ? d->proj_size : 1), sizeof(double));
        for (int j = 0; j < in * GH; j++) m->Wx[i][j] = 0.6 * wr_urand();
        for (int j = 0; j < R * GH; j++) m->Wh[i][j] = 0.6 * wr_urand();
        for (int j = 0; j < GH && use_bias; j++) {
            m->b[i][j] = 0.4 * wr_urand();
            if (d->cell == FR_GRU) m->rb[i][j] = 0.4 * wr_urand();
        }
        for (int j = 0; j < 3 * H && d->peepholes; j++) m->pp[i][j] = 0.5 * wr_urand();
        for (int j = 0; j < H * d->proj_size; j++) m->Wp[i][j] = 0.7 * wr_urand();
    }
}

static void tm_init(test_model *m, fr_cell cell, int reset_after, fr_dtype dtype, int I, int H,
                    int L, int D, int reverse, int carry, int use_bias)
{
    fr_layer_desc d = {.cell = cell, .dtype = dtype,
                       .reset_after = cell == FR_GRU ? reset_after : 0, .input_size = I,
                       .hidden_size = H, .num_directions = D, .reverse = reverse,
                       .masked_output = carry ? FR_MASKED_CARRY : FR_MASKED_ZERO};
    tm_init_desc(m, &d, L, use_bias);
}

/* Activation entry (dir, slot) becomes the identity, written as file code 12 (linear); the
 * descriptor (the reference) holds the equivalent affine(1, 0). */
static void tm_set_linear(test_model *m, int dir, int slot)
{
    m->linear[dir][slot] = 1;
    m->d.act[dir][slot].kind = FR_ACT_AFFINE;
    m->d.act[dir][slot].alpha = 1.0;
    m->d.act[dir][slot].beta = 0.0;
    m->version = 2;
}

static void tm_free(test_model *m)
{
    for (int i = 0; i < m->L * m->d.num_directions; i++) {
        free(m->Wx[i]); free(m->Wh[i]); free(m->b[i]); free(m->rb[i]); free(m->pp[i]);
        free(m->Wp[i]);
    }
}

static unsigned char *wr_put(unsigned char *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++) p[i] = (unsigned char)(v >> (8 * i));
    return p + n;
}

static unsigned char *wr_vals(unsigned char *p, const double *src, ptrdiff_t stride, int n,
                              fr_dtype dt)
{
    for (int i = 0; i < n; i++) {
        uint64_t bits;
        if (dt == FR_FLOAT32) {
            float f = (float)src[i * stride];
            uint32_t u;
            memcpy(&u, &f, 4);
            bits = u;
        } else {
            memcpy(&bits, &src[i * stride], 8);
        }
        p = wr_put(p, bits, dt == FR_FLOAT32 ? 4 : 8);
    }
    return p;
}

static unsigned char *wr_f64(unsigned char *p, double v)
{
    uint64_t bits;
    memcpy(&bits, &v, 8);
    return wr_put(p, bits, 8);
}

#define WR_VARIANT_SIZE 144

/* Serialise (version m->version); returns a malloc'ed image and its length. */
static unsigned char *frnn_write(const test_model *m, const char *name, size_t *len)
{
    const fr_layer_desc *d = &m->d;
    const int G = fr_num_gates(d->cell), H = d->hidden_size, D = d->num_directions;
    const int R = tm_units(m), P = d->proj_size;
    const int e = d->dtype == FR_FLOAT32 ? 4 : 8, nvec = m->use_bias ? (d->cell == FR_GRU ? 2 : 1) : 0;
    const size_t head = 64 + (m->version == 2 ? WR_VARIANT_SIZE : 0);
    size_t name_len = strlen(name), payload = 0;
    for (int k = 0; k < m->L; k++)
        payload += (size_t)D * ((size_t)G * (tm_in(m, k) + R + nvec) * H
                                + (d->peepholes ? 3 * (size_t)H : 0) + (size_t)H * P) * e;
    *len = head + name_len + payload + 4;
    unsigned char *buf = calloc(*len, 1), *p = buf;
    memcpy(p, "FRNN", 4);
    wr_put(p + 4, (uint64_t)m->version, 2);
    wr_put(p + 6, 64, 2);
    wr_put(p + 8, 0x01020304u, 4);
    p[12] = (unsigned char)d->dtype;
    p[13] = (unsigned char)d->cell;
    p[14] = (unsigned char)d->reset_after;
    p[15] = (unsigned char)d->masked_output;
    p[16] = (unsigned char)D;
    p[17] = (unsigned char)d->reverse;
    p[18] = (unsigned char)m->use_bias;
    wr_put(p + 20, (uint64_t)d->input_size, 4);
    wr_put(p + 24, (uint64_t)H, 4);
    wr_put(p + 28, (uint64_t)m->L, 4);
    wr_put(p + 32, name_len, 4);
    wr_put(p + 40, payload, 8);
    /* dropout, recurrent_dropout: 0.0 (all-zero bits) */
    if (m->version == 2) {  /* the variant block (docs/frnn-format.md) */
        unsigned char *q = p + 64;
        wr_put(q, WR_VARIANT_SIZE, 4);
        q[4] = (unsigned char)d->peepholes;
        q[5] = (unsigned char)d->input_forget;
        wr_put(q + 8, (uint64_t)P, 4);
        wr_f64(q + 16, d->clip);
        wr_f64(q + 24, d->cell_clip);
        wr_f64(q + 32, d->proj_clip);
        for (int dir = 0; dir < D; dir++)
            for (int s = 0; s < (d->cell == FR_GRU ? 2 : 3); s++) {
                const fr_activation *a = &d->act[dir][s];
                const int lin = m->linear[dir][s];
                q[40 + dir * 3 + s] = (unsigned char)(lin ? 12 : a->kind);
                wr_f64(q + 48 + (dir * 3 + s) * 16, lin ? 0.0 : a->alpha);
                wr_f64(q + 56 + (dir * 3 + s) * 16, lin ? 0.0 : a->beta);
            }
    }
    memcpy(p + head, name, name_len);
    p += head + name_len;
    for (int i = 0; i < m->L * D; i++) {
        int in = tm_in(m, i / D);
        for (int g = 0; g < G; g++) {
            for (int r = 0; r < in; r++) p = wr_vals(p, m->Wx[i] + (size_t)r * G * H + g * H, 1, H, d->dtype);
            for (int r = 0; r < R; r++) p = wr_vals(p, m->Wh[i] + (size_t)r * G * H + g * H, 1, H, d->dtype);
            if (nvec >= 1) p = wr_vals(p, m->b[i] + g * H, 1, H, d->dtype);
            if (nvec == 2) p = wr_vals(p, m->rb[i] + g * H, 1, H, d->dtype);
        }
        if (d->peepholes) p = wr_vals(p, m->pp[i], 1, 3 * H, d->dtype);
        if (P > 0) p = wr_vals(p, m->Wp[i], 1, H * P, d->dtype);
    }
    wr_put(p, wr_crc32(buf, *len - 4), 4);
    return buf;
}

/* Rewrite the CRC after a deliberate edit (tests of the size checks behind the CRC). */
static void frnn_fix_crc(unsigned char *buf, size_t len)
{
    wr_put(buf + len - 4, wr_crc32(buf, len - 4), 4);
}
#endif
