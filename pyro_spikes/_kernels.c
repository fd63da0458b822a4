/*
 * Compiled per-candidate loops of thinning for pyro_spikes (CPU, float32 and float64):
 * SpikingPointProcess (exact and relaxed marks, and the relaxed adjoint) and Ogata's thinning
 * of HawkesProcess.
 *
 * The candidates of a thinning run are inherently sequential: the mark of candidate r depends
 * on the marks of all earlier ones through the exponential-basis traces. In PyTorch each
 * candidate costs a dozen tiny tensor operations (a few microseconds each, independent of the
 * work); here it costs O(L D^2) flops. The Python wrappers in
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
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MODE_EXACT 0
#define MODE_RELAXED 1

#define DEFINE_KERNELS(T, SUF, EXP, LOG, LOG1P)                                                \
    static T softplus_##SUF(T x) { return x > 0 ? x + LOG1P(EXP(-x)) : LOG1P(EXP(x)); }       \
                                                                                               \
    static int forward_##SUF(Py_ssize_t N, Py_ssize_t R, Py_ssize_t L, Py_ssize_t D,          \
                             const T *base, Py_ssize_t base_seq, Py_ssize_t base_row,         \
                             const T *decay, const T *weight, Py_ssize_t weight_seq,          \
                             const T *mask, int mode, const T *draws, T inv_temp,             \
                             T *potentials, T *marks, T *probs) {                             \
        T *state = (T *)malloc(sizeof(T) * (size_t)(L * D + 2 * (D + 1)));                    \
        if (!state) return -1;                                                                 \
        T *z = state + L * D, *y = z + D + 1;                                                  \
        for (Py_ssize_t n = 0; n < N; n++) {                                                  \
            const T *w = weight + n * weight_seq;                                              \
            memset(state, 0, sizeof(T) * (size_t)(L * D));                                     \
            for (Py_ssize_t r = 0; r < R; r++) {                                              \
                const Py_ssize_t row = n * R + r;                                              \
                const T *dec = decay + row * L;                                                \
                const T *b = base + n * base_seq + r * base_row;                               \
                T *u = potentials + row * D;                                                   \
                T *m = marks + row * D;                                                        \
                for (Py_ssize_t j = 0; j < D; j++) u[j] = 0;                                  \
                for (Py_ssize_t l = 0; l < L; l++) {                                          \
                    T *v = state + l * D;                                                      \
                    for (Py_ssize_t j = 0; j < D; j++) {                                      \
                        v[j] *= dec[l];                                                        \
                        u[j] += v[j];                                                          \
                    }                                                                          \
                }                                                                              \
                for (Py_ssize_t j = 0; j < D; j++) u[j] += b[j];                              \
                const T keep = mask[row];                                                      \
                if (mode == MODE_RELAXED) {                                                    \
                    /* z = (log pi + g) / tau: log sigma(u_j) = u_j - softplus(u_j) for a      \
                       spike of j, log sum_j sigma(-u_j) for no spike; y = softmax(z) */       \
                    const T *g = draws + row * (D + 1);                                        \
                    T *p = probs + row * (D + 1);                                              \
                    T none_max = -INFINITY;                                                    \
                    for (Py_ssize_t j = 0; j < D; j++) {                                      \
                        const T sp = softplus_##SUF(u[j]);                                    \
                        z[j] = u[j] - sp;                                                      \
                        y[j] = -sp;                                                            \
                        if (y[j] > none_max) none_max = y[j];                                  \
                    }                                                                          \
                    T acc = 0;                                                                 \
                    for (Py_ssize_t j = 0; j < D; j++) acc += EXP(y[j] - none_max);           \
                    z[D] = none_max + LOG(acc);                                                \
                    T zmax = -INFINITY;                                                        \
                    for (Py_ssize_t j = 0; j <= D; j++) {                                     \
                        z[j] = z[j] * inv_temp + g[j];                                         \
                        if (z[j] > zmax) zmax = z[j];                                          \
                    }                                                                          \
                    T total = 0;                                                               \
                    for (Py_ssize_t j = 0; j <= D; j++) {                                     \
                        p[j] = EXP(z[j] - zmax);                                               \
                        total += p[j];                                                         \
                    }                                                                          \
                    for (Py_ssize_t j = 0; j <= D; j++) p[j] /= total;                        \
                    for (Py_ssize_t j = 0; j < D; j++) m[j] = p[j] * keep;                    \
                    for (Py_ssize_t i = 0; i < D; i++) {                                      \
                        const T mi = m[i];                                                     \
                        if (mi == 0) continue;                                                 \
                        const T *wi = w + i * L * D;                                           \
                        for (Py_ssize_t k = 0; k < L * D; k++) state[k] += mi * wi[k];         \
                    }                                                                          \
                } else {                                                                       \
                    /* exact thinning: spike of the neuron whose share sigma(u_j) of the       \
                       bound a D holds the uniform draw (already scaled by D) */               \
                    const T level = draws[row];                                                \
                    T cum = 0;                                                                 \
                    Py_ssize_t label = 0;                                                      \
                    for (Py_ssize_t j = 0; j < D; j++) {                                      \
                        cum += 1 / (1 + EXP(-u[j]));                                           \
                        if (cum < level) label = j + 1;                                        \
                    }                                                                          \
                    for (Py_ssize_t j = 0; j < D; j++) m[j] = 0;                              \
                    if (label < D && keep != 0) {                                              \
                        m[label] = keep;                                                       \
                        const T *wi = w + label * L * D;                                       \
                        for (Py_ssize_t k = 0; k < L * D; k++) state[k] += keep * wi[k];       \
                    }                                                                          \
                }                                                                              \
            }                                                                                  \
        }                                                                                      \
        free(state);                                                                           \
        return 0;                                                                              \
    }                                                                                          \
                                                                                               \
    /* Reverse sweep of the relaxed loop's adjoint (see _RelaxedThinning.backward): with A the  \
       adjoint of the traces after row r, g = grad_r + W A (contracted over l, j),             \
       u_bar_r = P_r * g - (y_r . g) Q_r, and A <- (A + u_bar_r) * decay_r. */                 \
    static int backward_##SUF(Py_ssize_t N, Py_ssize_t R, Py_ssize_t L, Py_ssize_t D,         \
                              const T *decay, const T *weight, Py_ssize_t weight_seq,         \
                              const T *grad, const T *ys, const T *pc, const T *qc,           \
                              T *u_bar) {                                                      \
        T *adj = (T *)malloc(sizeof(T) * (size_t)(L * D + D));                                \
        if (!adj) return -1;                                                                   \
        T *g = adj + L * D;                                                                    \
        for (Py_ssize_t n = 0; n < N; n++) {                                                  \
            const T *w = weight + n * weight_seq;                                              \
            memset(adj, 0, sizeof(T) * (size_t)(L * D));                                       \
            for (Py_ssize_t r = R - 1; r >= 0; r--) {                                         \
                const Py_ssize_t row = (n * R + r) * D;                                        \
                T dot = 0;                                                                     \
                for (Py_ssize_t i = 0; i < D; i++) {                                          \
                    const T *wi = w + i * L * D;                                               \
                    T acc = 0;                                                                 \
                    for (Py_ssize_t k = 0; k < L * D; k++) acc += adj[k] * wi[k];              \
                    g[i] = acc + grad[row + i];                                                \
                    dot += ys[row + i] * g[i];                                                 \
                }                                                                              \
                T *ub = u_bar + row;                                                           \
                for (Py_ssize_t j = 0; j < D; j++) ub[j] = pc[row + j] * g[j] - dot * qc[row + j]; \
                const T *dec = decay + (n * R + r) * L;                                        \
                for (Py_ssize_t l = 0; l < L; l++) {                                          \
                    T *a = adj + l * D;                                                        \
                    for (Py_ssize_t j = 0; j < D; j++) a[j] = (a[j] + ub[j]) * dec[l];         \
                }                                                                              \
            }                                                                                  \
        }                                                                                      \
        free(adj);                                                                             \
        return 0;                                                                              \
    }


/*
 * Ogata's thinning of a linear Hawkes process with exponential kernels (see
 * HawkesProcess.sample), one chunk of C candidates per sequence, continuing from the state and
 * time left by the previous chunk. Uniform decay: state (N, D) is the excitation cumulated over
 * the receiving neuron, neg_beta (N, 1), table (D + 1, D) the cumulated jumps; otherwise state
 * (N, D, D) holds the excitation of i by j at [j, i], neg_beta (N, D, D) at [j, i], table
 * (D + 1, D) the jumps of row j. Table row D (rejection) is zero. The bound right after the
 * current time is the total intensity (it only decays until the next candidate); a candidate at
 * gap e / bound takes label = #{i : cum_i < u * bound} (D = rejected). Once a sequence is past
 * the duration the rest of its chunk is rejected candidates at its final time.
 */
#define DEFINE_HAWKES(T, SUF, EXP)                                                             \
    static void hawkes_##SUF(Py_ssize_t N, Py_ssize_t C, Py_ssize_t D, int uniform,          \
                             T duration, const T *mu, const T *cmu, const T *neg_beta,         \
                             const T *table, Py_ssize_t table_seq, T *state, T *t_now,         \
                             const T *exps, const T *unifs, T *times, int64_t *labels) {       \
        for (Py_ssize_t n = 0; n < N; n++) {                                                  \
            const T *m = mu + n * D, *cm = cmu + n * D, *tab = table + n * table_seq;         \
            const T mu_sum = cm[D - 1];                                                        \
            T *st = state + n * (uniform ? D : D * D);                                         \
            const T *nb = neg_beta + n * (uniform ? 1 : D * D);                                \
            T t = t_now[n];                                                                    \
            for (Py_ssize_t c = 0; c < C; c++) {                                              \
                const Py_ssize_t k = n * C + c;                                                \
                if (!(t <= duration)) { /* finished (or NaN) */                                \
                    times[k] = t;                                                              \
                    labels[k] = D;                                                             \
                    continue;                                                                  \
                }                                                                              \
                int64_t label = 0;                                                             \
                if (uniform) {                                                                 \
                    const T bound = st[D - 1] + mu_sum;                                        \
                    const T gap = exps[k] / bound;                                             \
                    t += gap;                                                                  \
                    const T f = EXP(gap * nb[0]);                                              \
                    const T level = unifs[k] * bound;                                          \
                    for (Py_ssize_t i = 0; i < D; i++) {                                      \
                        st[i] *= f;                                                            \
                        if (st[i] + cm[i] < level) label = i + 1;                              \
                    }                                                                          \
                    if (label < D) {                                                           \
                        const T *row = tab + label * D;                                        \
                        for (Py_ssize_t i = 0; i < D; i++) st[i] += row[i];                   \
                    }                                                                          \
                } else {                                                                       \
                    T bound = mu_sum;                                                          \
                    for (Py_ssize_t q = 0; q < D * D; q++) bound += st[q];                    \
                    const T gap = exps[k] / bound;                                             \
                    t += gap;                                                                  \
                    for (Py_ssize_t q = 0; q < D * D; q++) st[q] *= EXP(gap * nb[q]);         \
                    const T level = unifs[k] * bound;                                          \
                    T cum = 0;                                                                 \
                    for (Py_ssize_t i = 0; i < D; i++) {                                      \
                        T total = m[i];                                                        \
                        for (Py_ssize_t j = 0; j < D; j++) total += st[j * D + i];            \
                        cum += total;                                                          \
                        if (cum < level) label = i + 1;                                        \
                    }                                                                          \
                    if (label < D) {                                                           \
                        const T *row = tab + label * D;                                        \
                        T *dst = st + label * D;                                               \
                        for (Py_ssize_t i = 0; i < D; i++) dst[i] += row[i];                  \
                    }                                                                          \
                }                                                                              \
                times[k] = t;                                                                  \
                labels[k] = label;                                                             \
            }                                                                                  \
            t_now[n] = t;                                                                      \
        }                                                                                      \
    }

DEFINE_HAWKES(double, f64, exp)
DEFINE_HAWKES(float, f32, expf)

DEFINE_KERNELS(double, f64, exp, log, log1p)
DEFINE_KERNELS(float, f32, expf, logf, log1pf)

#define PTR(T, x) ((T *)(uintptr_t)(x))

static PyObject *thinning_forward(PyObject *self, PyObject *args) {
    int is_double, mode;
    Py_ssize_t N, R, L, D, base_seq, base_row, weight_seq;
    unsigned long long base, decay, weight, mask, draws, potentials, marks, probs;
    double inv_temp;
    if (!PyArg_ParseTuple(args, "innnnKnnKKnKiKdKKK", &is_double, &N, &R, &L, &D, &base,
                          &base_seq, &base_row, &decay, &weight, &weight_seq, &mask, &mode,
                          &draws, &inv_temp, &potentials, &marks, &probs))
        return NULL;
    int status;
    Py_BEGIN_ALLOW_THREADS
    if (is_double)
        status = forward_f64(N, R, L, D, PTR(double, base), base_seq, base_row,
                             PTR(double, decay), PTR(double, weight), weight_seq,
                             PTR(double, mask), mode, PTR(double, draws), inv_temp,
                             PTR(double, potentials), PTR(double, marks), PTR(double, probs));
    else
        status = forward_f32(N, R, L, D, PTR(float, base), base_seq, base_row,
                             PTR(float, decay), PTR(float, weight), weight_seq,
                             PTR(float, mask), mode, PTR(float, draws), (float)inv_temp,
                             PTR(float, potentials), PTR(float, marks), PTR(float, probs));
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
    Py_BEGIN_ALLOW_THREADS
    if (is_double)
        hawkes_f64(N, C, D, uniform, duration, PTR(double, mu), PTR(double, cmu),
                   PTR(double, neg_beta), PTR(double, table), table_seq, PTR(double, state),
                   PTR(double, t_now), PTR(double, exps), PTR(double, unifs),
                   PTR(double, times), PTR(int64_t, labels));
    else
        hawkes_f32(N, C, D, uniform, (float)duration, PTR(float, mu), PTR(float, cmu),
                   PTR(float, neg_beta), PTR(float, table), table_seq, PTR(float, state),
                   PTR(float, t_now), PTR(float, exps), PTR(float, unifs), PTR(float, times),
                   PTR(int64_t, labels));
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"thinning_forward", thinning_forward, METH_VARARGS,
     "Sequential thinning loop (exact or relaxed marks) over contiguous CPU buffers."},
    {"relaxed_backward", relaxed_backward, METH_VARARGS,
     "Reverse adjoint sweep of the relaxed thinning loop over contiguous CPU buffers."},
    {"hawkes_chunk", hawkes_chunk, METH_VARARGS,
     "One chunk of Ogata's thinning of an exponential-kernel Hawkes process per sequence."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_kernels",
    "Compiled sequential loops of thinning (see pyro_spikes.distributions.kernels).", -1,
    methods,
};

/* Bump with every change of a function's arguments or meaning: kernels.py refuses (and falls
   back to the PyTorch loops) when an installed build does not match its source. */
#define KERNELS_VERSION 2

PyMODINIT_FUNC PyInit__kernels(void) {
    PyObject *m = PyModule_Create(&module);
    if (m && PyModule_AddIntConstant(m, "VERSION", KERNELS_VERSION)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
