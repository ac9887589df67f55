/* Models (.frnn loader, stacked layers), whole-sequence calls and the streaming step API.
 * The .frnn byte layout is specified in docs/frnn-format.md; the checks here follow it. */
#if !defined(_POSIX_C_SOURCE) && !defined(_WIN32)
#define _POSIX_C_SOURCE 200809L  /* clock_gettime */
#endif
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "internal.h"

/* ---- .frnn constants (docs/frnn-format.md) ---- */
#define FRNN_VERSION 1             /* the plain cell */
#define FRNN_VERSION_VARIANT 2     /* cell variants: a variant block follows the header */
#define FRNN_VERSION_QUANTIZED 3        /* quantized weights: version 2's layout, header byte 19 =
                                      1 (int8) or 2 (bf16) */
#define FRNN_HEADER_SIZE 64
#define FRNN_VARIANT_SIZE 144      /* bytes of the version-2 variant block */
#define FRNN_ACT_LINEAR FR_ACT_COUNT  /* file activation code 12: identity = affine(1, 0) */
#define FRNN_ENDIAN_MARK 0x01020304u
#define FRNN_MAX_DIM (1 << 20)     /* input_size, hidden_size */
#define FRNN_MAX_LAYERS 4096
#define FRNN_MAX_NAME 4096

struct fr_model {
    int num_layers;
    int num_directions;
    fr_layer_desc *layers;  /* num_layers */
    fr_weights *w;          /* num_layers * num_directions */
    void *weights_mem;      /* owned packed weights (NULL: caller-owned weights) */
};

struct fr_state {
    const fr_model *model;
    int batch, parity;
    void *alloc;               /* fr_state_create's allocation, or NULL (caller memory) */
    int num_layers, hidden_size, out_stride;  /* out_stride: h row stride, Hp (or Pp) */
    int h_units;               /* units of h: proj_size, or hidden_size */
    int c_stride;              /* c row stride: Hp */
    size_t elem;
    fr_dtype dtype;
    fr_step_args *args;        /* per layer; x / hprev / hnew set at each step */
    char *h[2];                /* (num_layers, batch, out_stride) each: previous / new */
    char *c;                   /* (num_layers, batch, Hp) */
    size_t layer_bytes;        /* batch * out_stride * elem: one layer of h */
    size_t c_layer_bytes;      /* batch * Hp * elem: one layer of c */
    /* int8 / bf16 models: each step runs fr_layer_forward (T = 1, one thread) in this
     * workspace, on plain state rows (out_stride = c_stride = hidden_size). */
    int quantized;
    void *ws;
    size_t ws_size;
};

static size_t elem_bytes(fr_dtype dtype) { return dtype == FR_FLOAT64 ? 8 : 4; }

static void set_err(char *err, size_t err_size, const char *fmt, ...)
{
    if (!err || err_size == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_size, fmt, ap);
    va_end(ap);
}

const char *fr_strerror(int status)
{
    switch (status) {
    case FR_OK: return "ok";
    case FR_EINVAL: return "invalid argument";
    case FR_EWORKSPACE: return "workspace missing or too small";
    case FR_EUNSUPPORTED: return "kernel variant not available, or a cell variant / int8 or bf16 weights this function does not run yet";
    case FR_EIO: return "file could not be read";
    case FR_EFORMAT: return "malformed .frnn data";
    case FR_EVERSION: return "unsupported .frnn version";
    case FR_ENOMEM: return "out of memory";
    case FR_ENOTSTREAMABLE: return "stepping needs a unidirectional, non-reversed model";
    }
    return "unknown status";
}

/* ---- checked size arithmetic (uint64_t; every file size goes through these) ---- */

static int add_u64(uint64_t a, uint64_t b, uint64_t *out)
{
    if (a > UINT64_MAX - b) return 0;
    *out = a + b;
    return 1;
}

static int mul_u64(uint64_t a, uint64_t b, uint64_t *out)
{
    if (a != 0 && b > UINT64_MAX / a) return 0;
    *out = a * b;
    return 1;
}

/* ---- little-endian decoding, CRC32 (IEEE 802.3, as zlib.crc32) ---- */

static uint32_t rd_u16(const unsigned char *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8; }
static uint32_t rd_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t rd_u64(const unsigned char *p)
{
    return (uint64_t)rd_u32(p) | (uint64_t)rd_u32(p + 4) << 32;
}
static double rd_f64(const unsigned char *p)
{
    uint64_t u = rd_u64(p);
    double d;
    memcpy(&d, &u, sizeof d);  /* IEEE-754 binary64 assumed, as everywhere in the core */
    return d;
}

static uint32_t crc32_update(uint32_t crc, const unsigned char *p, size_t n)
{
    static const uint32_t nibble[16] = {
        0x00000000u, 0x1DB71064u, 0x3B6E20C8u, 0x26D930ACu, 0x76DC4190u, 0x6B6B51F4u,
        0x4DB26158u, 0x5005713Cu, 0xEDB88320u, 0xF00F9344u, 0xD6D6A3E8u, 0xCB61B38Cu,
        0x9B64C2B0u, 0x86D3D2D4u, 0xA00AE278u, 0xBDBDF21Cu};
    crc = ~crc;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        crc = (crc >> 4) ^ nibble[crc & 15];
        crc = (crc >> 4) ^ nibble[crc & 15];
    }
    return ~crc;
}

static int host_is_little_endian(void)
{
    const uint16_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

/* Copy n little-endian elements of size e from src to dst in host order. */
static void copy_le(void *dst, const unsigned char *src, size_t n, size_t e)
{
    memcpy(dst, src, n * e);
    if (host_is_little_endian()) return;
    unsigned char *d = (unsigned char *)dst;
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < e / 2; k++) {
            unsigned char t = d[i * e + k];
            d[i * e + k] = d[i * e + e - 1 - k];
            d[i * e + e - 1 - k] = t;
        }
}

/* ---- header ---- */

typedef struct frnn_header {
    fr_layer_desc desc;     /* layer 0, variant fields included */
    int version;
    int num_layers;
    int use_bias;
    uint32_t name_length;
    uint64_t name_offset;   /* 64 (version 1) or 64 + FRNN_VARIANT_SIZE (versions 2, 3) */
    double recurrent_dropout;
    uint64_t payload_size;
    uint64_t total_size;
} frnn_header;

/* Units of h (the recurrent rows, the input width of layers k > 0 / D): P or H. */
static int desc_h_units(const fr_layer_desc *d)
{
    return d->proj_size > 0 ? d->proj_size : d->hidden_size;
}

/* Bytes of one (layer, direction) record: per gate kernel (I*H), recurrent (R*H, R = P with a
 * projection, else H), then bias (H) and, for GRU, recurrent_bias (H) when the file has
 * biases; then the peepholes (3*H) and the projection (H*P) when present. */
static int record_bytes(const frnn_header *h, int input_size, uint64_t *out)
{
    const fr_layer_desc *d = &h->desc;
    if (d->weight_format) {  /* per gate: int8 kernel, f32 scales, int8 recurrent, f32 scales
                               (bf16: u16 kernel, u16 recurrent), f32 biases; then f32
                               peepholes (docs/frnn-format.md) */
        const int bf16 = d->weight_format == FR_WEIGHTS_BF16;
        uint64_t G = (uint64_t)fr_num_gates(d->cell), H = (uint64_t)d->hidden_size, t, u;
        uint64_t nvec = h->use_bias ? (d->cell == FR_GRU ? 2 : 1) : 0;
        if (!add_u64((uint64_t)input_size, H, &t) || !mul_u64(t, H * (bf16 ? 2 : 1), &t)
            || !mul_u64(H, 4 * ((bf16 ? 0 : 2) + nvec), &u) || !add_u64(t, u, &t)
            || !mul_u64(t, G, &t))
            return 0;
        if (d->peepholes && (!mul_u64(H, 12, &u) || !add_u64(t, u, &t))) return 0;
        *out = t;
        return 1;
    }
    uint64_t G = (uint64_t)fr_num_gates(d->cell), H = (uint64_t)d->hidden_size;
    uint64_t R = (uint64_t)desc_h_units(d), P = d->proj_size > 0 ? (uint64_t)d->proj_size : 0;
    uint64_t per_gate, t, elems;
    uint64_t nvec = h->use_bias ? (d->cell == FR_GRU ? 2 : 1) : 0;
    if (!add_u64((uint64_t)input_size, R, &t) || !add_u64(t, nvec, &t)
        || !mul_u64(t, H, &per_gate) || !mul_u64(per_gate, G, &elems))
        return 0;
    if (d->peepholes && (!mul_u64(3, H, &t) || !add_u64(elems, t, &elems))) return 0;
    if (P && (!mul_u64(H, P, &t) || !add_u64(elems, t, &elems))) return 0;
    return mul_u64(elems, elem_bytes(d->dtype), out);
}

/* Which activation kinds read alpha (which = 0) / beta (which = 1) (fastrnn.h). */
static int act_takes(unsigned kind, int which)
{
    switch (kind) {
    case FR_ACT_HARD_SIGMOID: case FR_ACT_SCALED_TANH: case FR_ACT_AFFINE: return 1;
    case FR_ACT_ELU: case FR_ACT_LEAKY_RELU: case FR_ACT_THRESHOLDED_RELU: return which == 0;
    default: return 0;
    }
}

static int finite_f64(double v) { return v == v && v - v == 0.0; }

/* The version-2 variant block at q (FRNN_VARIANT_SIZE bytes; the fixed header already parsed
 * into h->desc): validate and fill the descriptor's variant fields. */
static int parse_variant(const unsigned char *q, frnn_header *h, char *err, size_t err_size)
{
    fr_layer_desc *d = &h->desc;
    const int gru = d->cell == FR_GRU, ndir = d->num_directions;
    uint32_t vsize = rd_u32(q);
    if (vsize != FRNN_VARIANT_SIZE) {
        set_err(err, err_size, "bad .frnn variant block size %u (expected %d)", (unsigned)vsize,
                FRNN_VARIANT_SIZE);
        return FR_EFORMAT;
    }
    unsigned peep = q[4], inforget = q[5];
    uint32_t proj = rd_u32(q + 8);
    double clip = rd_f64(q + 16), cell_clip = rd_f64(q + 24), proj_clip = rd_f64(q + 32);
    const char *bad = NULL;
    if (q[6] != 0 || q[7] != 0 || rd_u32(q + 12) != 0 || q[46] != 0 || q[47] != 0)
        bad = "reserved bytes";
    else if (peep > 1) bad = "peepholes";
    else if (inforget > 1) bad = "input_forget";
    else if (proj > FRNN_MAX_DIM) bad = "proj_size";
    else if (!finite_f64(clip) || clip < 0) bad = "clip (finite, >= 0)";
    else if (!finite_f64(cell_clip) || cell_clip < 0) bad = "cell_clip (finite, >= 0)";
    else if (!finite_f64(proj_clip) || proj_clip < 0) bad = "proj_clip (finite, >= 0)";
    else if (proj_clip > 0 && proj == 0) bad = "proj_clip without a projection (proj_size 0)";
    else if (proj > 0 && h->recurrent_dropout != 0)  /* a layer with a projection has none */
        bad = "recurrent_dropout with a projection";
    if (bad) {
        set_err(err, err_size, "bad .frnn variant field: %s", bad);
        return FR_EFORMAT;
    }
    if (gru && (peep || inforget || cell_clip != 0 || proj != 0)) {
        set_err(err, err_size, "bad .frnn variant field: %s is an LSTM feature (the file holds a GRU)",
                peep ? "peepholes" : inforget ? "input_forget" : cell_clip != 0 ? "cell_clip"
                : "proj_size");
        return FR_EFORMAT;
    }
    for (int dir = 0; dir < 2; dir++)
        for (int s = 0; s < 3; s++) {
            const unsigned kind = q[40 + dir * 3 + s];
            const unsigned char *ab = q + 48 + (size_t)(dir * 3 + s) * 16;
            const double alpha = rd_f64(ab), beta = rd_f64(ab + 8);
            const char *slot = s == 0 ? "f" : s == 1 ? "g" : "h";
            if (dir >= ndir || (gru && s == FR_SLOT_H)) {
                if (kind != 0 || alpha != 0 || beta != 0) {
                    set_err(err, err_size, "bad .frnn variant field: activation of direction %d, "
                            "slot %s is unused and must be zero", dir, slot);
                    return FR_EFORMAT;
                }
                continue;
            }
            if (kind > FRNN_ACT_LINEAR) {
                set_err(err, err_size, "bad .frnn variant field: activation kind %u (direction %d, "
                        "slot %s; at most %d)", kind, dir, slot, FRNN_ACT_LINEAR);
                return FR_EFORMAT;
            }
            if (!finite_f64(alpha) || !finite_f64(beta)) {
                set_err(err, err_size, "bad .frnn variant field: activation alpha / beta not finite "
                        "(direction %d, slot %s)", dir, slot);
                return FR_EFORMAT;
            }
            if ((!act_takes(kind, 0) && alpha != 0) || (!act_takes(kind, 1) && beta != 0)) {
                set_err(err, err_size, "bad .frnn variant field: activation kind %u takes no %s, "
                        "which must be 0 (direction %d, slot %s)", kind,
                        !act_takes(kind, 0) && alpha != 0 ? "alpha" : "beta", dir, slot);
                return FR_EFORMAT;
            }
            fr_activation *a = &d->act[dir][s];
            if (kind == FRNN_ACT_LINEAR) {
                a->kind = FR_ACT_AFFINE;
                a->alpha = 1.0;
                a->beta = 0.0;
            } else {
                a->kind = (fr_act_kind)kind;
                a->alpha = alpha;
                a->beta = beta;
            }
        }
    d->clip = clip;
    d->cell_clip = cell_clip;
    d->peepholes = (int)peep;
    d->input_forget = (int)inforget;
    d->proj_size = (int)proj;
    d->proj_clip = proj_clip;
    return FR_OK;
}

/* Validate the fixed header (and, in version 2, the variant block) against the total length
 * `len` of the image. Reads at most the first 64 + FRNN_VARIANT_SIZE bytes of p. */
static int parse_header(const unsigned char *p, size_t len, frnn_header *h, char *err,
                        size_t err_size)
{
    memset(h, 0, sizeof *h);
    if (len < 4 || memcmp(p, "FRNN", 4) != 0) {
        set_err(err, err_size, "not a .frnn file (magic bytes \"FRNN\" missing)");
        return FR_EFORMAT;
    }
    if (len < FRNN_HEADER_SIZE + 4) {
        set_err(err, err_size, "truncated .frnn data: %zu bytes, the header alone needs %d",
                len, FRNN_HEADER_SIZE + 4);
        return FR_EFORMAT;
    }
    uint32_t version = rd_u16(p + 4);
    if (version != FRNN_VERSION && version != FRNN_VERSION_VARIANT && version != FRNN_VERSION_QUANTIZED) {
        set_err(err, err_size, ".frnn version %u is not supported (this library reads versions "
                "%d to %d)", (unsigned)version, FRNN_VERSION, FRNN_VERSION_QUANTIZED);
        return FR_EVERSION;
    }
    if (rd_u16(p + 6) != FRNN_HEADER_SIZE) {
        set_err(err, err_size, "bad .frnn header size %u (expected %d)", (unsigned)rd_u16(p + 6),
                FRNN_HEADER_SIZE);
        return FR_EFORMAT;
    }
    if (rd_u32(p + 8) != FRNN_ENDIAN_MARK) {
        set_err(err, err_size, "bad .frnn endianness marker 0x%08x (expected 0x%08x, little-endian)",
                (unsigned)rd_u32(p + 8), (unsigned)FRNN_ENDIAN_MARK);
        return FR_EFORMAT;
    }
    const uint64_t name_offset = FRNN_HEADER_SIZE
                                 + (version != FRNN_VERSION ? FRNN_VARIANT_SIZE : 0);
    if (len < name_offset + 4) {
        set_err(err, err_size, "truncated .frnn data: %zu bytes, the header and the variant "
                "block alone need %d", len, (int)name_offset + 4);
        return FR_EFORMAT;
    }
    unsigned dtype = p[12], cell = p[13], reset_after = p[14], masked = p[15];
    unsigned ndir = p[16], reverse = p[17], use_bias = p[18];
    uint32_t I = rd_u32(p + 20), H = rd_u32(p + 24), L = rd_u32(p + 28);
    uint32_t name_length = rd_u32(p + 32);
    uint64_t payload = rd_u64(p + 40);
    double dropout = rd_f64(p + 48), rdropout = rd_f64(p + 56);
    const char *bad = NULL;
    if (dtype > 1) bad = "dtype";
    else if (cell > 1) bad = "cell type";
    else if (reset_after > 1 || (cell == FR_LSTM && reset_after != 0)) bad = "reset_after";
    else if (masked > 1) bad = "masked_output";
    else if (ndir != 1 && ndir != 2) bad = "num_directions";
    else if (reverse > 1 || (reverse && ndir != 1)) bad = "reverse";
    else if (use_bias > 1) bad = "use_bias";
    else if ((version == FRNN_VERSION_QUANTIZED ? (p[19] != 1 && p[19] != 2) : p[19] != 0)
             || rd_u32(p + 36) != 0)
        bad = version == FRNN_VERSION_QUANTIZED ? "weights (version 3: 1 = int8, 2 = bf16)"
                                            : "reserved bytes";
    else if (version == FRNN_VERSION_QUANTIZED && dtype != 0) bad = "dtype (int8 weights: float32)";
    else if (I < 1 || I > FRNN_MAX_DIM) bad = "input_size";
    else if (H < 1 || H > FRNN_MAX_DIM) bad = "hidden_size";
    else if (L < 1 || L > FRNN_MAX_LAYERS) bad = "num_layers";
    else if (name_length > FRNN_MAX_NAME) bad = "name length";
    else if (!(dropout >= 0.0 && dropout < 1.0)) bad = "dropout";
    else if (!(rdropout >= 0.0 && rdropout < 1.0)) bad = "recurrent_dropout";
    if (bad) {
        set_err(err, err_size, "bad .frnn header field: %s", bad);
        return FR_EFORMAT;
    }
    h->desc.cell = (fr_cell)cell;
    h->desc.dtype = (fr_dtype)dtype;
    h->desc.reset_after = (int)reset_after;
    h->desc.input_size = (int)I;
    h->desc.hidden_size = (int)H;
    h->desc.num_directions = (int)ndir;
    h->desc.reverse = (int)reverse;
    h->desc.masked_output = (fr_masked_output)masked;
    h->version = (int)version;
    h->num_layers = (int)L;
    h->use_bias = (int)use_bias;
    h->name_length = name_length;
    h->name_offset = name_offset;
    h->recurrent_dropout = rdropout;
    if (version != FRNN_VERSION) {
        int rc = parse_variant(p + FRNN_HEADER_SIZE, h, err, err_size);
        if (rc != FR_OK) return rc;
    }
    if (version == FRNN_VERSION_QUANTIZED) {
        if (h->desc.proj_size > 0) {
            set_err(err, err_size, "bad .frnn variant field: proj_size with quantized weights");
            return FR_EFORMAT;
        }
        h->desc.weight_format = p[19] == 1 ? FR_WEIGHTS_INT8 : FR_WEIGHTS_BF16;
    }
    /* Payload implied by the sizes, all in checked 64-bit arithmetic. */
    uint64_t expect = 0, rec, t;
    const uint64_t in_k = (uint64_t)ndir * (uint64_t)desc_h_units(&h->desc);  /* <= 2^21 */
    for (uint32_t k = 0; k < L; k++) {
        int in = k == 0 ? (int)I : (int)in_k;
        if (!record_bytes(h, in, &rec) || !mul_u64(rec, ndir, &t) || !add_u64(expect, t, &expect)) {
            set_err(err, err_size, "bad .frnn header: sizes overflow");
            return FR_EFORMAT;
        }
    }
    if (payload != expect) {
        set_err(err, err_size, "bad .frnn header: payload size %llu does not match the %llu bytes "
                "its sizes describe", (unsigned long long)payload, (unsigned long long)expect);
        return FR_EFORMAT;
    }
    uint64_t total;
    if (!add_u64(name_offset + 4 + (uint64_t)name_length, payload, &total) ||
        total != (uint64_t)len) {
        set_err(err, err_size, "truncated or oversized .frnn data: %zu bytes, the header "
                "describes %llu", len, (unsigned long long)(payload + name_offset + 4 + name_length));
        return FR_EFORMAT;
    }
    h->payload_size = payload;
    h->total_size = total;
    return FR_OK;
}

/* ---- model memory ---- */

static fr_model *model_alloc(int num_layers, int num_directions)
{
    size_t nw = (size_t)num_layers * num_directions;
    fr_model *m = calloc(1, sizeof *m + (size_t)num_layers * sizeof(fr_layer_desc)
                         + nw * sizeof(fr_weights));
    if (!m) return NULL;
    m->num_layers = num_layers;
    m->num_directions = num_directions;
    m->layers = (fr_layer_desc *)(m + 1);
    m->w = (fr_weights *)(m->layers + num_layers);
    return m;
}

static void model_set_layers(fr_model *m, const fr_layer_desc *d0)
{
    for (int k = 0; k < m->num_layers; k++) {
        m->layers[k] = *d0;
        if (k > 0) m->layers[k].input_size = d0->num_directions * desc_h_units(d0);
    }
}

void fr_model_free(fr_model *m)
{
    if (!m) return;
    free(m->weights_mem);
    free(m);
}

int fr_model_num_layers(const fr_model *m) { return m ? m->num_layers : 0; }

const fr_layer_desc *fr_model_layer(const fr_model *m, int layer)
{
    if (!m || layer < 0 || layer >= m->num_layers) return NULL;
    return &m->layers[layer];
}

int fr_model_create(const fr_layer_desc *desc, int num_layers, const fr_weights *w,
                    fr_model **out)
{
    if (!out) return FR_EINVAL;
    *out = NULL;
    /* fr_workspace_size is 0 exactly when the descriptor is invalid. */
    if (!desc || !w || num_layers < 1 || fr_workspace_size(desc, 1, 1, 1) == 0) return FR_EINVAL;
    if (desc->weight_format) return FR_EUNSUPPORTED;  /* models and fr_step: float weights */
    const ptrdiff_t min_ld = (ptrdiff_t)fr_num_gates(desc->cell)
                             * fr_gate_stride(desc->dtype, desc->hidden_size);
    const int packed = desc->packed_recurrent && !desc->proj_size;
    for (int i = 0; i < num_layers * desc->num_directions; i++)
        if (!w[i].kernel || !w[i].recurrent || w[i].ld < min_ld
            || (desc->peepholes && !w[i].peephole) || (packed && !w[i].recurrent_packed))
            return FR_EINVAL;
    fr_model *m = model_alloc(num_layers, desc->num_directions);
    if (!m) return FR_ENOMEM;
    model_set_layers(m, desc);
    memcpy(m->w, w, (size_t)num_layers * desc->num_directions * sizeof *w);
    *out = m;
    return FR_OK;
}

/* The payload of a version-3 (int8) file into a new model: per (layer, direction) the packed
 * int8 matrices (fr_pack_int8) with their scales and column sums, the biases and peepholes in
 * the padded layout, and the fr_qmatrix records that fr_weights points to, all in one block.
 * Sizes were proved against the image length by parse_header. */
static int load_quantized(const unsigned char *p, const frnn_header *h, fr_model **out,
                          char *err, size_t err_size)
{
    const fr_layer_desc *d0 = &h->desc;
    const int bf16 = d0->weight_format == FR_WEIGHTS_BF16;
    const int G = fr_num_gates(d0->cell), H = d0->hidden_size, D = d0->num_directions;
    const int Hp = fr_gate_stride(FR_FLOAT32, H), cols = G * Hp;
    const int nvec = d0->cell == FR_GRU ? 2 : 1;
    uint64_t packed = fr_round_up((uint64_t)h->num_layers * D * 2 * sizeof(fr_qmatrix), 64);
    uint64_t staging = 0, t;
    int ok = 1;
    for (int k = 0; k < h->num_layers && ok; k++) {
        const uint64_t I = k == 0 ? (uint64_t)d0->input_size : (uint64_t)D * H, rows = I + H;
        uint64_t part = 0;
        /* two matrices (int8, or bf16: twice the bytes), 2 scales, 2 biases, 2 colsums,
         * peepholes, each rounded to 64 */
        ok = mul_u64((uint64_t)fr_qk4((int)I) * 8 + (uint64_t)fr_qk4(H) * 8, (uint64_t)cols, &part)
             && add_u64(part, 6 * (uint64_t)cols * 4 + 3 * (uint64_t)Hp * 4 + 9 * 64, &part)
             && mul_u64(part, (uint64_t)D, &part) && add_u64(packed, part, &packed)
             && mul_u64(rows, (uint64_t)cols, &t);
        if (ok && t > staging) staging = t;
    }
    if (!ok || packed > (uint64_t)SIZE_MAX - 64 || staging > (uint64_t)SIZE_MAX / 16) {
        set_err(err, err_size, "model too large for this platform");
        return FR_ENOMEM;
    }
    fr_model *m = model_alloc(h->num_layers, D);
    char *mem = m ? malloc((size_t)packed + 64) : NULL;
    /* plain (rows, cols) staging: int8, or the float32 values of the bf16 weights */
    signed char *q = mem ? malloc((size_t)staging * (bf16 ? 4 : 1)) : NULL;
    float *qf = (float *)(void *)q;
    if (!q) {
        free(mem);
        free(m);
        set_err(err, err_size, "out of memory loading the model");
        return FR_ENOMEM;
    }
    m->weights_mem = mem;
    model_set_layers(m, d0);
    char *dst = (char *)(((uintptr_t)mem + 63) & ~(uintptr_t)63);
    fr_qmatrix *qm = (fr_qmatrix *)dst;
    dst += fr_round_up((size_t)h->num_layers * D * 2 * sizeof(fr_qmatrix), 64);
    const unsigned char *src = p + h->name_offset + h->name_length;
    int rc = FR_OK;
    for (int k = 0; k < h->num_layers && rc == FR_OK; k++) {
        const int I = m->layers[k].input_size;
        for (int d = 0; d < D && rc == FR_OK; d++) {
            fr_weights *w = &m->w[k * D + d];
            fr_qmatrix *qk = &qm[(k * D + d) * 2], *qr = qk + 1;
            float *vec[5];  /* kernel scale, recurrent scale, bias, recurrent bias, peepholes */
            const size_t vbytes = fr_round_up((size_t)cols * 4, 64);
            for (int v = 0; v < 4; v++) {
                vec[v] = (float *)dst;
                memset(dst, 0, vbytes);
                dst += vbytes;
            }
            vec[4] = (float *)dst;
            memset(dst, 0, fr_round_up((size_t)3 * Hp * 4, 64));
            dst += fr_round_up((size_t)3 * Hp * 4, 64);
            memset(q, 0, (size_t)(I + H) * cols * (bf16 ? 4 : 1));
            for (int g = 0; g < G; g++) {
                /* kernel rows 0..I-1 and recurrent rows I..I+H-1 of the staging matrix */
                for (int part = 0; part < 2; part++) {
                    const int r0 = part ? I : 0, nr = part ? H : I;
                    for (int r = 0; r < nr; r++) {
                        const size_t row = (size_t)(r0 + r) * cols + (size_t)g * Hp;
                        if (bf16) {
                            for (int u = 0; u < H; u++, src += 2) {
                                const uint32_t bits = (uint32_t)rd_u16(src) << 16;
                                memcpy(qf + row + u, &bits, 4);
                            }
                        } else {
                            memcpy(q + row, src, (size_t)H);
                            src += H;
                        }
                    }
                    if (!bf16) {
                        copy_le(vec[part] + (size_t)g * Hp, src, (size_t)H, 4);
                        src += (size_t)H * 4;
                    }
                }
                for (int v = 0; v < (h->use_bias ? nvec : 0); v++) {
                    copy_le(vec[2 + v] + (size_t)g * Hp, src, (size_t)H, 4);
                    src += (size_t)H * 4;
                }
            }
            if (d0->peepholes)
                for (int g = 0; g < 3; g++) {
                    copy_le(vec[4] + (size_t)g * Hp, src, (size_t)H, 4);
                    src += (size_t)H * 4;
                }
            for (int v = 0; v < (bf16 ? 0 : 2); v++)
                for (int c = 0; c < cols; c++)
                    if (!(vec[v][c] >= 0.0f && vec[v][c] <= 3.4e38f)) rc = FR_EFORMAT;
            fr_qmatrix *mats[2] = {qk, qr};
            for (int part = 0; part < 2 && rc == FR_OK; part++) {
                const int rows = part ? H : I;
                signed char *data = (signed char *)dst;
                if (bf16) {
                    dst += fr_round_up(fr_bf16_data_size(rows, cols) * 2, 64);
                    if (fr_pack_bf16(qf + (size_t)(part ? I : 0) * cols, rows, cols, cols,
                                     (unsigned short *)(void *)data) != FR_OK)
                        rc = FR_EFORMAT;  /* a weight that is not finite */
                    *mats[part] = (fr_qmatrix){rows, cols, data, NULL, NULL};
                    continue;
                }
                dst += fr_round_up(fr_qmatrix_data_size(rows, cols), 64);
                int *colsum = (int *)dst;
                dst += fr_round_up((size_t)cols * 4, 64);
                if (fr_pack_int8(q + (size_t)(part ? I : 0) * cols, rows, cols, cols, data,
                                 colsum) != FR_OK)
                    rc = FR_EFORMAT;  /* a weight of -128 */
                *mats[part] = (fr_qmatrix){rows, cols, data, vec[part], colsum};
            }
            if (rc != FR_OK) {
                set_err(err, err_size, bf16 ? "bad .frnn bf16 payload (layer %d): a weight that "
                        "is not finite" : "bad .frnn int8 payload (layer %d): a weight outside "
                        "[-127, 127] or a scale that is negative or not finite", k);
                break;
            }
            w->qkernel = qk;
            w->qrecurrent = qr;
            w->bias = vec[2];
            w->recurrent_bias = nvec == 2 ? vec[3] : NULL;
            w->ld = cols;
            w->peephole = d0->peepholes ? vec[4] : NULL;
        }
    }
    free(q);
    if (rc != FR_OK) {
        fr_model_free(m);
        return rc;
    }
    *out = m;
    return FR_OK;
}

int fr_model_load_buffer(const void *buf, size_t len, fr_model **out, char *err, size_t err_size)
{
    if (out) *out = NULL;
    if (!buf || !out) {
        set_err(err, err_size, "buffer and output pointer must not be NULL");
        return FR_EINVAL;
    }
    const unsigned char *p = (const unsigned char *)buf;
    frnn_header h;
    int rc = parse_header(p, len, &h, err, err_size);
    if (rc != FR_OK) return rc;
    uint32_t stored = rd_u32(p + len - 4), computed = crc32_update(0, p, len - 4);
    if (stored != computed) {
        set_err(err, err_size, "corrupt .frnn data: CRC32 0x%08x does not match the stored 0x%08x",
                (unsigned)computed, (unsigned)stored);
        return FR_EFORMAT;
    }

#ifdef FR_NO_FLOAT64
    if (h.desc.dtype == FR_FLOAT64) {
        set_err(err, err_size, "float64 model: this library was built without float64 "
                "(make FLOAT64=0)");
        return FR_EUNSUPPORTED;
    }
#endif
#ifdef FR_STREAM_ONLY
    if (h.desc.weight_format) {
        set_err(err, err_size, "int8 / bf16 model: this library was built for float streaming "
                "only (make STREAM_ONLY=1)");
        return FR_EUNSUPPORTED;
    }
#endif
    if (h.desc.weight_format) return load_quantized(p, &h, out, err, err_size);

    /* Packed sizes, in checked 64-bit arithmetic, then against size_t (32-bit targets) before
     * allocating. Per (layer, direction), each part starting on a 64-byte boundary: kernel
     * (I, ld), recurrent (R, ld), bias (G * Hp), GRU recurrent bias (G * Hp), peepholes
     * (3 * Hp), projection (H, Pp) with Pp = fr_gate_stride(dtype, P) (proj_ld = Pp), and
     * without a projection the recurrent matrix once more in the kernels' own layout
     * (fr_pack_recurrent: frozen weights, which fr_step and fr_forward then read; same bits). */
    const fr_layer_desc *d0 = &h.desc;
    const int G = fr_num_gates(d0->cell), H = d0->hidden_size, D = d0->num_directions;
    const int R = desc_h_units(d0), P = d0->proj_size;
    const int Hp = fr_gate_stride(d0->dtype, H), Pp = P > 0 ? fr_gate_stride(d0->dtype, P) : 0;
    const size_t e = elem_bytes(d0->dtype);
    const ptrdiff_t ld = fr_recommended_ld(d0->cell, d0->dtype, H);
    const int nvec = d0->cell == FR_GRU ? 2 : 1;
    const uint64_t frozen = P == 0 ? (uint64_t)fr_packed_recurrent_size(d0) : 0;
    uint64_t packed = 0, t, tmp_elems = 0;
    int ok = 1;
    for (int k = 0; k < h.num_layers && ok; k++) {
        uint64_t in = k == 0 ? (uint64_t)d0->input_size : (uint64_t)D * R, rows, part = 0;
        /* each of the (up to 7) parts rounds up by at most 63 bytes: 7 * 64 covers them */
        uint64_t elems = (uint64_t)nvec * G * Hp + (d0->peepholes ? 3 * (uint64_t)Hp : 0);
        ok = add_u64(in, (uint64_t)R, &rows) && mul_u64(rows, (uint64_t)ld, &part)
             && add_u64(part, elems, &part)
             && mul_u64((uint64_t)H, (uint64_t)Pp, &t) && add_u64(part, t, &part)
             && mul_u64(part, e, &part) && add_u64(part, 7 * 64, &part)
             && add_u64(part, frozen, &part)
             && mul_u64(part, (uint64_t)D, &part) && add_u64(packed, part, &packed)
             && mul_u64(rows, (uint64_t)G * H, &t);
        if (ok && t > tmp_elems) tmp_elems = t;
    }
    if (!ok || packed > (uint64_t)SIZE_MAX - 64 || tmp_elems > (uint64_t)SIZE_MAX / 16) {
        set_err(err, err_size, "model too large for this platform");
        return FR_ENOMEM;
    }
    fr_model *m = model_alloc(h.num_layers, D);
    char *mem = m ? malloc((size_t)packed + 64) : NULL;
    /* Plain (rows, G*H) staging matrix for fr_pack_weights, plus 2 bias vectors. */
    char *plain = mem ? malloc((size_t)(tmp_elems + 2 * (uint64_t)G * H) * e) : NULL;
    if (!plain) {
        free(mem);
        free(m);
        set_err(err, err_size, "out of memory loading the model");
        return FR_ENOMEM;
    }
    m->weights_mem = mem;
    model_set_layers(m, d0);

    /* Walk the payload: for each layer, direction: per gate kernel, recurrent, [bias,
     * recurrent_bias]; then [peepholes (3, H)], [projection (H, P)]. Offsets stay below len:
     * parse_header proved the sizes add up to it. */
    const unsigned char *src = p + h.name_offset + h.name_length;
    char *dst = (char *)(((uintptr_t)mem + 63) & ~(uintptr_t)63);
    for (int k = 0; k < h.num_layers; k++) {
        const int I = m->layers[k].input_size, rows = I + R;
        for (int d = 0; d < D; d++) {
            char *vec = plain + (size_t)rows * G * H * e;  /* bias, then recurrent bias */
            memset(vec, 0, 2 * (size_t)G * H * e);
            for (int g = 0; g < G; g++) {
                /* Rows 0..I-1 of the staging matrix: kernel; rows I..I+R-1: recurrent. */
                for (int r = 0; r < rows; r++) {
                    copy_le(plain + ((size_t)r * G * H + (size_t)g * H) * e, src, (size_t)H, e);
                    src += (size_t)H * e;
                }
                for (int v = 0; v < (h.use_bias ? nvec : 0); v++) {
                    copy_le(vec + ((size_t)v * G * H + (size_t)g * H) * e, src, (size_t)H, e);
                    src += (size_t)H * e;
                }
            }
            fr_weights *w = &m->w[k * D + d];
            char *kernel = dst, *recurrent = kernel + fr_round_up((size_t)I * ld * e, 64);
            char *bias = recurrent + fr_round_up((size_t)R * ld * e, 64);
            char *rbias = bias + fr_round_up((size_t)G * Hp * e, 64);
            char *peep = rbias + (nvec == 2 ? fr_round_up((size_t)G * Hp * e, 64) : 0);
            char *proj = peep + (d0->peepholes ? fr_round_up((size_t)3 * Hp * e, 64) : 0);
            char *frozen_rec = proj + (P > 0 ? fr_round_up((size_t)H * Pp * e, 64) : 0);
            dst = frozen_rec + fr_round_up((size_t)frozen, 64);
            fr_pack_weights(d0->cell, d0->dtype, H, I, plain, kernel, ld);
            fr_pack_weights(d0->cell, d0->dtype, H, R, plain + (size_t)I * G * H * e, recurrent, ld);
            fr_pack_weights(d0->cell, d0->dtype, H, 1, vec, bias, (ptrdiff_t)G * Hp);
            if (nvec == 2)
                fr_pack_weights(d0->cell, d0->dtype, H, 1, vec + (size_t)G * H * e, rbias,
                                (ptrdiff_t)G * Hp);
            if (d0->peepholes) {  /* gates input, forget, output, each Hp apart; padding 0 */
                memset(peep, 0, (size_t)3 * Hp * e);
                for (int g = 0; g < 3; g++) {
                    copy_le(peep + (size_t)g * Hp * e, src, (size_t)H, e);
                    src += (size_t)H * e;
                }
            }
            if (P > 0) {  /* (H, P) rows Pp apart; padding columns 0 */
                memset(proj, 0, (size_t)H * Pp * e);
                for (int r = 0; r < H; r++) {
                    copy_le(proj + (size_t)r * Pp * e, src, (size_t)P, e);
                    src += (size_t)P * e;
                }
            }
            w->kernel = kernel;
            w->recurrent = recurrent;
            w->bias = bias;
            w->recurrent_bias = nvec == 2 ? rbias : NULL;
            w->ld = ld;
            w->peephole = d0->peepholes ? peep : NULL;
            w->projection = P > 0 ? proj : NULL;
            w->proj_ld = P > 0 ? (ptrdiff_t)Pp : 0;
            if (frozen) {
                fr_pack_recurrent(&m->layers[k], w, frozen_rec);
                w->recurrent_packed = frozen_rec;
            }
        }
        m->layers[k].packed_recurrent = frozen != 0;
    }
    free(plain);
    *out = m;
    return FR_OK;
}

int fr_model_load_file(const char *path, fr_model **out, char *err, size_t err_size)
{
    if (out) *out = NULL;
    if (!path || !out) {
        set_err(err, err_size, "path and output pointer must not be NULL");
        return FR_EINVAL;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        set_err(err, err_size, "cannot open %s", path);
        return FR_EIO;
    }
    long end = -1;
    if (fseek(f, 0, SEEK_END) == 0) end = ftell(f);
    if (end < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        set_err(err, err_size, "cannot determine the size of %s", path);
        return FR_EIO;
    }
    /* Validate the header (and a version-2 variant block) against the file size before
     * allocating anything. */
    unsigned char head[FRNN_HEADER_SIZE + FRNN_VARIANT_SIZE + 4];
    size_t nhead = (size_t)end < sizeof head ? (size_t)end : sizeof head;
    frnn_header h;
    int rc = FR_EIO;
    if (fread(head, 1, nhead, f) != nhead) {
        set_err(err, err_size, "cannot read %s", path);
    } else {
        if (nhead < 4) memset(head + nhead, 0, 4 - nhead);  /* magic check reads 4 bytes */
        rc = parse_header(head, (size_t)end, &h, err, err_size);
    }
    unsigned char *buf = NULL;
    if (rc == FR_OK) {
        buf = malloc((size_t)end);
        if (!buf) {
            set_err(err, err_size, "out of memory reading %s", path);
            rc = FR_ENOMEM;
        } else if (fseek(f, 0, SEEK_SET) != 0 || fread(buf, 1, (size_t)end, f) != (size_t)end) {
            set_err(err, err_size, "cannot read %s", path);
            rc = FR_EIO;
        }
    }
    fclose(f);
    if (rc == FR_OK) rc = fr_model_load_buffer(buf, (size_t)end, out, err, err_size);
    free(buf);
    return rc;
}

/* ---- whole sequences ---- */

static size_t forward_layout(const fr_model *m, int B, int T, int nt, size_t *mask_bytes,
                             size_t *inter_bytes)
{
    const fr_layer_desc *d = &m->layers[0];
    *mask_bytes = fr_round_up((size_t)B * T, FR_ALIGN);
    *inter_bytes = fr_round_up((size_t)B * T * d->num_directions * desc_h_units(d)
                               * elem_bytes(d->dtype), FR_ALIGN);
    size_t layer_ws = 0;
    for (int k = 0; k < m->num_layers; k++) {
        size_t s = fr_workspace_size(&m->layers[k], B, T, nt);
        if (s > layer_ws) layer_ws = s;
    }
    int ninter = m->num_layers > 2 ? 2 : m->num_layers - 1;
    return FR_ALIGN + *mask_bytes + (size_t)ninter * *inter_bytes + layer_ws;
}

size_t fr_forward_workspace_size(const fr_model *m, int batch, int time, int num_threads)
{
    if (!m || batch < 1 || time < 1) return 0;
    size_t mb, ib;
    return forward_layout(m, batch, time, num_threads < 1 ? 1 : num_threads, &mb, &ib);
}

int fr_forward(const fr_model *m, const fr_sequence *s, void *workspace, size_t workspace_size,
               int num_threads)
{
    if (!m || !s || !s->x || !s->y || s->batch < 1 || s->time < 1) return FR_EINVAL;
    if (s->lengths && s->mask) return FR_EINVAL;
    const int B = s->batch, T = s->time, L = m->num_layers, D = m->num_directions;
    const int H = m->layers[0].hidden_size, P = desc_h_units(&m->layers[0]);
    const int nt = num_threads < 1 ? 1 : num_threads;
    if (s->lengths)
        for (int b = 0; b < B; b++)
            if (s->lengths[b] < 0 || s->lengths[b] > T) return FR_EINVAL;
    size_t mask_bytes, inter_bytes;
    size_t need = forward_layout(m, B, T, nt, &mask_bytes, &inter_bytes);
    void *owned = NULL;
    if (!workspace) {
        workspace = owned = malloc(need);
        if (!owned) return FR_ENOMEM;
        workspace_size = need;
    } else if (workspace_size < need) {
        return FR_EWORKSPACE;
    }
    char *ws = (char *)(((uintptr_t)workspace + FR_ALIGN - 1) & ~(uintptr_t)(FR_ALIGN - 1));
    unsigned char *mask = (unsigned char *)ws;
    char *inter[2] = {ws + mask_bytes, ws + mask_bytes + inter_bytes};
    int ninter = L > 2 ? 2 : L - 1;
    char *layer_ws = ws + mask_bytes + (size_t)ninter * inter_bytes;
    size_t layer_ws_size = workspace_size - (size_t)(layer_ws - (char *)workspace);

    const unsigned char *mk = s->mask;
    if (s->lengths) {
        int all = 1;
        for (int b = 0; b < B; b++) {
            all &= s->lengths[b] == T;
            for (int t = 0; t < T; t++) mask[(size_t)b * T + t] = t < s->lengths[b];
        }
        mk = all ? NULL : mask;
    }
    const size_t e = elem_bytes(m->layers[0].dtype), state = (size_t)D * B * H * e;
    const size_t hstate = (size_t)D * B * P * e;  /* h has P units with a projection */
    const void *in = s->x;
    int rc = FR_OK;
    for (int k = 0; k < L && rc == FR_OK; k++) {
        void *y = k == L - 1 ? s->y : inter[k & 1];
        fr_io io = {B, T, in, mk,
                    s->h0 ? (const char *)s->h0 + k * hstate : NULL,
                    s->c0 ? (const char *)s->c0 + k * state : NULL,
                    y,
                    s->h_n ? (char *)s->h_n + k * hstate : NULL,
                    s->c_n ? (char *)s->c_n + k * state : NULL};
        rc = fr_layer_forward(&m->layers[k], &m->w[k * D], &io, layer_ws, layer_ws_size, nt);
        in = y;
    }
    free(owned);
    return rc;
}

/* ---- streaming ---- */

/* State memory, in order (each part FR_ALIGN-aligned): the fr_state, per-layer step args,
 * h double buffer (2 * L * B * Hs), c (L * B * Hp), scratch: GRU z, r*h, x-projection of the
 * candidate, or the projection's m (3 * B * Hp), zero bias vector (G * Hp). Hs, the h row
 * stride, is Hp, or Pp with a projection. Returns 0 for an invalid request. */
typedef struct state_layout {
    size_t args, h, c, scratch, zeros, ws, ws_size, total, layer, c_layer;
} state_layout;

static int state_plan(const fr_model *m, int batch, state_layout *lay)
{
    if (!m || batch < 1) return FR_EINVAL;
    const fr_layer_desc *d = &m->layers[0];
    if (d->num_directions != 1 || d->reverse) return FR_ENOTSTREAMABLE;
    const int quantized = d->weight_format != FR_WEIGHTS_FLOAT;  /* plain rows (fr_state) */
    const uint64_t Hp = quantized ? (uint64_t)d->hidden_size
                             : (uint64_t)fr_gate_stride(d->dtype, d->hidden_size);
    const uint64_t Hs = quantized ? Hp : (uint64_t)fr_gate_stride(d->dtype, desc_h_units(d));
    const uint64_t e = elem_bytes(d->dtype), L = (uint64_t)m->num_layers;
    uint64_t layer = (uint64_t)batch * Hs * e;  /* < 2^31 * 2^21 * 8: no overflow */
    uint64_t c_layer = (uint64_t)batch * Hp * e;
    uint64_t n = fr_round_up(sizeof(fr_state), FR_ALIGN);
    lay->args = (size_t)n;
    n += fr_round_up(L * sizeof(fr_step_args), FR_ALIGN);
    lay->h = (size_t)n;
    n += 2 * fr_round_up(L * layer, FR_ALIGN);
    lay->c = (size_t)n;
    n += fr_round_up(L * c_layer, FR_ALIGN);
    lay->scratch = (size_t)n;
    n += 3 * fr_round_up(c_layer, FR_ALIGN);
    lay->zeros = (size_t)n;
    n += fr_round_up((uint64_t)fr_num_gates(d->cell) * Hp * e, FR_ALIGN);
    lay->ws = (size_t)n;
    lay->ws_size = 0;
    if (quantized) {
        for (int k = 0; k < m->num_layers; k++) {
            const size_t w = fr_workspace_size(&m->layers[k], batch, 1, 1);
            if (w == 0) return FR_EINVAL;
            if (w > lay->ws_size) lay->ws_size = w;
        }
        n += fr_round_up((uint64_t)lay->ws_size, FR_ALIGN);
    }
    if (n > (uint64_t)SIZE_MAX - FR_ALIGN) return FR_ENOMEM;
    lay->total = (size_t)n + FR_ALIGN;
    lay->layer = (size_t)layer;
    lay->c_layer = (size_t)c_layer;
    return FR_OK;
}

size_t fr_state_size(const fr_model *m, int batch)
{
    state_layout lay;
    return state_plan(m, batch, &lay) == FR_OK ? lay.total : 0;
}

int fr_state_init(const fr_model *m, int batch, void *buf, size_t size, fr_state **out)
{
    if (!out) return FR_EINVAL;
    *out = NULL;
    state_layout lay;
    int rc = state_plan(m, batch, &lay);
    if (rc != FR_OK) return rc;
    if (!buf || size < lay.total) return FR_EWORKSPACE;
    char *base = (char *)(((uintptr_t)buf + FR_ALIGN - 1) & ~(uintptr_t)(FR_ALIGN - 1));
    memset(base, 0, lay.total - FR_ALIGN);
    fr_state *s = (fr_state *)base;
    const fr_layer_desc *d = &m->layers[0];
    const int quantized = d->weight_format != FR_WEIGHTS_FLOAT;
    const int Hp = quantized ? d->hidden_size : fr_gate_stride(d->dtype, d->hidden_size);
    const int P = desc_h_units(d), Hs = quantized ? P : fr_gate_stride(d->dtype, P);
    const size_t scratch_part = fr_round_up(lay.c_layer, FR_ALIGN);
    s->model = m;
    s->batch = batch;
    s->num_layers = m->num_layers;
    s->hidden_size = d->hidden_size;
    s->h_units = P;
    s->out_stride = Hs;
    s->c_stride = Hp;
    s->elem = elem_bytes(d->dtype);
    s->dtype = d->dtype;
    s->args = (fr_step_args *)(base + lay.args);
    s->h[0] = base + lay.h;
    s->h[1] = s->h[0] + fr_round_up((size_t)m->num_layers * lay.layer, FR_ALIGN);
    s->c = base + lay.c;
    s->layer_bytes = lay.layer;
    s->c_layer_bytes = lay.c_layer;
    s->quantized = quantized;
    s->ws = quantized ? base + lay.ws : NULL;
    s->ws_size = lay.ws_size;
    const void *zeros = base + lay.zeros;
    for (int k = 0; k < m->num_layers && !quantized; k++) {
        const fr_weights *w = &m->w[k];
        fr_step_args *a = &s->args[k];
        a->cell = d->cell;
        a->reset_after = d->cell == FR_GRU && d->reset_after;
        a->B = batch;
        a->I = m->layers[k].input_size;
        a->H = d->hidden_size;
        a->Hp = Hp;
        a->Wx = w->kernel;
        a->Wh = w->recurrent;
        a->ld = w->ld;
        a->Whp = m->layers[k].packed_recurrent && !d->proj_size ? w->recurrent_packed : NULL;
        a->bias = w->bias ? w->bias : zeros;
        a->has_rbias = d->cell == FR_GRU && w->recurrent_bias != NULL;
        a->rbias = a->has_rbias ? w->recurrent_bias : zeros;
        a->x_ld = k == 0 ? a->I : Hs;
        a->c = s->c + (size_t)k * lay.c_layer;
        a->z = base + lay.scratch;
        a->rh = base + lay.scratch + scratch_part;
        a->xn = base + lay.scratch + 2 * scratch_part;
        fr_cell_variant_of(&m->layers[k], w, 0, &a->var);
        if (d->proj_size > 0) {  /* the step kernels' projection (stream_impl.inc) */
            a->P = P;
            a->h_ld = Hs;
            a->Wp = w->projection;
            a->proj_ld = w->proj_ld;
            a->proj_clip = d->proj_clip;
            a->m = base + lay.scratch;  /* an LSTM has no GRU scratch to share it with */
        }
    }
    *out = s;
    return FR_OK;
}

int fr_state_create(const fr_model *m, int batch, fr_state **out)
{
    if (!out) return FR_EINVAL;
    *out = NULL;
    size_t n = fr_state_size(m, batch);
    if (n == 0) {
        state_layout lay;
        int rc = state_plan(m, batch, &lay);
        return rc != FR_OK ? rc : FR_EINVAL;
    }
    void *buf = malloc(n);
    if (!buf) return FR_ENOMEM;
    int rc = fr_state_init(m, batch, buf, n, out);
    if (rc != FR_OK) {
        free(buf);
        return rc;
    }
    (*out)->alloc = buf;  /* the state itself sits at the aligned address inside buf */
    return FR_OK;
}

void fr_state_free(fr_state *s)
{
    if (s) free(s->alloc);
}

void fr_state_reset(fr_state *s)
{
    if (!s) return;
    const size_t n = (size_t)s->num_layers * s->layer_bytes;
    memset(s->h[0], 0, n);
    memset(s->h[1], 0, n);
    memset(s->c, 0, (size_t)s->num_layers * s->c_layer_bytes);
    s->parity = 0;
}

/* Copy (L, B, units) <-> the padded (L, B, stride) state rows. */
static void state_rows(const fr_state *s, int units, int stride, char *padded, const char *plain,
                       char *plain_out)
{
    const size_t row = (size_t)units * s->elem, prow = (size_t)stride * s->elem;
    for (size_t r = 0; r < (size_t)s->num_layers * s->batch; r++) {
        if (plain_out) memcpy(plain_out + r * row, padded + r * prow, row);
        else if (plain) memcpy(padded + r * prow, plain + r * row, row);
        else memset(padded + r * prow, 0, row);
    }
}

int fr_state_set(fr_state *s, const void *h, const void *c)
{
    if (!s) return FR_EINVAL;
    state_rows(s, s->h_units, s->out_stride, s->h[s->parity], (const char *)h, NULL);
    if (s->model->layers[0].cell == FR_LSTM)
        state_rows(s, s->hidden_size, s->c_stride, s->c, (const char *)c, NULL);
    return FR_OK;
}

int fr_state_get(const fr_state *s, void *h, void *c)
{
    if (!s) return FR_EINVAL;
    if (h) state_rows(s, s->h_units, s->out_stride, s->h[s->parity], NULL, (char *)h);
    if (c && s->model->layers[0].cell == FR_LSTM)
        state_rows(s, s->hidden_size, s->c_stride, s->c, NULL, (char *)c);
    return FR_OK;
}

/* One step of an int8 / bf16 model: each layer's whole-sequence kernel with T = 1 on one thread (the
 * quantized products come from the same micro-kernels; quantization is per row and step, so the
 * bits are those of fr_forward), in the state's own workspace: nothing allocated. */
static int step_quantized(const fr_model *m, fr_state *s, const void *x_t, void *y_t)
{
    const int p = s->parity, L = s->num_layers, lstm = m->layers[0].cell == FR_LSTM;
    const size_t lb = s->layer_bytes;
    const void *x = x_t;
    for (int k = 0; k < L; k++) {
        char *hprev = s->h[p] + (size_t)k * lb, *hnew = s->h[1 - p] + (size_t)k * lb;
        char *c = s->c + (size_t)k * s->c_layer_bytes;
        fr_io io = {s->batch, 1, x, NULL, hprev, lstm ? c : NULL, hnew, hnew, lstm ? c : NULL};
        int rc = fr_layer_forward(&m->layers[k], &m->w[k], &io, s->ws, s->ws_size, 1);
        if (rc != FR_OK) return rc;
        x = hnew;
    }
    memcpy(y_t, x, lb);
    s->parity = 1 - p;
    return FR_OK;
}

int fr_step(const fr_model *m, fr_state *s, const void *x_t, void *y_t)
{
    if (!s || s->model != m || !m || !x_t || !y_t) return FR_EINVAL;
    const int p = s->parity, L = s->num_layers;
    const size_t lb = s->layer_bytes;
    const char *x = (const char *)x_t;
    if (s->quantized) return step_quantized(m, s, x_t, y_t);
    const fr_step_fn step = fr_kernels_for(s->dtype)->step;  /* follows fr_set_isa */
    const unsigned fpmode = fr_fpmode_enter();  /* denormals as in fr_layer_forward */
    for (int k = 0; k < L; k++) {
        fr_step_args *a = &s->args[k];
        a->x = x;
        a->hprev = s->h[p] + (size_t)k * lb;
        a->hnew = s->h[1 - p] + (size_t)k * lb;
        step(a);
        x = (const char *)a->hnew;  /* the next layer's input, row stride out_stride */
    }
    fr_fpmode_leave(fpmode);
    const size_t row = (size_t)s->h_units * s->elem, prow = (size_t)s->out_stride * s->elem;
    for (int b = 0; b < s->batch; b++) memcpy((char *)y_t + b * row, x + b * prow, row);
    s->parity = 1 - p;
    return FR_OK;
}

static double now_ns(void)
{
    struct timespec ts;
#if defined(CLOCK_MONOTONIC)
    clock_gettime(CLOCK_MONOTONIC, &ts);
#else
    timespec_get(&ts, TIME_UTC);
#endif
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

int fr_time_steps(const fr_model *m, fr_state *s, const void *x_t, void *y_t, int steps,
                  int repeats, double *ns_per_step)
{
    if (steps < 1 || repeats < 1 || !ns_per_step) return FR_EINVAL;
    int rc = fr_step(m, s, x_t, y_t);  /* validates once; warms the caches */
    if (rc != FR_OK) return rc;
    for (int r = 0; r < repeats; r++) {
        double t0 = now_ns();
        for (int i = 0; i < steps; i++) fr_step(m, s, x_t, y_t);
        ns_per_step[r] = (now_ns() - t0) / steps;
    }
    return FR_OK;
}
