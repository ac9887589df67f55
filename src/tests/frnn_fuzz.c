/* Fuzz the .frnn loader: every truncation, every single-byte corruption, and header fields
 * (and, in version 2, the fields of the variant block) rewritten to lying values (with the CRC
 * recomputed, so the size checks themselves are hit). The loader must return an error, never
 * crash or read out of bounds (run it under valgrind or ASan to prove the latter: each image is
 * an exact-size heap copy). A mutated image that still loads must describe a consistent model:
 * a forward call on it must succeed (models with a projection: fr_forward may still answer
 * FR_EUNSUPPORTED, which is accepted for them only).
 * Usage: frnn_fuzz [file.frnn]   (default: images built here: a stacked bidirectional GRU
 * (version 1), a stacked bidirectional LSTM with every variant but the projection and a
 * stacked LSTM with a projection (version 2))
 * Prints "N passed, N failed". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fastrnn.h"
#include "frnn_writer.h"

static int passed = 0, failed = 0;
static void check(int ok, const char *what, size_t at)
{
    if (ok) passed++;
    else { failed++; printf("FAIL: %s (offset %zu)\n", what, at); }
}

/* Load an exact-size heap copy; if it loads, run it once. Returns the status. */
static int try_load(const unsigned char *img, size_t len)
{
    unsigned char *copy = malloc(len ? len : 1);
    memcpy(copy, img, len);
    fr_model *m = NULL;
    char err[128];
    int rc = fr_model_load_buffer(copy, len, &m, err, sizeof err);
    free(copy);
    if (rc == FR_OK) {
        const fr_layer_desc *d = fr_model_layer(m, 0);
        int L = fr_model_num_layers(m), D = d->num_directions;
        int H = d->hidden_size > d->proj_size ? d->hidden_size : d->proj_size;  /* h or c units */
        size_t e = d->dtype == FR_FLOAT32 ? 4 : 8;
        /* only run models of sane size (a valid mutation cannot grow the payload anyway) */
        void *x = calloc((size_t)2 * 3 * d->input_size, e), *y = calloc((size_t)2 * 3 * D * H, e);
        void *hn = calloc((size_t)L * D * 2 * H, e), *cn = calloc((size_t)L * D * 2 * H, e);
        fr_sequence s = {2, 3, x, NULL, NULL, NULL, NULL, y, hn, cn};
        int frc = fr_forward(m, &s, NULL, 0, 1);
        if (frc == FR_EUNSUPPORTED && d->proj_size > 0) frc = FR_OK;  /* not yet runnable */
        if (frc != FR_OK) rc = 1000 + frc;  /* loaded but unusable: a failure */
        free(x); free(y); free(hn); free(cn);
        fr_model_free(m);
    } else if (m != NULL || err[0] == '\0') {
        rc = 2000;  /* an error must leave *out NULL and say why */
    }
    return rc;
}

/* Every mutation of one image; head = bytes of the fixed header and the variant block. */
static void fuzz_image(const unsigned char *img, size_t len)
{
    const size_t head = len >= 6 && img[4] == 2 && img[5] == 0 ? 64 + 144 : 64;
    check(try_load(img, len) == FR_OK, "the original image loads", 0);
    for (size_t n = 0; n < len; n++)
        check(try_load(img, n) < 0, "truncated image rejected", n);
    unsigned char *mut = malloc(len);
    static const unsigned char flips[] = {0x01, 0x80, 0xFF, 0x10};
    for (size_t i = 0; i < len; i++)
        for (size_t k = 0; k < sizeof flips; k++) {
            memcpy(mut, img, len);
            mut[i] ^= flips[k];
            check(try_load(mut, len) < 0, "corrupted byte rejected (CRC)", i);
        }
    /* Lying header (and variant block) fields behind a valid CRC: every 4-byte field set to
     * values around the edges, every byte to each of a few values, every 8-byte float of the
     * variant block to special values. */
    static const uint32_t lies[] = {0, 1, 2, 3, 12, 13, 255, 256, 65535, 65536, 0x7FFFFFFFu,
                                    0x80000000u, 0xFFFFFFFFu, 1u << 20, (1u << 20) + 1, 4097};
    for (size_t off = 4; off + 4 <= head; off += 2)
        for (size_t k = 0; k < sizeof lies / sizeof lies[0]; k++) {
            memcpy(mut, img, len);
            wr_put(mut + off, lies[k], 4);
            frnn_fix_crc(mut, len);
            int rc = try_load(mut, len);
            check(rc <= 0, "lying header field: error or a consistent model", off);
        }
    for (size_t off = 4; off < head; off++)
        for (unsigned v = 0; v < 256; v += 7) {
            memcpy(mut, img, len);
            mut[off] = (unsigned char)v;
            frnn_fix_crc(mut, len);
            check(try_load(mut, len) <= 0, "header byte: error or a consistent model", off);
        }
    if (head > 64) {
        const double inf = strtod("inf", NULL), nan = strtod("nan", NULL);
        const double vals[] = {0.0, -0.0, 1.0, -1.0, 0.25, 1e300, -1e-300, inf, -inf, nan};
        for (size_t off = 64 + 16; off + 8 <= head; off += 8) {
            if (off >= 64 + 40 && off < 64 + 48) continue;  /* activation kinds, reserved */
            for (size_t k = 0; k < sizeof vals / sizeof vals[0]; k++) {
                memcpy(mut, img, len);
                wr_f64(mut + off, vals[k]);
                frnn_fix_crc(mut, len);
                check(try_load(mut, len) <= 0, "variant float: error or a consistent model", off);
            }
        }
    }
    /* payload_size lies in both directions, with the length following or not */
    for (int delta = -9; delta <= 9; delta++) {
        memcpy(mut, img, len);
        uint64_t p = 0;
        for (int i = 0; i < 8; i++) p |= (uint64_t)mut[40 + i] << (8 * i);
        wr_put(mut + 40, p + (uint64_t)(int64_t)delta, 8);
        frnn_fix_crc(mut, len);
        check(try_load(mut, len) == (delta == 0 ? FR_OK : FR_EFORMAT), "payload size lie", 40);
    }
    free(mut);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        unsigned char *img;
        size_t len;
        test_model tm;
        tm_init(&tm, FR_GRU, 0, FR_FLOAT32, 2, 3, 2, 2, 0, 0, 1);
        img = frnn_write(&tm, "fuzz", &len);
        tm_free(&tm);
        fuzz_image(img, len);
        free(img);
        /* version 2: every variant but the projection, per-direction activations */
        fr_layer_desc d = {.cell = FR_LSTM, .dtype = FR_FLOAT32, .input_size = 2,
                           .hidden_size = 3, .num_directions = 2, .clip = 1.5,
                           .cell_clip = 0.5, .peepholes = 1, .input_forget = 1};
        d.act[0][0].kind = FR_ACT_HARD_SIGMOID;
        d.act[0][0].alpha = 0.2;
        d.act[0][0].beta = 0.5;
        d.act[1][1].kind = FR_ACT_ELU;
        d.act[1][1].alpha = 0.8;
        tm_init_desc(&tm, &d, 2, 1);
        tm_set_linear(&tm, 1, FR_SLOT_H);
        img = frnn_write(&tm, "v2", &len);
        tm_free(&tm);
        fuzz_image(img, len);
        free(img);
        /* version 2 with a projection */
        fr_layer_desc p = {.cell = FR_LSTM, .dtype = FR_FLOAT64, .input_size = 2,
                           .hidden_size = 3, .num_directions = 1, .proj_size = 2,
                           .proj_clip = 0.5, .peepholes = 1};
        tm_init_desc(&tm, &p, 2, 0);
        img = frnn_write(&tm, "", &len);
        tm_free(&tm);
        fuzz_image(img, len);
        free(img);
    } else {
        FILE *f = fopen(argv[1], "rb");
        if (!f) { printf("cannot open %s\n", argv[1]); return 2; }
        fseek(f, 0, SEEK_END);
        size_t len = (size_t)ftell(f);
        fseek(f, 0, SEEK_SET);
        unsigned char *img = malloc(len);
        if (fread(img, 1, len, f) != len) { printf("cannot read %s\n", argv[1]); return 2; }
        fclose(f);
        fuzz_image(img, len);
        free(img);
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
