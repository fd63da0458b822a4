/*
 * Compiled per-candidate loops of thinning for pyro_spikes (CPU, float32 and float64):
 * SpikingPointProcess (exact and relaxed marks, and the relaxed adjoint), Ogata's thinning
 * of HawkesProcess, and the exponential-decay trace recursion of the log-likelihoods.
 *
 * The candidates of a thinning run are inherently sequential: the mark of candidate r depends
 * on the marks of all earlier ones through the exponential-basis traces. In PyTorch each
 * candidate costs a dozen tiny tensor operations (a few microseconds each, independent of the
 * work); here it costs only its arithmetic. The Python wrappers in
 * pyro_spikes/distributions/kernels.py call these functions on contiguous CPU tensors and fall
 * back to the equivalent PyTorch loops elsewhere (GPU tensors, or when this module was not
 * built); tests check that both paths agree.
 *
 * Layout (all arrays contiguous, sequences n = 0..N-1, rows r = 0..R-1, basis l, neurons i, j
 * of the modelled subnetwork, D of them):
 *   base    (N, R, D) or (N, D)        bias plus context share of the potentials (base_stride
 *                                      R*D or D between sequences, row stride D or 0)
 *   decay   (N, R, L)                  exp(-(s_r - s_{r-1}) / tau_l)
 *   weight  (D, L, D) or (N, D, L, D)  jump of trace (l, j) caused by a mark on neuron i
 *   mask    (N, R)                     1 at real candidates, 0 at padding candidates
 * The traces start at zero; at row r they decay, give the left potentials
 * u_j = base_j + sum_l V_{l,j}, the mark y is decided, and V_{l,j} += sum_i y_i W_{i,l,j}.
 * The loops themselves are in _kernels_impl.h, included once per floating type.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MODE_EXACT 0
#define MODE_RELAXED 1

/* problems of index-layout events (index_scan); the same bits as pyro_spikes/spikes.py */
#define INDEX_NONFINITE_TIME 1
#define INDEX_NONFINITE_LABEL 2
#define INDEX_OUTSIDE 4
#define INDEX_UNSORTED 8
#define INDEX_BAD_LABEL 16
#define INDEX_EARLY_PADDING 32

#define T double
#define SUF f64
#define EXP exp
#define LOG log
#define LOG1P log1p
#include "_kernels_impl.h"
#undef T
#undef SUF
#undef EXP
#undef LOG
#undef LOG1P

#define T float
#define SUF f32
#define EXP expf
#define LOG logf
#define LOG1P log1pf
#include "_kernels_impl.h"
#undef T
#undef SUF
#undef EXP
#undef LOG
#undef LOG1P

#define PTR(T, x) ((T *)(uintptr_t)(x))

/*
 * Argument checks of every entry point, before any memory is touched. The buffers themselves
 * are checked (shape, dtype, contiguity) by the Python wrappers in kernels.py, which are the
 * only callers; here the sizes, strides and enums that the loops index with are refused with a
 * ValueError when they are negative, zero where the loop needs one entry (D = 0 would index
 * row -1), or so large that a scratch size overflows.
 */
#define REQUIRE(cond, msg)                                  \
    do {                                                    \
        if (!(cond)) {                                      \
            PyErr_SetString(PyExc_ValueError, msg);         \
            return NULL;                                    \
        }                                                   \
    } while (0)

/* a * b (+ c) as size_t without overflow, or 0 on overflow (all operands >= 0) */
static size_t mul_size(size_t a, size_t b) {
    if (a && b > SIZE_MAX / a) return 0;
    return a * b;
}

/* labels (N R entries) all in [-1, D): checked before a loop indexes the weights with them */
static int labels_ok(const int64_t *labels, Py_ssize_t count, Py_ssize_t D) {
    for (Py_ssize_t k = 0; k < count; k++)
        if (labels[k] < -1 || labels[k] >= D) return 0;
    return 1;
}

static PyObject *thinning_forward(PyObject *self, PyObject *args) {
    int is_double, mode;
    Py_ssize_t N, R, L, D, base_seq, base_row, weight_seq;
    unsigned long long base, decay, weight, mask, draws, potentials, marks, probs, labels;
    double inv_temp;
    if (!PyArg_ParseTuple(args, "innnnKnnKKnKiKdKKKK", &is_double, &N, &R, &L, &D, &base,
                          &base_seq, &base_row, &decay, &weight, &weight_seq, &mask, &mode,
                          &draws, &inv_temp, &potentials, &marks, &probs, &labels))
        return NULL;
    REQUIRE(!labels || mode == MODE_EXACT, "thinning_forward: labels need the exact mode");
    REQUIRE((marks != 0) != (labels != 0), "thinning_forward: pass exactly one of marks and labels");
    REQUIRE(N >= 0 && R >= 0 && L >= 0, "thinning_forward: N, R and L must be >= 0");
    REQUIRE(D >= 1, "thinning_forward: D (neurons) must be >= 1");
    REQUIRE(mode == MODE_EXACT || mode == MODE_RELAXED,
            "thinning_forward: mode must be EXACT (0) or RELAXED (1)");
    REQUIRE(base_seq >= 0 && base_row >= 0 && weight_seq >= 0,
            "thinning_forward: strides must be >= 0");
    REQUIRE(L < PY_SSIZE_T_MAX / 4 / D, "thinning_forward: L * D is too large");
    int status;
    Py_BEGIN_ALLOW_THREADS
    if (is_double)
        status = forward_f64(N, R, L, D, PTR(double, base), base_seq, base_row,
                             PTR(double, decay), PTR(double, weight), weight_seq,
                             PTR(double, mask), mode, PTR(double, draws), inv_temp,
                             PTR(double, potentials), PTR(double, marks), PTR(double, probs),
                             PTR(int64_t, labels));
    else
        status = forward_f32(N, R, L, D, PTR(float, base), base_seq, base_row,
                             PTR(float, decay), PTR(float, weight), weight_seq,
                             PTR(float, mask), mode, PTR(float, draws), (float)inv_temp,
                             PTR(float, potentials), PTR(float, marks), PTR(float, probs),
                             PTR(int64_t, labels));
    Py_END_ALLOW_THREADS
    if (status) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *relaxed_backward(PyObject *self, PyObject *args) {
    int is_double;
    Py_ssize_t N, R, L, D, weight_seq;
    unsigned long long decay, weight, grad, ys, pc, qc, u_bar;
    if (!PyArg_ParseTuple(args, "innnnKKnKKKKK", &is_double, &N, &R, &L, &D, &decay, &weight,
                          &weight_seq, &grad, &ys, &pc, &qc, &u_bar))
        return NULL;
    REQUIRE(N >= 0 && R >= 0 && L >= 0, "relaxed_backward: N, R and L must be >= 0");
    REQUIRE(D >= 1, "relaxed_backward: D (neurons) must be >= 1");
    REQUIRE(weight_seq >= 0, "relaxed_backward: weight_seq must be >= 0");
    REQUIRE(L < PY_SSIZE_T_MAX / 4 / D, "relaxed_backward: L * D is too large");
    int status;
    Py_BEGIN_ALLOW_THREADS
    if (is_double)
        status = backward_f64(N, R, L, D, PTR(double, decay), PTR(double, weight), weight_seq,
                              PTR(double, grad), PTR(double, ys), PTR(double, pc),
                              PTR(double, qc), PTR(double, u_bar));
    else
        status = backward_f32(N, R, L, D, PTR(float, decay), PTR(float, weight), weight_seq,
                              PTR(float, grad), PTR(float, ys), PTR(float, pc), PTR(float, qc),
                              PTR(float, u_bar));
    Py_END_ALLOW_THREADS
    if (status) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *hawkes_chunk(PyObject *self, PyObject *args) {
    int is_double, uniform;
    Py_ssize_t N, C, D, table_seq;
    double duration;
    unsigned long long mu, cmu, neg_beta, table, state, t_now, exps, unifs, times, labels;
    if (!PyArg_ParseTuple(args, "innnidKKKKnKKKKKK", &is_double, &N, &C, &D, &uniform,
                          &duration, &mu, &cmu, &neg_beta, &table, &table_seq, &state, &t_now,
                          &exps, &unifs, &times, &labels))
        return NULL;
    REQUIRE(N >= 0 && C >= 0, "hawkes_chunk: N and C must be >= 0");
    REQUIRE(D >= 1, "hawkes_chunk: D (neurons) must be >= 1");
    REQUIRE(table_seq >= 0, "hawkes_chunk: table_seq must be >= 0");
    REQUIRE(D < 46340, "hawkes_chunk: D * D is too large");
    /* t_now and times are float64 for both dtypes: time accumulates in float64 */
    Py_BEGIN_ALLOW_THREADS
    if (is_double)
        hawkes_f64(N, C, D, uniform, duration, PTR(double, mu), PTR(double, cmu),
                   PTR(double, neg_beta), PTR(double, table), table_seq, PTR(double, state),
                   PTR(double, t_now), PTR(double, exps), PTR(double, unifs),
                   PTR(double, times), PTR(int64_t, labels));
    else
        hawkes_f32(N, C, D, uniform, duration, PTR(float, mu), PTR(float, cmu),
                   PTR(float, neg_beta), PTR(float, table), table_seq, PTR(float, state),
                   PTR(double, t_now), PTR(float, exps), PTR(float, unifs), PTR(double, times),
                   PTR(int64_t, labels));
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *hawkes_terms(PyObject *self, PyObject *args) {
    int is_double, want_beta, finish, terms;
    Py_ssize_t N, K, D, mu_seq, alpha_seq, beta_seq;
    double t0, t1, ref0;
    unsigned long long times, labels, mu, alpha, beta, mark_sum, integral, j_mu, j_alpha, j_beta,
        s, s_prime, init, state_out;
    if (!PyArg_ParseTuple(args, "innnKKKnKnKnddiKKKKKKKKdKii", &is_double, &N, &K, &D, &times,
                          &labels, &mu, &mu_seq, &alpha, &alpha_seq, &beta, &beta_seq, &t0,
                          &t1, &want_beta, &mark_sum, &integral, &j_mu, &j_alpha, &j_beta, &s,
                          &s_prime, &init, &ref0, &state_out, &finish, &terms))
        return NULL;
    REQUIRE(N <= 1 || (!init && !state_out), "hawkes_terms: init and state_out need N <= 1");
    REQUIRE(N >= 0 && K >= 0, "hawkes_terms: N and K must be >= 0");
    REQUIRE(D >= 1, "hawkes_terms: D (neurons) must be >= 1");
    REQUIRE(D < 46340, "hawkes_terms: D * D is too large");
    REQUIRE(mu_seq >= 0 && alpha_seq >= 0 && beta_seq >= 0, "hawkes_terms: strides must be >= 0");
    REQUIRE(K == 0 || N < PY_SSIZE_T_MAX / K, "hawkes_terms: N * K is too large");
    REQUIRE(labels_ok(PTR(int64_t, labels), N * K, D), "hawkes_terms: labels must be in [-1, D)");
    size_t size = is_double ? sizeof(double) : sizeof(float);
    void *work = malloc((size_t)(2 * D + 1) * size);
    double *sums = malloc((size_t)(4 * D + D * D) * sizeof(double));
    if (!work || !sums) {
        free(work);
        free(sums);
        return PyErr_NoMemory();
    }
    Py_BEGIN_ALLOW_THREADS
    if (is_double)
        hawkes_terms_f64(N, K, D, PTR(double, times), PTR(int64_t, labels), PTR(double, mu),
                         mu_seq, PTR(double, alpha), alpha_seq, PTR(double, beta), beta_seq, t0,
                         t1, want_beta, PTR(double, mark_sum), PTR(double, integral), PTR(double, j_mu),
                         PTR(double, j_alpha), PTR(double, j_beta), PTR(double, s),
                         PTR(double, s_prime), PTR(double, init), ref0, PTR(double, state_out),
                         finish, terms, (double *)work, sums);
    else
        hawkes_terms_f32(N, K, D, PTR(float, times), PTR(int64_t, labels), PTR(float, mu),
                         mu_seq, PTR(float, alpha), alpha_seq, PTR(float, beta), beta_seq, t0,
                         t1, want_beta, PTR(float, mark_sum), PTR(float, integral), PTR(float, j_mu),
                         PTR(float, j_alpha), PTR(float, j_beta), PTR(float, s),
                         PTR(float, s_prime), PTR(float, init), ref0, PTR(float, state_out),
                         finish, terms, (float *)work, sums);
    Py_END_ALLOW_THREADS
    free(work);
    free(sums);
    Py_RETURN_NONE;
}

static PyObject *index_scan(PyObject *self, PyObject *args) {
    int is_double;
    Py_ssize_t N, K, D, keep = 1;
    double duration;
    unsigned long long events, labels;
    if (!PyArg_ParseTuple(args, "innnKdK", &is_double, &N, &K, &D, &events, &duration, &labels))
        return NULL;
    REQUIRE(N >= 0 && K >= 0, "index_scan: N and K must be >= 0");
    REQUIRE(D >= 1, "index_scan: D (neurons) must be >= 1");
    REQUIRE(K == 0 || N < PY_SSIZE_T_MAX / (2 * K), "index_scan: N * K is too large");
    int flags;
    Py_BEGIN_ALLOW_THREADS
    if (is_double)
        flags = index_scan_f64(N, K, D, PTR(double, events), duration, PTR(int64_t, labels), &keep);
    else
        flags = index_scan_f32(N, K, D, PTR(float, events), duration, PTR(int64_t, labels), &keep);
    Py_END_ALLOW_THREADS
    return Py_BuildValue("in", flags, keep);
}

static PyObject *scan_forward(PyObject *self, PyObject *args) {
    int is_double;
    Py_ssize_t B, G, R, F;
    unsigned long long times, x, rates, h;
    if (!PyArg_ParseTuple(args, "innnnKKKK", &is_double, &B, &G, &R, &F, &times, &x, &rates,
                          &h))
        return NULL;
    REQUIRE(B >= 0 && G >= 0 && R >= 0 && F >= 0, "scan_forward: sizes must be >= 0");
    if (R == 0) Py_RETURN_NONE; /* no rows: nothing to write */
    Py_BEGIN_ALLOW_THREADS
    if (is_double)
        scan_forward_f64(B, G, R, F, PTR(double, times), PTR(double, x), PTR(double, rates),
                         PTR(double, h));
    else
        scan_forward_f32(B, G, R, F, PTR(float, times), PTR(float, x), PTR(float, rates),
                         PTR(float, h));
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *scan_backward(PyObject *self, PyObject *args) {
    int is_double;
    Py_ssize_t B, G, R, F;
    unsigned long long times, rates, h, gh, gx, gt, grate;
    if (!PyArg_ParseTuple(args, "innnnKKKKKKK", &is_double, &B, &G, &R, &F, &times, &rates, &h,
                          &gh, &gx, &gt, &grate))
        return NULL;
    REQUIRE(B >= 0 && G >= 0 && R >= 0 && F >= 0, "scan_backward: sizes must be >= 0");
    if (R == 0) { /* no rows: no time or input gradient, and a zero rate gradient */
        if (mul_size((size_t)B, (size_t)G))
            memset(PTR(char, grate), 0, (size_t)(B * G) * (is_double ? sizeof(double)
                                                                       : sizeof(float)));
        Py_RETURN_NONE;
    }
    void *work = malloc((size_t)(F > 0 ? F : 1) * (is_double ? sizeof(double) : sizeof(float)));
    if (!work) return PyErr_NoMemory();
    Py_BEGIN_ALLOW_THREADS
    if (is_double)
        scan_backward_f64(B, G, R, F, PTR(double, times), PTR(double, rates), PTR(double, h),
                          PTR(double, gh), PTR(double, gx), PTR(double, gt),
                          PTR(double, grate), (double *)work);
    else
        scan_backward_f32(B, G, R, F, PTR(float, times), PTR(float, rates), PTR(float, h),
                          PTR(float, gh), PTR(float, gx), PTR(float, gt), PTR(float, grate),
                          (float *)work);
    Py_END_ALLOW_THREADS
    free(work);
    Py_RETURN_NONE;
}

/* exactly one of marks (dense) and labels (int64 indices) */
#define MARKS_OR_LABELS(name)                                                          \
    do {                                                                               \
        REQUIRE((marks != 0) != (labels != 0), name ": pass exactly one of marks and labels"); \
        REQUIRE(!labels || labels_ok(PTR(int64_t, labels), N * R, D),                  \
                name ": labels must be in [-1, D)");                                   \
    } while (0)

static PyObject *spiking_terms(PyObject *self, PyObject *args) {
    int is_double;
    Py_ssize_t N, R, L, D, K, Q, bias_seq, weight_seq, rates_seq, upper_seq;
    unsigned long long times, marks, labels, bias, weight, rates, upper, nodes, qweights,
        thresholds, h_in, h_out, mark_sum, integral;
    if (!PyArg_ParseTuple(args, "innnnnnKKKKnKnKnKnKKKKKKK", &is_double, &N, &R, &L, &D, &K,
                          &Q, &times, &marks, &labels, &bias, &bias_seq, &weight, &weight_seq,
                          &rates, &rates_seq, &upper, &upper_seq, &nodes, &qweights,
                          &thresholds, &h_in, &h_out, &mark_sum, &integral))
        return NULL;
    REQUIRE(N >= 0 && R >= 0 && L >= 0 && Q >= 0, "spiking_terms: N, R, L, Q must be >= 0");
    REQUIRE(K >= 1, "spiking_terms: K (quadrature rules) must be >= 1");
    REQUIRE(D >= 1, "spiking_terms: D (neurons) must be >= 1");
    REQUIRE(bias_seq >= 0 && weight_seq >= 0 && rates_seq >= 0 && upper_seq >= 0,
            "spiking_terms: strides must be >= 0");
    REQUIRE(L < PY_SSIZE_T_MAX / 4 / (2 * D + 1), "spiking_terms: L * D is too large");
    REQUIRE(R == 0 || N < PY_SSIZE_T_MAX / R, "spiking_terms: N * R is too large");
    MARKS_OR_LABELS("spiking_terms");
    size_t size = is_double ? sizeof(double) : sizeof(float);
    void *work = malloc((size_t)((2 * D + 1) * L + 1) * size);
    double *sums = malloc((size_t)(2 * D) * sizeof(double));
    if (!work || !sums) {
        free(work);
        free(sums);
        return PyErr_NoMemory();
    }
    Py_BEGIN_ALLOW_THREADS
    if (is_double)
        spiking_terms_f64(N, R, L, D, K, Q, PTR(double, times), PTR(double, marks),
                          PTR(int64_t, labels), PTR(double, bias), bias_seq,
                          PTR(double, weight), weight_seq, PTR(double, rates), rates_seq,
                          PTR(double, upper), upper_seq, PTR(double, nodes),
                          PTR(double, qweights), PTR(double, thresholds), PTR(double, h_in),
                          PTR(double, h_out),
                          PTR(double, mark_sum), PTR(double, integral), (double *)work, sums);
    else
        spiking_terms_f32(N, R, L, D, K, Q, PTR(float, times), PTR(float, marks),
                          PTR(int64_t, labels), PTR(float, bias), bias_seq, PTR(float, weight),
                          weight_seq, PTR(float, rates), rates_seq, PTR(float, upper),
                          upper_seq, PTR(float, nodes), PTR(float, qweights),
                          PTR(float, thresholds), PTR(float, h_in), PTR(float, h_out), PTR(float, mark_sum),
                          PTR(float, integral), (float *)work, sums);
    Py_END_ALLOW_THREADS
    free(work);
    free(sums);
    Py_RETURN_NONE;
}

static PyObject *spiking_terms_backward(PyObject *self, PyObject *args) {
    int is_double;
    Py_ssize_t N, R, L, D, K, Q, bias_seq, weight_seq, rates_seq, upper_seq;
    unsigned long long times, marks, labels, bias, weight, rates, upper, nodes, qweights,
        thresholds, h_in, g_mark, g_int, g_out, gt, gm, gb, gw, gr, ga, g_in;
    if (!PyArg_ParseTuple(args, "innnnnnKKKKnKnKnKnKKKKKKKKKKKKKK", &is_double, &N, &R, &L,
                          &D, &K, &Q, &times, &marks, &labels, &bias, &bias_seq, &weight,
                          &weight_seq, &rates, &rates_seq, &upper, &upper_seq, &nodes,
                          &qweights, &thresholds, &h_in, &g_mark, &g_int, &g_out, &gt, &gm,
                          &gb, &gw, &gr, &ga, &g_in))
        return NULL;
    REQUIRE(K >= 1, "spiking_terms_backward: K (quadrature rules) must be >= 1");
    REQUIRE(N >= 0 && R >= 0 && L >= 0 && Q >= 0,
            "spiking_terms_backward: N, R, L, Q must be >= 0");
    REQUIRE(D >= 1, "spiking_terms_backward: D (neurons) must be >= 1");
    REQUIRE(bias_seq >= 0 && weight_seq >= 0 && rates_seq >= 0 && upper_seq >= 0,
            "spiking_terms_backward: strides must be >= 0");
    REQUIRE(R == 0 || N < PY_SSIZE_T_MAX / R, "spiking_terms_backward: N * R is too large");
    MARKS_OR_LABELS("spiking_terms_backward");
    REQUIRE(!labels || !gm, "spiking_terms_backward: labels have no mark gradient (gm = 0)");
    size_t size = is_double ? sizeof(double) : sizeof(float);
    size_t cells = mul_size(mul_size((size_t)R + 3, (size_t)L), (size_t)D);
    REQUIRE((cells || L == 0) && cells < SIZE_MAX / 2 / size - (size_t)(2 * L + 1),
            "spiking_terms_backward: R * L * D is too large");
    REQUIRE(L == 0 || D < 46340, "spiking_terms_backward: D * D is too large");
    REQUIRE(L == 0 || L < PY_SSIZE_T_MAX / 8 / (D * D + 1),
            "spiking_terms_backward: L * D * D is too large");
    void *work = malloc((size_t)(R * L * D + 3 * L * D + 2 * L + 1) * size);
    double *sums = malloc((size_t)(D + L * D * D + L) * sizeof(double));
    if (!work || !sums) {
        free(work);
        free(sums);
        return PyErr_NoMemory();
    }
    Py_BEGIN_ALLOW_THREADS
    if (is_double)
        spiking_terms_backward_f64(
            N, R, L, D, K, Q, PTR(double, times), PTR(double, marks), PTR(int64_t, labels),
            PTR(double, bias), bias_seq, PTR(double, weight), weight_seq, PTR(double, rates),
            rates_seq, PTR(double, upper), upper_seq, PTR(double, nodes), PTR(double, qweights),
            PTR(double, thresholds), PTR(double, h_in), PTR(double, g_mark), PTR(double, g_int), PTR(double, g_out),
            PTR(double, gt), PTR(double, gm), PTR(double, gb), PTR(double, gw), PTR(double, gr),
            PTR(double, ga), PTR(double, g_in), (double *)work, sums);
    else
        spiking_terms_backward_f32(
            N, R, L, D, K, Q, PTR(float, times), PTR(float, marks), PTR(int64_t, labels),
            PTR(float, bias), bias_seq, PTR(float, weight), weight_seq, PTR(float, rates),
            rates_seq, PTR(float, upper), upper_seq, PTR(float, nodes), PTR(float, qweights),
            PTR(float, thresholds), PTR(float, h_in), PTR(float, g_mark), PTR(float, g_int), PTR(float, g_out),
            PTR(float, gt), PTR(float, gm), PTR(float, gb), PTR(float, gw), PTR(float, gr),
            PTR(float, ga), PTR(float, g_in), (float *)work, sums);
    Py_END_ALLOW_THREADS
    free(work);
    free(sums);
    Py_RETURN_NONE;
}

/* ---- signature kernel (Goursat PDE solver and its adjoint): see _sigkernel_impl.h ---- */
/* double only: float32 inputs are solved in double precision (the scheme adds O(eps k) of
   rounding per cell and the errors add up over the M x N cells) */
#define T double
#define SUF f64
#include "_sigkernel_impl.h"
#undef T
#undef SUF

/* sizes are validated by pyro_spikes/distributions/sigkernel.py; refuse what cannot index */
static int sk_sizes_ok(Py_ssize_t a0, Py_ssize_t a1, Py_ssize_t m, Py_ssize_t M, Py_ssize_t N,
                       Py_ssize_t d, int lam, int zmode) {
    if (a0 < 0 || a1 < a0 || m < 1 || M < 1 || N < 1 || lam < 0 || lam > 16 ||
        (!zmode && d < 1)) {
        PyErr_SetString(PyExc_ValueError, "sigkernel: invalid sizes");
        return 0;
    }
    return 1;
}

static PyObject *sigkernel_forward(PyObject *self, PyObject *args) {
    int lam;
    Py_ssize_t a0, a1, m, M, N, d;
    unsigned long long dx, dy, z, out;
    if (!PyArg_ParseTuple(args, "nnnnnniKKKK", &a0, &a1, &m, &M, &N, &d, &lam, &dx, &dy, &z,
                          &out))
        return NULL;
    if (!sk_sizes_ok(a0, a1, m, M, N, d, lam, z != 0)) return NULL;
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = sigkernel_forward_f64(a0, a1, m, M, N, d, lam, PTR(double, dx), PTR(double, dy),
                                   PTR(double, z), PTR(double, out));
    Py_END_ALLOW_THREADS
    if (status) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *sigkernel_backward(PyObject *self, PyObject *args) {
    int lam;
    Py_ssize_t a0, a1, m, M, N, d;
    unsigned long long dx, dy, z, gout, gdx, gdy, gz;
    if (!PyArg_ParseTuple(args, "nnnnnniKKKKKKK", &a0, &a1, &m, &M, &N, &d, &lam, &dx, &dy, &z,
                          &gout, &gdx, &gdy, &gz))
        return NULL;
    if (!sk_sizes_ok(a0, a1, m, M, N, d, lam, z != 0)) return NULL;
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = sigkernel_backward_f64(a0, a1, m, M, N, d, lam, PTR(double, dx), PTR(double, dy),
                                    PTR(double, z), PTR(double, gout), PTR(double, gdx),
                                    PTR(double, gdy), PTR(double, gz));
    Py_END_ALLOW_THREADS
    if (status) return PyErr_NoMemory();
    Py_RETURN_NONE;
}
/* ---- end of the signature-kernel section ---- */

/* ---- smooth gate (one LIF time step and its vector-Jacobian product): _smooth_gate_impl.h */
#define T double
#define SUF f64
#include "_smooth_gate_impl.h"
#undef T
#undef SUF
#define T float
#define SUF f32
#include "_smooth_gate_impl.h"
#undef T
#undef SUF

/* consts: theta, period, 1 / gate_width, 1 / tau_mem, 1 / tau_syn, spike_drive, dt, decay */
static PyObject *smooth_gate_lif_step(PyObject *self, PyObject *args) {
    int is_double, backward;
    Py_ssize_t n;
    double k[8];
    unsigned long long a0, a1, a2, a3, a4, a5, a6, a7;
    if (!PyArg_ParseTuple(args, "iin(dddddddd)KKKKKKKK", &is_double, &backward, &n, &k[0],
                          &k[1], &k[2], &k[3], &k[4], &k[5], &k[6], &k[7], &a0, &a1, &a2, &a3,
                          &a4, &a5, &a6, &a7))
        return NULL;
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "smooth_gate_lif_step: negative size");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    if (is_double) {
        sg_consts_f64 c = {k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7]};
        if (backward) /* u, u_new, gu_new, gs_new, gG_new -> gu, gs, gcurrent */
            sg_step_backward_f64(n, &c, PTR(double, a0), PTR(double, a1), PTR(double, a2),
                                 PTR(double, a3), PTR(double, a4), PTR(double, a5),
                                 PTR(double, a6), PTR(double, a7));
        else /* u, s, current -> u_new, s_new, G_new */
            sg_step_f64(n, &c, PTR(double, a0), PTR(double, a1), PTR(double, a2),
                        PTR(double, a3), PTR(double, a4), PTR(double, a5));
    } else {
        sg_consts_f32 c = {(float)k[0], (float)k[1], (float)k[2], (float)k[3],
                           (float)k[4], (float)k[5], (float)k[6], (float)k[7]};
        if (backward)
            sg_step_backward_f32(n, &c, PTR(float, a0), PTR(float, a1), PTR(float, a2),
                                 PTR(float, a3), PTR(float, a4), PTR(float, a5), PTR(float, a6),
                                 PTR(float, a7));
        else
            sg_step_f32(n, &c, PTR(float, a0), PTR(float, a1), PTR(float, a2), PTR(float, a3),
                        PTR(float, a4), PTR(float, a5));
    }
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}
/* ---- end of the smooth-gate section ---- */

static PyMethodDef methods[] = {
    {"thinning_forward", thinning_forward, METH_VARARGS,
     "Sequential thinning loop (exact or relaxed marks) over contiguous CPU buffers."},
    {"relaxed_backward", relaxed_backward, METH_VARARGS,
     "Reverse adjoint sweep of the relaxed thinning loop over contiguous CPU buffers."},
    {"scan_forward", scan_forward, METH_VARARGS,
     "Exponential-decay trace recursion (exp_decay_scan) over contiguous CPU buffers."},
    {"scan_backward", scan_backward, METH_VARARGS,
     "Vector-Jacobian product of scan_forward (inputs, times, rates)."},
    {"spiking_terms", spiking_terms, METH_VARARGS,
     "Log-likelihood terms (marks, compensator) of SpikingPointProcess, forward only."},
    {"spiking_terms_backward", spiking_terms_backward, METH_VARARGS,
     "Vector-Jacobian product of spiking_terms."},
    {"index_scan", index_scan, METH_VARARGS,
     "One pass over index-layout events: int64 labels, problems found, rows to keep."},
    {"hawkes_terms", hawkes_terms, METH_VARARGS,
     "Log-likelihood terms of a uniform-decay Hawkes process and their derivatives."},
    {"hawkes_chunk", hawkes_chunk, METH_VARARGS,
     "One chunk of Ogata's thinning of an exponential-kernel Hawkes process per sequence."},
    {"sigkernel_forward", sigkernel_forward, METH_VARARGS,
     "Signature-kernel Goursat PDE solver over x-paths [a0, a1), float64 (linear or given z)."},
    {"sigkernel_backward", sigkernel_backward, METH_VARARGS,
     "Adjoint (reverse) sweep of sigkernel_forward: gradients of the path increments."},
    {"smooth_gate_lif_step", smooth_gate_lif_step, METH_VARARGS,
     "One smooth-gate LIF time step (elementwise) or its vector-Jacobian product."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_kernels",
    "Compiled sequential loops of thinning (see pyro_spikes.distributions.kernels).", -1,
    methods,
};

/* Bump with every change of a function's arguments or meaning: kernels.py refuses (and falls
   back to the PyTorch loops) when an installed build does not match its source. */
#define KERNELS_VERSION 14

PyMODINIT_FUNC PyInit__kernels(void) {
    PyObject *m = PyModule_Create(&module);
    if (m && (PyModule_AddIntConstant(m, "VERSION", KERNELS_VERSION) ||
              PyModule_AddIntConstant(m, "SIGKERNEL_VERSION", 1) ||
              PyModule_AddIntConstant(m, "SMOOTH_GATE_VERSION", 1))) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
