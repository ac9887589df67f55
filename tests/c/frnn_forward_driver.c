/* Test driver: whole-sequence inference of a .frnn model from C (fr_forward), for the
 * cross-checks in tests/test_embedded.py. Raw little-endian files in the model's dtype.
 *   frnn_forward_driver MODEL B T X.bin LENGTHS.bin|- H0.bin|- C0.bin|- OUT_PREFIX
 * writes OUT_PREFIX.y (B, T, D*H), OUT_PREFIX.h (L*D, B, H) and, for LSTM, OUT_PREFIX.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fastrnn.h"

static void *slurp(const char *path, size_t want)
{
    if (strcmp(path, "-") == 0) return NULL;
    FILE *f = fopen(path, "rb");
    void *p = malloc(want ? want : 1);
    if (!f || fread(p, 1, want, f) != want) { fprintf(stderr, "cannot read %s\n", path); exit(1); }
    fclose(f);
    return p;
}

static void dump(const char *prefix, const char *ext, const void *p, size_t n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s.%s", prefix, ext);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n) { fprintf(stderr, "cannot write %s\n", path); exit(1); }
    fclose(f);
}

int main(int argc, char **argv)
{
    if (argc != 9) { fprintf(stderr, "usage: see the source\n"); return 2; }
    char err[256];
    fr_model *m = NULL;
    int rc = fr_model_load_file(argv[1], &m, err, sizeof err);
    if (rc != FR_OK) { fprintf(stderr, "load: %s\n", err); return 1; }
    const fr_layer_desc *d = fr_model_layer(m, 0);
    int B = atoi(argv[2]), T = atoi(argv[3]), L = fr_model_num_layers(m);
    size_t e = d->dtype == FR_FLOAT32 ? 4 : 8, D = (size_t)d->num_directions, H = (size_t)d->hidden_size;
    size_t ny = (size_t)B * T * D * H * e, ns = (size_t)L * D * B * H * e;
    void *x = slurp(argv[4], (size_t)B * T * d->input_size * e);
    int *lengths = slurp(argv[5], sizeof(int) * B);
    void *h0 = slurp(argv[6], ns), *c0 = slurp(argv[7], ns);
    void *y = malloc(ny), *hn = malloc(ns), *cn = malloc(ns);
    fr_sequence s = {B, T, x, lengths, NULL, h0, c0, y, hn, cn};
    rc = fr_forward(m, &s, NULL, 0, 1);
    if (rc != FR_OK) { fprintf(stderr, "fr_forward: %s\n", fr_strerror(rc)); return 1; }
    dump(argv[8], "y", y, ny);
    dump(argv[8], "h", hn, ns);
    if (d->cell == FR_LSTM) dump(argv[8], "c", cn, ns);
    free(x); free(lengths); free(h0); free(c0); free(y); free(hn); free(cn);
    fr_model_free(m);
    return 0;
}
