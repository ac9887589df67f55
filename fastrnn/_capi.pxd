# The C ABI of src/fastrnn/fastrnn.h as seen from Cython.
cdef extern from "fastrnn.h" nogil:
    ctypedef enum fr_cell:
        FR_LSTM
        FR_GRU
    ctypedef enum fr_dtype:
        FR_FLOAT32
        FR_FLOAT64
    ctypedef enum fr_masked_output:
        FR_MASKED_ZERO
        FR_MASKED_CARRY
    ctypedef enum fr_isa:
        FR_ISA_BASELINE
        FR_ISA_AVX2
        FR_ISA_AVX512
    enum:
        FR_OK
        FR_EINVAL
        FR_EWORKSPACE
        FR_EUNSUPPORTED
    const char *FR_VERSION

    ctypedef enum fr_act_kind:
        FR_ACT_DEFAULT
        FR_ACT_SIGMOID
        FR_ACT_TANH
        FR_ACT_RELU
        FR_ACT_HARD_SIGMOID
        FR_ACT_SOFTSIGN
        FR_ACT_SOFTPLUS
        FR_ACT_ELU
        FR_ACT_LEAKY_RELU
        FR_ACT_THRESHOLDED_RELU
        FR_ACT_SCALED_TANH
        FR_ACT_AFFINE
    ctypedef struct fr_activation:
        fr_act_kind kind
        double alpha
        double beta

    ctypedef struct fr_layer_desc:
        fr_cell cell
        fr_dtype dtype
        int reset_after
        int input_size
        int hidden_size
        int num_directions
        int reverse
        fr_masked_output masked_output
        fr_activation act[2][3]
        double clip
        double cell_clip
        int peepholes
        int input_forget
        int proj_size
        double proj_clip
        int weight_format
        int packed_recurrent

    ctypedef struct fr_qmatrix:
        int rows
        int cols
        const signed char *data
        const float *scale
        const int *colsum

    ctypedef struct fr_weights:
        const fr_qmatrix *qkernel
        const fr_qmatrix *qrecurrent
        const void *kernel
        const void *recurrent
        const void *bias
        const void *recurrent_bias
        Py_ssize_t ld
        const void *peephole
        const void *projection
        Py_ssize_t proj_ld
        const void *recurrent_packed

    ctypedef struct fr_io:
        int batch
        int time
        const void *x
        const unsigned char *mask
        const void *h0
        const void *c0
        void *y
        void *h_n
        void *c_n

    ctypedef struct fr_train:
        const void *in_mask
        const void *rec_mask
        void *record
        size_t record_size

    ctypedef struct fr_grad_io:
        const void *dy
        const void *dh_n
        const void *dc_n
        void *dx
        void *dh0
        void *dc0

    ctypedef struct fr_grads:
        void *kernel
        void *recurrent
        void *bias
        void *recurrent_bias
        Py_ssize_t ld
        void *peephole
        void *projection
        Py_ssize_t proj_ld

    int fr_num_gates(fr_cell cell)
    int fr_gate_stride(fr_dtype dtype, int hidden_size)
    Py_ssize_t fr_recommended_ld(fr_cell cell, fr_dtype dtype, int hidden_size)
    size_t fr_packed_recurrent_size(const fr_layer_desc *desc)
    int fr_pack_recurrent(const fr_layer_desc *desc, const fr_weights *w, void *dst)
    size_t fr_workspace_size(const fr_layer_desc *desc, int batch, int time, int num_threads)
    int fr_layer_forward(const fr_layer_desc *desc, const fr_weights *w, const fr_io *io,
                         void *workspace, size_t workspace_size, int num_threads)
    size_t fr_record_size(const fr_layer_desc *desc, int batch, int time, int input_dropout)
    int fr_layer_forward_train(const fr_layer_desc *desc, const fr_weights *w, const fr_io *io,
                               const fr_train *train, void *workspace, size_t workspace_size,
                               int num_threads)
    size_t fr_backward_workspace_size(const fr_layer_desc *desc, int batch, int time,
                                      int num_threads)
    int fr_layer_backward(const fr_layer_desc *desc, const fr_weights *w, const fr_io *io,
                          const fr_train *train, const fr_grad_io *grads_io,
                          const fr_grads *grads, void *workspace, size_t workspace_size,
                          int num_threads)
    fr_isa fr_get_isa()
    int fr_set_isa(fr_isa isa)
    int fr_isa_available(fr_isa isa)
    const char *fr_isa_name(fr_isa isa)
    int fr_openmp_enabled()
    ctypedef struct fr_contention:
        long long calls
        long long contended
        long long capped
        int cap_threads
        int cap_calls
        int last_threads
        int last_taken
    void fr_get_contention(fr_contention *out)
    void fr_reset_contention()
    void fr_debug_delay(int thread, int unit, int usec, int busy)
    void fr_debug_patience(int usec)
    int fr_debug_delay_pending()
    double fr_fma_peak_gflops(int num_threads, double seconds)
    size_t fr_qmatrix_data_size(int rows, int cols)
    int fr_quantize_int8(const float *w, int rows, int cols, Py_ssize_t ld, signed char *q,
                         float *scale)
    int fr_pack_int8(const signed char *q, int rows, int cols, Py_ssize_t ld, signed char *data,
                     int *colsum)
    const char *fr_int8_kernel_name()
    size_t fr_bf16_data_size(int rows, int cols)
    int fr_pack_bf16(const float *w, int rows, int cols, Py_ssize_t ld, unsigned short *data)
    const char *fr_bf16_kernel_name()
    enum:
        FR_WEIGHTS_FLOAT
        FR_WEIGHTS_INT8
        FR_WEIGHTS_BF16

# ---- Models and streaming (fastrnn.h, "Models and streaming") ----
cdef extern from "fastrnn.h" nogil:
    enum:
        FR_EIO
        FR_EFORMAT
        FR_EVERSION
        FR_ENOMEM
        FR_ENOTSTREAMABLE
    ctypedef struct fr_model:
        pass
    ctypedef struct fr_state:
        pass
    int fr_model_load_buffer(const void *buf, size_t len, fr_model **out, char *err,
                             size_t err_size)
    int fr_model_create(const fr_layer_desc *desc, int num_layers, const fr_weights *w,
                        fr_model **out)
    void fr_model_free(fr_model *model)
    int fr_state_create(const fr_model *model, int batch, fr_state **out)
    void fr_state_free(fr_state *state)
    void fr_state_reset(fr_state *state)
    int fr_state_set(fr_state *state, const void *h, const void *c)
    int fr_state_get(const fr_state *state, void *h, void *c)
    int fr_step(const fr_model *model, fr_state *state, const void *x_t, void *y_t)
    int fr_time_steps(const fr_model *model, fr_state *state, const void *x_t, void *y_t,
                      int steps, int repeats, double *ns_per_step)
    const char *fr_strerror(int status)


# Internal (src/fastrnn/qgemm.h): the int8 micro-kernels, exposed to the tests.
cdef extern from "qgemm.h" nogil:
    ctypedef void (*fr_qgemm_fn)(int M, int n, const unsigned char *a, Py_ssize_t lda,
                                 const float *s, const fr_qmatrix *w, int c0, const float *bias,
                                 float *out, Py_ssize_t ldo)
    ctypedef void (*fr_qquant_fn)(int M, int K, const float *x, Py_ssize_t ldx,
                                  unsigned char *a, Py_ssize_t lda, float *s)
    ctypedef struct fr_qkernels:
        const char *name
        fr_qgemm_fn gemm
        fr_qquant_fn quantize
        int group
        int elem
    const fr_qkernels *fr_qkernels_by_name(const char *name)
