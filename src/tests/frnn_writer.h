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

/* Model in plain double form: per (layer, direction) Wx (I_k, G*H), Wh (H, G*H), b, rb (G*H),
 * gates side by side in canonical order. */
typedef struct test_model {
    fr_layer_desc d;   /* layer 0 */
    int L, use_bias;
    double *Wx[16], *Wh[16], *b[16], *rb[16];
} test_model;

static int tm_in(const test_model *m, int k)
{
    return k == 0 ? m->d.input_size : m->d.num_directions * m->d.hidden_size;
}

static void tm_init(test_model *m, fr_cell cell, int reset_after, fr_dtype dtype, int I, int H,
                    int L, int D, int reverse, int carry, int use_bias)
{
    fr_layer_desc d = {cell, dtype, cell == FR_GRU ? reset_after : 0, I, H, D, reverse,
                       carry ? FR_MASKED_CARRY : FR_MASKED_ZERO};
    memset(m, 0, sizeof *m);
    m->d = d;
    m->L = L;
    m->use_bias = use_bias;
    int GH = fr_num_gates(cell) * H;
    for (int i = 0; i < L * D; i++) {
        int in = tm_in(m, i / D);
        m->Wx[i] = malloc(sizeof(double) * in * GH);
        m->Wh[i] = malloc(sizeof(double) * H * GH);
        m->b[i] = calloc(GH, sizeof(double));
        m->rb[i] = calloc(GH, sizeof(double));
        for (int j = 0; j < in * GH; j++) m->Wx[i][j] = 0.6 * wr_urand();
        for (int j = 0; j < H * GH; j++) m->Wh[i][j] = 0.6 * wr_urand();
        for (int j = 0; j < GH && use_bias; j++) {
            m->b[i][j] = 0.4 * wr_urand();
            if (cell == FR_GRU) m->rb[i][j] = 0.4 * wr_urand();
        }
    }
}

static void tm_free(test_model *m)
{
    for (int i = 0; i < m->L * m->d.num_directions; i++) {
        free(m->Wx[i]); free(m->Wh[i]); free(m->b[i]); free(m->rb[i]);
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

/* Serialise; returns a malloc'ed image and its length. */
static unsigned char *frnn_write(const test_model *m, const char *name, size_t *len)
{
    const fr_layer_desc *d = &m->d;
    const int G = fr_num_gates(d->cell), H = d->hidden_size, D = d->num_directions;
    const int e = d->dtype == FR_FLOAT32 ? 4 : 8, nvec = m->use_bias ? (d->cell == FR_GRU ? 2 : 1) : 0;
    size_t name_len = strlen(name), payload = 0;
    for (int k = 0; k < m->L; k++)
        payload += (size_t)D * G * ((size_t)(tm_in(m, k) + H + nvec) * H) * e;
    *len = 64 + name_len + payload + 4;
    unsigned char *buf = calloc(*len, 1), *p = buf;
    memcpy(p, "FRNN", 4);
    wr_put(p + 4, 1, 2);
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
    memcpy(p + 64, name, name_len);
    p += 64 + name_len;
    for (int i = 0; i < m->L * D; i++) {
        int in = tm_in(m, i / D);
        for (int g = 0; g < G; g++) {
            for (int r = 0; r < in; r++) p = wr_vals(p, m->Wx[i] + (size_t)r * G * H + g * H, 1, H, d->dtype);
            for (int r = 0; r < H; r++) p = wr_vals(p, m->Wh[i] + (size_t)r * G * H + g * H, 1, H, d->dtype);
            if (nvec >= 1) p = wr_vals(p, m->b[i] + g * H, 1, H, d->dtype);
            if (nvec == 2) p = wr_vals(p, m->rb[i] + g * H, 1, H, d->dtype);
        }
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
