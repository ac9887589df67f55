/* Every int8 micro-kernel this build and CPU offer (x86: AVX2, AVX-VNNI, AVX-512 VNNI; AArch64:
 * dot product) against the portable one, bitwise, and the portable one against a plain integer
 * sum: row counts 1-9 (every tile shape and tail), depths that are and are not multiples of 4,
 * several panels, the extreme values -127 / 127 and activations at both ends, with and without
 * bias. Kernels the CPU lacks are reported as skipped. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

static int passed = 0, failed = 0;

static void check(int ok, const char *what)
{
    if (ok) passed++;
    else { failed++; printf("FAIL: %s\n", what); }
}

static unsigned long long rng = 0x9e3779b97f4a7c15ull;
static int urand_int(int lo, int hi) /* xorshift64 in [lo, hi] */
{
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return lo + (int)(rng % (unsigned long long)(hi - lo + 1));
}

static const char *const kernels[] = {"int8-avx2", "int8-avxvnni", "int8-avx512vnni",
                                      "int8-neondot"};

static void run_case(int M, int K, int cols, int extreme, int with_bias)
{
    const int K4 = fr_qk4(K), lda = 4 * K4 + 8;
    signed char *q = malloc((size_t)K * cols), *data = malloc(fr_qmatrix_data_size(K, cols));
    int *colsum = malloc(sizeof(int) * cols);
    float *scale = malloc(sizeof(float) * cols), *bias = malloc(sizeof(float) * cols);
    unsigned char *a = malloc((size_t)M * lda);
    float *s = malloc(sizeof(float) * M);
    float *ref = malloc(sizeof(float) * M * cols), *out = malloc(sizeof(float) * M * cols);
    for (int i = 0; i < K * cols; i++)
        q[i] = (signed char)(extreme ? (urand_int(0, 1) ? 127 : -127) : urand_int(-127, 127));
    for (int c = 0; c < cols; c++) {
        scale[c] = (float)urand_int(1, 1000) / 4096.0f;
        bias[c] = (float)urand_int(-1000, 1000) / 512.0f;
    }
    for (int r = 0; r < M; r++) {
        s[r] = (float)urand_int(1, 1000) / 8192.0f;
        for (int k = 0; k < lda; k++)  /* a + 128; padding past K is 128 (a = 0) */
            a[r * lda + k] = (unsigned char)(k >= K ? FR_QOFFSET
                                             : extreme ? (urand_int(0, 1) ? 255 : 1)
                                                       : urand_int(1, 255));
    }
    fr_pack_int8(q, K, cols, cols, data, colsum);
    const fr_qmatrix w = {K, cols, data, scale, colsum};
    const float *b = with_bias ? bias : NULL;
    const fr_qkernels *base = fr_qkernels_by_name("int8-baseline");
    char what[160];
    snprintf(what, sizeof what, "int8-baseline == integer reference M=%d K=%d cols=%d%s%s", M, K,
             cols, extreme ? " extreme" : "", with_bias ? " bias" : "");
    base->gemm(M, cols, a, lda, s, &w, 0, b, ref, cols);
    int ok = 1;
    for (int r = 0; r < M && ok; r++)
        for (int c = 0; c < cols; c++) {
            int sum = 0;
            for (int k = 0; k < K; k++) sum += (a[r * lda + k] - FR_QOFFSET) * q[k * cols + c];
            const float m = s[r] * scale[c], f = (float)sum * m;
            const float want = b ? b[c] + f : f;
            if (memcmp(&want, &ref[r * cols + c], sizeof want) != 0) { ok = 0; break; }
        }
    check(ok, what);
    for (size_t i = 0; i < sizeof kernels / sizeof kernels[0]; i++) {
        const fr_qkernels *k = fr_qkernels_by_name(kernels[i]);
        if (!k) continue;
        memset(out, 0xff, sizeof(float) * M * cols);
        k->gemm(M, cols, a, lda, s, &w, 0, b, out, cols);
        snprintf(what, sizeof what, "%s == int8-baseline M=%d K=%d cols=%d%s%s", kernels[i], M,
                 K, cols, extreme ? " extreme" : "", with_bias ? " bias" : "");
        check(memcmp(out, ref, sizeof(float) * M * cols) == 0, what);
        /* a column block that starts past the first panel */
        if (cols > 16) {
            memset(out, 0xff, sizeof(float) * M * cols);
            k->gemm(M, cols - 16, a, lda, s, &w, 16, b, out, cols);
            int same = 1;
            for (int r = 0; r < M; r++)
                same &= memcmp(out + r * cols, ref + r * cols + 16,
                               sizeof(float) * (cols - 16)) == 0;
            check(same, "column block from 16");
        }
    }
    free(q); free(data); free(colsum); free(scale); free(bias); free(a); free(s); free(ref);
    free(out);
}

int main(void)
{
    for (size_t i = 0; i < sizeof kernels / sizeof kernels[0]; i++)
        printf("%s: %s\n", kernels[i], fr_qkernels_by_name(kernels[i]) ? "tested" :
               "not on this CPU / build (skipped)");
    const int Ks[] = {1, 3, 4, 5, 17, 64, 129};
    for (int M = 1; M <= 9; M++)
        for (size_t ki = 0; ki < sizeof Ks / sizeof Ks[0]; ki++)
            for (int cols = 16; cols <= 48; cols += 32)
                for (int extreme = 0; extreme <= 1; extreme++)
                    run_case(M, Ks[ki], cols, extreme, (M + extreme) % 2);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
