/*
 * pyro_spikes._smc: the particle filter of pyro_spikes.models.smc on the CPU, in float64.
 *
 * One call runs sequences [b0, b1) of a batch; every sequence has its own particles and its own
 * random stream (xoshiro256** seeded by the caller from torch's generator). The Python wrapper
 * checks every shape, dtype and contiguity before passing the pointers here; this file trusts
 * nothing else: all sizes are arguments and every index is computed from them.
 *
 * Within a segment (s, e] a particle draws the candidates of a homogeneous Poisson process of
 * rate a * D_H by exponential gaps (memoryless: restarting at e is exact), integrates the
 * observed (and, for a proposal other than the prior, the hidden model minus proposal)
 * intensities between candidates by Gauss-Legendre quadrature, decays its traces, thins the
 * candidate with the proposal's intensity and jumps its traces at an accepted spike. At the end
 * of the segment the observed spike (if any) is weighed and added to the traces; the particles
 * are then resampled (systematic) when their effective sample size falls below the threshold.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define SMC_VERSION 2
#define SMC_MAX_BASIS 64

typedef struct { uint64_t s[4]; } rng_t;

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static inline uint64_t rng_next(rng_t *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3]; s[2] ^= t; s[3] = rotl(s[3], 45);
    return result;
}

/* uniform on (0, 1): 53 random bits, never 0 */
static inline double rng_uniform(rng_t *r) {
    return ((double)(rng_next(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

static void rng_seed(rng_t *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) { /* splitmix64 */
        uint64_t z = (seed += 0x9E3779B97F4A7C15ULL);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        r->s[i] = z ^ (z >> 31);
    }
}

static inline double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }
static inline double log_sigmoid(double x) {
    return x >= 0 ? -log1p(exp(-x)) : x - log1p(exp(x));
}

typedef struct {
    Py_ssize_t L, D, DO, DH, Q, MK, P;
    double a, threshold;
    const double *bias, *weight, *rates, *nodes, *qweights; /* weight (L, D, D) */
    const double *qbias, *qweight, *lrates;                 /* proposal: (DH), (L, DH, D), (MK) */
    int prior, look, adaptive;
} smc_args;

/*
 * Gauss-Legendre order per piece. The integrand sigma(u(t)) varies on the scale
 * 1 / omega, omega = sum_l r_l max(1, max_d |V_{l,d}|) (the decay rates, steepened by large
 * traces); a piece of length h with x = h omega <= 0.02, 0.1, 0.3 is integrated with 2, 3, 4
 * nodes (errors of order x^(2n+1) / (2n)!, below 1e-10 relative), longer ones with the full
 * order Q. tests/test_smc.py checks the total against the full order on strongly coupled
 * networks.
 */
static Py_ssize_t piece_order(const smc_args *A, const double *V, const double *VQ, double dt,
                              Py_ssize_t *offset) {
    const Py_ssize_t L = A->L, D = A->D, DH = A->DH;
    double omega = 0.0;
    for (Py_ssize_t l = 0; l < L; l++) {
        double m = 1.0;
        Py_ssize_t cols = A->prior ? A->DO : D;
        for (Py_ssize_t d = 0; d < cols; d++) { double v = fabs(V[l * D + d]); if (v > m) m = v; }
        if (!A->prior)
            for (Py_ssize_t h = 0; h < DH; h++) { double v = fabs(VQ[l * DH + h]); if (v > m) m = v; }
        omega += A->rates[l] * m;
    }
    if (A->look) {
        double m = 0.0;
        for (Py_ssize_t k = 0; k < A->MK; k++) m += A->lrates[k];
        omega += m * 4.0; /* anticausal terms: the same scale, with a margin for their size */
    }
    double x = dt * omega;
    if (x <= 0.02) { *offset = 0; return 2; }
    if (x <= 0.1) { *offset = 2; return 3; }
    if (x <= 0.3) { *offset = 5; return 4; }
    *offset = 9;
    return A->Q;
}

/* -integral over [t0, t0 + dt] of the weight's intensities, from the traces at t0 */
static double piece(const smc_args *A, const double *V, const double *VQ, double t0, double dt,
                    double e, const double *G) {
    if (dt <= 0) return 0.0;
    const Py_ssize_t L = A->L, D = A->D, DO = A->DO, DH = A->DH;
    Py_ssize_t off = 9, order = A->Q;
    if (A->adaptive) order = piece_order(A, V, VQ, dt, &off);
    double total = 0.0;
    for (Py_ssize_t q = 0; q < order; q++) {
        double x = A->nodes[off + q] * dt, decp[SMC_MAX_BASIS], cost = 0.0;
        for (Py_ssize_t l = 0; l < L; l++) decp[l] = exp(-x * A->rates[l]);
        Py_ssize_t cols = A->prior ? DO : D;
        for (Py_ssize_t d = 0; d < cols; d++) {
            double u = A->bias[d];
            for (Py_ssize_t l = 0; l < L; l++) u += decp[l] * V[l * D + d];
            cost += sigmoid(u); /* observed neurons, and the model's hidden ones */
        }
        if (!A->prior) {
            /* subtract the proposal's hidden intensities */
            for (Py_ssize_t h = 0; h < DH; h++) {
                double u = A->qbias[h];
                for (Py_ssize_t l = 0; l < L; l++) u += decp[l] * VQ[l * DH + h];
                if (A->look) {
                    for (Py_ssize_t m = 0; m < A->MK; m++)
                        u += exp(-(e - t0 - x) * A->lrates[m]) * G[m * DH + h];
                }
                cost -= sigmoid(u);
            }
        }
        total += A->qweights[off + q] * cost;
    }
    return A->a * dt * total;
}

static void decay_state(const smc_args *A, double *V, double *VQ, double dt) {
    const Py_ssize_t L = A->L, D = A->D, DH = A->DH;
    for (Py_ssize_t l = 0; l < L; l++) {
        double f = exp(-dt * A->rates[l]);
        for (Py_ssize_t d = 0; d < D; d++) V[l * D + d] *= f;
        if (!A->prior)
            for (Py_ssize_t h = 0; h < DH; h++) VQ[l * DH + h] *= f;
    }
}

/* traces jump at a spike of network neuron n */
static void jump(const smc_args *A, double *V, double *VQ, Py_ssize_t n) {
    const Py_ssize_t L = A->L, D = A->D, DH = A->DH, DO = A->DO;
    for (Py_ssize_t l = 0; l < L; l++) {
        for (Py_ssize_t d = 0; d < D; d++) V[l * D + d] += A->weight[(l * D + d) * D + n];
        if (!A->prior)
            for (Py_ssize_t h = 0; h < DH; h++) VQ[l * DH + h] += A->qweight[(l * DH + h) * D + n];
    }
    (void)DO;
}

static double logsumexp(const double *x, Py_ssize_t n) {
    double m = -INFINITY, s = 0.0;
    for (Py_ssize_t i = 0; i < n; i++) if (x[i] > m) m = x[i];
    if (!isfinite(m)) return m;
    for (Py_ssize_t i = 0; i < n; i++) s += exp(x[i] - m);
    return m + log(s);
}

/* returns 0 on success, -1 on allocation failure */
static int run_sequence(const smc_args *A, Py_ssize_t M, const double *ends, const int64_t *labels,
                        const double *look_g, uint64_t seed, double *log_z, double *ess_min,
                        double *ess_mean, int64_t *resampled, int64_t *segments) {
    const Py_ssize_t L = A->L, D = A->D, DO = A->DO, DH = A->DH, P = A->P;
    const Py_ssize_t sv = L * D, sq = A->prior ? 0 : L * DH;
    double *V = calloc((size_t)(P * sv) + 1, sizeof(double));
    double *V2 = calloc((size_t)(P * sv) + 1, sizeof(double));
    double *VQ = calloc((size_t)(P * sq) + 1, sizeof(double));
    double *VQ2 = calloc((size_t)(P * sq) + 1, sizeof(double));
    double *logw = calloc((size_t)P, sizeof(double));
    double *cum = calloc((size_t)P, sizeof(double));
    if (!V || !V2 || !VQ || !VQ2 || !logw || !cum) {
        free(V); free(V2); free(VQ); free(VQ2); free(logw); free(cum);
        return -1;
    }
    rng_t rng;
    rng_seed(&rng, seed);
    const double rate = A->a * (double)DH, log_a = log(A->a);
    double lz = 0.0, emin = 1.0, esum = 0.0;
    int64_t nres = 0, nseg = 0;
    for (Py_ssize_t j = 0; j < M; j++) {
        double s = j ? ends[j - 1] : 0.0, e = ends[j];
        int64_t lab = labels[j];
        const double *G = A->look ? look_g + j * A->MK * DH : NULL;
        for (Py_ssize_t i = 0; i < P; i++) {
            double *v = V + i * sv, *vq = VQ + i * sq, t = s, lw = logw[i];
            if (e > s) {
                for (;;) {
                    double tc = t - log(rng_uniform(&rng)) / rate;
                    if (!(tc < e)) break;
                    lw -= piece(A, v, vq, t, tc - t, e, G);
                    decay_state(A, v, vq, tc - t);
                    t = tc;
                    double pick = rng_uniform(&rng) * (double)DH;
                    Py_ssize_t h = (Py_ssize_t)pick;
                    if (h >= DH) h = DH - 1;
                    double frac = pick - (double)h;
                    double u_mod = A->bias[DO + h];
                    for (Py_ssize_t l = 0; l < L; l++) u_mod += v[l * D + DO + h];
                    double u_prop = u_mod;
                    if (!A->prior) {
                        u_prop = A->qbias[h];
                        for (Py_ssize_t l = 0; l < L; l++) u_prop += vq[l * DH + h];
                        if (A->look)
                            for (Py_ssize_t m = 0; m < A->MK; m++)
                                u_prop += exp(-(e - t) * A->lrates[m]) * G[m * DH + h];
                    }
                    if (frac < sigmoid(u_prop)) {
                        if (!A->prior) lw += log_sigmoid(u_mod) - log_sigmoid(u_prop);
                        jump(A, v, vq, DO + h);
                    }
                }
                lw -= piece(A, v, vq, t, e - t, e, G);
                decay_state(A, v, vq, e - t);
            }
            if (lab >= 0) {
                double u = A->bias[lab];
                for (Py_ssize_t l = 0; l < L; l++) u += v[l * D + lab];
                lw += log_a + log_sigmoid(u);
                jump(A, v, vq, (Py_ssize_t)lab);
            }
            logw[i] = lw;
        }
        int real = (e > s) || lab >= 0;
        if (!real) continue;
        nseg++;
        double norm = logsumexp(logw, P), sq2 = 0.0;
        for (Py_ssize_t i = 0; i < P; i++) { double w = exp(logw[i] - norm); sq2 += w * w; }
        double ess = 1.0 / sq2 / (double)P;
        if (ess < emin) emin = ess;
        esum += ess;
        if (ess < A->threshold && j < M - 1) {
            double c = 0.0;
            for (Py_ssize_t i = 0; i < P; i++) { c += exp(logw[i] - norm); cum[i] = c; }
            cum[P - 1] = 1.0;
            double u0 = rng_uniform(&rng);
            Py_ssize_t k = 0;
            for (Py_ssize_t i = 0; i < P; i++) {
                double pos = (u0 + (double)i) / (double)P;
                while (k < P - 1 && cum[k] < pos) k++;
                memcpy(V2 + i * sv, V + k * sv, sizeof(double) * sv);
                if (sq) memcpy(VQ2 + i * sq, VQ + k * sq, sizeof(double) * sq);
            }
            double *tmp = V; V = V2; V2 = tmp;
            tmp = VQ; VQ = VQ2; VQ2 = tmp;
            lz += norm - log((double)P);
            for (Py_ssize_t i = 0; i < P; i++) logw[i] = 0.0;
            nres++;
        }
    }
    lz += logsumexp(logw, P) - log((double)P);
    *log_z = lz; *ess_min = emin; *ess_mean = nseg ? esum / (double)nseg : 1.0;
    *resampled = nres; *segments = nseg;
    free(V); free(V2); free(VQ); free(VQ2); free(logw); free(cum);
    return 0;
}

/*
 * smc(B, M, L, D, DO, Q, MK, P, prior, look, adaptive, a, threshold,
 *     ends, labels, look_g, seeds, bias, weight, rates, nodes, qweights, qbias, qweight, lrates,
 * (nodes and qweights: the Gauss-Legendre rules of orders 2, 3, 4 and Q, concatenated)
 *     out_logz, out_essmin, out_essmean, out_resampled, out_segments)
 * all pointers to contiguous float64 / int64 CPU buffers of the sizes the wrapper checked.
 */
static PyObject *smc(PyObject *self, PyObject *args) {
    Py_ssize_t B, M, L, D, DO, Q, MK, P;
    int prior, look, adaptive;
    double a, threshold;
    unsigned long long ends, labels, look_g, seeds, bias, weight, rates, nodes, qweights, qbias,
        qweight, lrates, o_lz, o_emin, o_emean, o_res, o_seg;
    if (!PyArg_ParseTuple(args, "nnnnnnnniiiddKKKKKKKKKKKKKKKKK", &B, &M, &L, &D, &DO, &Q, &MK,
                          &P, &prior, &look, &adaptive, &a, &threshold, &ends, &labels, &look_g, &seeds,
                          &bias, &weight, &rates, &nodes, &qweights, &qbias, &qweight, &lrates,
                          &o_lz, &o_emin, &o_emean, &o_res, &o_seg))
        return NULL;
    if (B < 0 || M < 1 || L < 1 || L > SMC_MAX_BASIS || D < 2 || DO < 1 || DO >= D || Q < 1 || P < 1 || MK < 0 ||
        (look && (MK < 1 || prior)) || !(a > 0) || !isfinite(a)) {
        PyErr_SetString(PyExc_ValueError, "pyro_spikes._smc.smc: inconsistent sizes");
        return NULL;
    }
    smc_args A = {L, D, DO, D - DO, Q, MK, P, a, threshold,
                  (const double *)bias, (const double *)weight, (const double *)rates,
                  (const double *)nodes, (const double *)qweights,
                  (const double *)qbias, (const double *)qweight, (const double *)lrates,
                  prior, look, adaptive};
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t b = 0; b < B && !failed; b++) {
        const double *g = look ? (const double *)look_g + b * M * MK * (D - DO) : NULL;
        failed = run_sequence(&A, M, (const double *)ends + b * M, (const int64_t *)labels + b * M,
                              g, ((const uint64_t *)seeds)[b], (double *)o_lz + b,
                              (double *)o_emin + b, (double *)o_emean + b,
                              (int64_t *)o_res + b, (int64_t *)o_seg + b);
    }
    Py_END_ALLOW_THREADS
    if (failed) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"smc", smc, METH_VARARGS, "continuous-time particle filter (see pyro_spikes.models.smc)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_smc", NULL, -1, methods};

PyMODINIT_FUNC PyInit__smc(void) {
    PyObject *m = PyModule_Create(&module);
    if (m && PyModule_AddIntConstant(m, "VERSION", SMC_VERSION) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
