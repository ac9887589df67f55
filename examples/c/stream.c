/* Streaming inference from C: load a .frnn model (exported from PyTorch or Keras through
 * fastrnn: `layer.save("model.frnn")` in Python, or `fastrnn convert model.pt -o model.frnn`)
 * and run it sample by sample.
 *
 *   make -C src        # then, with the static library (OpenMP and libm linked here):
 *   cc -O2 -Isrc/fastrnn examples/c/stream.c src/build/libfastrnn.a -fopenmp -lm -o stream
 *   # or after `make -C src install PREFIX=...`, with PKG_CONFIG_PATH=PREFIX/lib/pkgconfig:
 *   cc -O2 examples/c/stream.c $(pkg-config --cflags --libs fastrnn) -lm -o stream
 *   ./stream model.frnn                     # a synthetic signal, prints the step latency
 *   ./stream model.frnn in.bin out.bin      # raw (T, input_size) samples in the model's dtype
 *                                           # -> raw (T, units) outputs: the last
 *                                           #    layer's hidden_size, or its proj_size
 *
 * The hot loop calls fr_step only: no allocation, no lock. Each step is timed with a
 * monotonic clock and the median is printed (nanoseconds per step, batch of one stream). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "fastrnn.h"

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    if (argc != 2 && argc != 4) {
        fprintf(stderr, "usage: %s MODEL.frnn [INPUT.bin OUTPUT.bin]\n", argv[0]);
        return 2;
    }
    char err[256];
    fr_model *model = NULL;
    int rc = fr_model_load_file(argv[1], &model, err, sizeof err);
    if (rc != FR_OK) {
        fprintf(stderr, "cannot load %s: %s (%s)\n", argv[1], err, fr_strerror(rc));
        return 1;
    }
    const fr_layer_desc *d = fr_model_layer(model, 0);
    const int I = d->input_size, H = d->hidden_size;
    /* fr_step writes the last layer's h: proj_size units with a projection, else hidden_size */
    const fr_layer_desc *last_layer = fr_model_layer(model, fr_model_num_layers(model) - 1);
    const int Y = last_layer->proj_size > 0 ? last_layer->proj_size : last_layer->hidden_size;
    const size_t e = d->dtype == FR_FLOAT32 ? sizeof(float) : sizeof(double);
    printf("model: %s%s, %d layer(s), input %d, hidden %d, %s\n",
           d->cell == FR_LSTM ? "LSTM" : "GRU",
           d->cell == FR_GRU ? (d->reset_after ? " (reset after)" : " (reset before)") : "",
           fr_model_num_layers(model), I, H, d->dtype == FR_FLOAT32 ? "float32" : "float64");
    printf("kernels: %s\n", d->weight_format == FR_WEIGHTS_INT8   ? fr_int8_kernel_name()
                            : d->weight_format == FR_WEIGHTS_BF16 ? fr_bf16_kernel_name()
                                                                  : fr_isa_name(fr_get_isa()));

    /* The input signal: a file, or 4000 samples of a sine chirp on every input feature. */
    long T = 4000;
    unsigned char *x = NULL;
    if (argc == 4) {
        FILE *f = fopen(argv[2], "rb");
        if (!f) { fprintf(stderr, "cannot open %s\n", argv[2]); return 1; }
        fseek(f, 0, SEEK_END);
        long bytes = ftell(f);
        fseek(f, 0, SEEK_SET);
        T = bytes / (long)(I * e);
        x = malloc((size_t)bytes + 1);
        if (T < 1 || (long)fread(x, 1, (size_t)bytes, f) != bytes) {
            fprintf(stderr, "cannot read samples from %s\n", argv[2]);
            return 1;
        }
        fclose(f);
    } else {
        x = malloc((size_t)T * I * e);
        for (long t = 0; t < T; t++)
            for (int i = 0; i < I; i++) {
                double v = sin(0.01 * t * (1.0 + 0.001 * t) + 0.5 * i);
                if (e == 4) ((float *)x)[t * I + i] = (float)v;
                else ((double *)x)[t * I + i] = v;
            }
    }

    /* Everything is allocated before the loop: the state, the outputs, the timings. */
    fr_state *state = NULL;
    rc = fr_state_create(model, 1, &state);
    if (rc != FR_OK) {
        fprintf(stderr, "cannot stream this model: %s\n", fr_strerror(rc));
        return 1;
    }
    unsigned char *y = malloc((size_t)T * Y * e);
    double *lat = malloc(sizeof(double) * (size_t)T);
    for (long t = 0; t < T; t++) {
        double t0 = now_ns();
        rc = fr_step(model, state, x + (size_t)t * I * e, y + (size_t)t * Y * e);
        lat[t] = now_ns() - t0;
        if (rc != FR_OK) {
            fprintf(stderr, "step %ld failed: %s\n", t, fr_strerror(rc));
            return 1;
        }
    }
    qsort(lat, (size_t)T, sizeof(double), cmp_double);
    double last = e == 4 ? ((float *)y)[(T - 1) * Y] : ((double *)y)[(T - 1) * Y];
    printf("steps: %ld, last y[0] = %.6f\n", T, last);
    printf("median step latency: %.0f ns (min %.0f ns, includes ~20-40 ns of clock reads)\n",
           lat[T / 2], lat[0]);
    if (argc == 4) {
        FILE *f = fopen(argv[3], "wb");
        if (!f || fwrite(y, e, (size_t)T * Y, f) != (size_t)T * Y) {
            fprintf(stderr, "cannot write %s\n", argv[3]);
            return 1;
        }
        fclose(f);
    }
    free(lat);
    free(y);
    free(x);
    fr_state_free(state);
    fr_model_free(model);
    return 0;
}
