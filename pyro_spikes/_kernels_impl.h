/*
 * The loops of _kernels.c for one floating type, included once per type with
 *   T      the type (double, float)
 *   SUF    the suffix of the function names (f64, f32)
 *   EXP, LOG, LOG1P  the matching math functions.
 * See _kernels.c for the array layouts.
 */
#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)
#define FN(name) CAT(name, SUF)

static T FN(softplus)(T x) { return x > 0 ? x + LOG1P(EXP(-x)) : LOG1P(EXP(x)); }

/* sum_j a_j b_j with four partial sums: the additions of one chain wait for each other (about
   4 cycles each), four chains overlap */
static inline T FN(dot)(const T *a, const T *b, Py_ssize_t n) {
    T s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    Py_ssize_t j = 0;
    for (; j + 4 <= n; j += 4) {
        s0 += a[j] * b[j];
        s1 += a[j + 1] * b[j + 1];
        s2 += a[j + 2] * b[j + 2];
        s3 += a[j + 3] * b[j + 3];
    }
    for (; j < n; j++) s0 += a[j] * b[j];
    return (s0 + s1) + (s2 + s3);
}

/*
 * Thinning over fixed candidates. Exact mode: the draw U D (U uniform on [0, 1)) picks the
 * neuron j = floor(U D) uniformly and its fractional part accepts with probability sigma(u_j),
 * so a spike of j has probability lambda_j / (a D). The traces then only need updating at
 * spikes: between spikes they decay by f_l, the product of the candidates' decay factors, so a
 * candidate costs O(L) and a spike O(L D). Potentials are not written; with labels (exact mode
 * only) the neuron of every row (-1: rejected) is written there instead of the marks, which are
 * then NULL (O(R) output whatever D). Relaxed mode: all traces
 * decay at every candidate, u (all D) is written, the concrete mark
 * y = softmax((log pi(u) + g) / tau) over D + 1 categories (spikes, no spike) is written to
 * probs, and its first D entries (times the mask) are the mark.
 */
static int FN(forward)(Py_ssize_t N, Py_ssize_t R, Py_ssize_t L, Py_ssize_t D, const T *base,
                       Py_ssize_t base_seq, Py_ssize_t base_row, const T *decay,
                       const T *weight, Py_ssize_t weight_seq, const T *mask, int mode,
                       const T *draws, T inv_temp, T *potentials, T *marks, T *probs,
                       int64_t *labels) {
    T *state = (T *)malloc(sizeof(T) * (size_t)(L * D + 2 * (D + 1) + L));
    if (!state) return -1;
    T *z = state + L * D, *y = z + D + 1, *f = y + D + 1;
    for (Py_ssize_t n = 0; n < N; n++) {
        const T *w = weight + n * weight_seq;
        memset(state, 0, sizeof(T) * (size_t)(L * D));
        for (Py_ssize_t l = 0; l < L; l++) f[l] = 1;
        for (Py_ssize_t r = 0; r < R; r++) {
            const Py_ssize_t row = n * R + r;
            const T *dec = decay + row * L;
            const T *b = base + n * base_seq + r * base_row;
            const T keep = mask[row];
            T *m = labels ? NULL : marks + row * D;
            if (m)
                for (Py_ssize_t j = 0; j < D; j++) m[j] = 0;
            else
                labels[row] = -1;
            if (mode == MODE_EXACT) {
                for (Py_ssize_t l = 0; l < L; l++) f[l] *= dec[l];
                const T level = draws[row];
                Py_ssize_t j = level > 0 ? (Py_ssize_t)level : 0;
                if (j > D - 1) j = D - 1;
                T uj = b[j];
                for (Py_ssize_t l = 0; l < L; l++) uj += f[l] * state[l * D + j];
                if (keep != 0 && level - (T)j < 1 / (1 + EXP(-uj))) {
                    if (m)
                        m[j] = keep;
                    else
                        labels[row] = j;
                    const T *wj = w + j * L * D;
                    for (Py_ssize_t l = 0; l < L; l++) {
                        T *v = state + l * D;
                        const T *wl = wj + l * D;
                        for (Py_ssize_t k = 0; k < D; k++) v[k] = v[k] * f[l] + keep * wl[k];
                        f[l] = 1;
                    }
                }
                continue;
            }
            T *u = potentials + row * D;
            for (Py_ssize_t j = 0; j < D; j++) u[j] = 0;
            for (Py_ssize_t l = 0; l < L; l++) {
                T *v = state + l * D;
                for (Py_ssize_t j = 0; j < D; j++) {
                    v[j] *= dec[l];
                    u[j] += v[j];
                }
            }
            for (Py_ssize_t j = 0; j < D; j++) u[j] += b[j];
            /* log sigma(u_j) = u_j - softplus(u_j) for a spike of j,
               log sum_j sigma(-u_j) = logsumexp(-softplus(u)) for no spike */
            const T *g = draws + row * (D + 1);
            T *p = probs + row * (D + 1);
            T none_max = -INFINITY;
            for (Py_ssize_t j = 0; j < D; j++) {
                const T sp = FN(softplus)(u[j]);
                z[j] = u[j] - sp;
                y[j] = -sp;
                if (y[j] > none_max) none_max = y[j];
            }
            T acc = 0;
            for (Py_ssize_t j = 0; j < D; j++) acc += EXP(y[j] - none_max);
            z[D] = none_max + LOG(acc);
            T zmax = -INFINITY;
            for (Py_ssize_t j = 0; j <= D; j++) {
                z[j] = z[j] * inv_temp + g[j];
                if (z[j] > zmax) zmax = z[j];
            }
            T total = 0;
            for (Py_ssize_t j = 0; j <= D; j++) {
                p[j] = EXP(z[j] - zmax);
                total += p[j];
            }
            for (Py_ssize_t j = 0; j <= D; j++) p[j] /= total;
            for (Py_ssize_t j = 0; j < D; j++) m[j] = p[j] * keep;
            for (Py_ssize_t i = 0; i < D; i++) {
                const T mi = m[i];
                if (mi == 0) continue;
                const T *wi = w + i * L * D;
                for (Py_ssize_t k = 0; k < L * D; k++) state[k] += mi * wi[k];
            }
        }
    }
    free(state);
    return 0;
}

/*
 * Reverse sweep of the relaxed loop's adjoint (see _RelaxedThinning.backward): with A the
 * adjoint of the traces after row r, g = grad_r + W A (contracted over l, j),
 * u_bar_r = P_r * g - (y_r . g) Q_r, and A <- (A + u_bar_r) * decay_r.
 */
static int FN(backward)(Py_ssize_t N, Py_ssize_t R, Py_ssize_t L, Py_ssize_t D,
                        const T *decay, const T *weight, Py_ssize_t weight_seq, const T *grad,
                        const T *ys, const T *pc, const T *qc, T *u_bar) {
    T *adj = (T *)malloc(sizeof(T) * (size_t)(L * D + D));
    if (!adj) return -1;
    T *g = adj + L * D;
    for (Py_ssize_t n = 0; n < N; n++) {
        const T *w = weight + n * weight_seq;
        memset(adj, 0, sizeof(T) * (size_t)(L * D));
        for (Py_ssize_t r = R - 1; r >= 0; r--) {
            const Py_ssize_t row = (n * R + r) * D;
            T dot = 0;
            for (Py_ssize_t i = 0; i < D; i++) {
                const T *wi = w + i * L * D;
                T acc = 0;
                for (Py_ssize_t k = 0; k < L * D; k++) acc += adj[k] * wi[k];
                g[i] = acc + grad[row + i];
                dot += ys[row + i] * g[i];
            }
            T *ub = u_bar + row;
            for (Py_ssize_t j = 0; j < D; j++) ub[j] = pc[row + j] * g[j] - dot * qc[row + j];
            const T *dec = decay + (n * R + r) * L;
            for (Py_ssize_t l = 0; l < L; l++) {
                T *a = adj + l * D;
                for (Py_ssize_t j = 0; j < D; j++) a[j] = (a[j] + ub[j]) * dec[l];
            }
        }
    }
    free(adj);
    return 0;
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
 * the duration the rest of its chunk is rejected candidates at its final time. Times (t_now,
 * times, duration) are float64 for both T, so long float32 runs neither stall nor drift.
 */
static void FN(hawkes)(Py_ssize_t N, Py_ssize_t C, Py_ssize_t D, int uniform, double duration,
                       const T *mu, const T *cmu, const T *neg_beta, const T *table,
                       Py_ssize_t table_seq, T *state, double *t_now, const T *exps,
                       const T *unifs, double *times, int64_t *labels) {
    for (Py_ssize_t n = 0; n < N; n++) {
        const T *m = mu + n * D, *cm = cmu + n * D, *tab = table + n * table_seq;
        const T mu_sum = cm[D - 1];
        T *st = state + n * (uniform ? D : D * D);
        const T *nb = neg_beta + n * (uniform ? 1 : D * D);
        double t = t_now[n]; /* time accumulates in float64 whatever T is */
        for (Py_ssize_t c = 0; c < C; c++) {
            const Py_ssize_t k = n * C + c;
            if (!(t <= duration)) { /* finished (or NaN) */
                times[k] = t;
                labels[k] = D;
                continue;
            }
            int64_t label = 0;
            if (uniform) {
                const T bound = st[D - 1] + mu_sum;
                const T gap = exps[k] / bound;
                t += (double)gap;
                const T decay = EXP(gap * nb[0]);
                const T level = unifs[k] * bound;
                for (Py_ssize_t i = 0; i < D; i++) {
                    st[i] *= decay;
                    if (st[i] + cm[i] < level) label = i + 1;
                }
                if (label < D) {
                    const T *row = tab + label * D;
                    for (Py_ssize_t i = 0; i < D; i++) st[i] += row[i];
                }
            } else {
                T bound = mu_sum;
                for (Py_ssize_t q = 0; q < D * D; q++) bound += st[q];
                const T gap = exps[k] / bound;
                t += (double)gap;
                for (Py_ssize_t q = 0; q < D * D; q++) st[q] *= EXP(gap * nb[q]);
                const T level = unifs[k] * bound;
                T cum = 0;
                for (Py_ssize_t i = 0; i < D; i++) {
                    T total = m[i];
                    for (Py_ssize_t j = 0; j < D; j++) total += st[j * D + i];
                    cum += total;
                    if (cum < level) label = i + 1;
                }
                if (label < D) {
                    const T *row = tab + label * D;
                    T *dst = st + label * D;
                    for (Py_ssize_t i = 0; i < D; i++) dst[i] += row[i];
                }
            }
            times[k] = t;
            labels[k] = label;
        }
        t_now[n] = t;
    }
}


/*
 * exp_decay_scan: for each sequence b and decay group g, the left-limit traces
 * h_0 = 0, h_i = d_i (h_{i-1} + x_{i-1}) with d_i = exp(-r_g max(t_i - t_{i-1}, 0)).
 * times (B, R), x and h (B, G, R, F), rates (B, G).
 */
static void FN(scan_forward)(Py_ssize_t B, Py_ssize_t G, Py_ssize_t R, Py_ssize_t F,
                             const T *times, const T *x, const T *rates, T *h) {
    for (Py_ssize_t b = 0; b < B; b++) {
        const T *t = times + b * R;
        for (Py_ssize_t g = 0; g < G; g++) {
            const T rate = rates[b * G + g];
            const T *xg = x + (b * G + g) * R * F;
            T *hg = h + (b * G + g) * R * F;
            for (Py_ssize_t f = 0; f < F; f++) hg[f] = 0;
            for (Py_ssize_t i = 1; i < R; i++) {
                const T gap = t[i] - t[i - 1];
                const T d = EXP(-rate * (gap > 0 ? gap : 0));
                const T *prev = hg + (i - 1) * F, *xp = xg + (i - 1) * F;
                T *cur = hg + i * F;
                for (Py_ssize_t f = 0; f < F; f++) cur[f] = d * (prev[f] + xp[f]);
            }
        }
    }
}

/*
 * Its vector-Jacobian product. With lambda_i = gh_i + c_i the total adjoint of h_i and
 * c_i = d_{i+1} lambda_{i+1} (c_{R-1} = 0): gx_i = c_i; and s_i = sum_f lambda_{i,f} h_{i,f}
 * (= the adjoint of d_i times d_i) gives gt_i -= r s_i, gt_{i-1} += r s_i, gr -= gap_i s_i
 * (no time gradient where the gap was clamped at zero). gt accumulates over the groups.
 * work: F entries of scratch.
 */
static void FN(scan_backward)(Py_ssize_t B, Py_ssize_t G, Py_ssize_t R, Py_ssize_t F,
                              const T *times, const T *rates, const T *h, const T *gh, T *gx,
                              T *gt, T *grate, T *work) {
    for (Py_ssize_t b = 0; b < B; b++) {
        const T *t = times + b * R;
        T *gtb = gt + b * R;
        for (Py_ssize_t i = 0; i < R; i++) gtb[i] = 0;
        for (Py_ssize_t g = 0; g < G; g++) {
            const T rate = rates[b * G + g];
            const T *hg = h + (b * G + g) * R * F, *ghg = gh + (b * G + g) * R * F;
            T *gxg = gx + (b * G + g) * R * F;
            T *c = work;
            T gr = 0;
            for (Py_ssize_t f = 0; f < F; f++) c[f] = 0;
            for (Py_ssize_t i = R - 1; i >= 1; i--) {
                const T gap = t[i] - t[i - 1];
                const T d = EXP(-rate * (gap > 0 ? gap : 0));
                T s = 0;
                for (Py_ssize_t f = 0; f < F; f++) {
                    gxg[i * F + f] = c[f];
                    const T lam = ghg[i * F + f] + c[f];
                    s += lam * hg[i * F + f];
                    c[f] = d * lam;
                }
                if (gap >= 0) {
                    gtb[i] -= rate * s;
                    gtb[i - 1] += rate * s;
                    gr -= gap * s;
                }
            }
            for (Py_ssize_t f = 0; f < F; f++) gxg[f] = c[f];
            grate[b * G + g] = gr;
        }
    }
}

/*
 * The Gauss-Legendre rule of an interval of length dt: the first row k of the rule table whose
 * threshold is at least dt (the last row otherwise). Row k holds Q nodes on [0, 1] and weights
 * summing to one, zero-padded; the loops stop at the first zero weight.
 */
static Py_ssize_t FN(rule_of)(T dt, const T *thresholds, Py_ssize_t K) {
    Py_ssize_t k = 0;
    while (k < K - 1 && dt > thresholds[k]) k++;
    return k;
}

/*
 * The marked neurons of row r: with labels (int64, -1 = none) the one index labels[r] with
 * mark 1, else the entries of the dense mark m (D values, zeros skipped by the callers).
 */
#define ROW_MARKS(labels, marks, row, D, lo, hi, m)                       \
    do {                                                                  \
        if (labels) {                                                     \
            const int64_t lab_ = (labels)[row];                           \
            lo = lab_ < 0 ? 0 : (Py_ssize_t)lab_;                         \
            hi = lab_ < 0 ? 0 : (Py_ssize_t)lab_ + 1;                     \
            m = NULL;                                                     \
        } else {                                                          \
            lo = 0;                                                       \
            hi = (D);                                                     \
            m = (marks) + (row) * (D);                                    \
        }                                                                 \
    } while (0)

/*
 * Log-likelihood terms of SpikingPointProcess, forward only (no autograd): over the sorted
 * merged rows of each sequence (times (N, R); marks dense (N, R, D) or labels (N, R), int64,
 * -1 = no mark, the other pointer NULL), with traces h (L, D) that start at h_in (N, L, D) or
 * zero,
 *   mark_sum_d += m_{r,d} (log a + log sigma(b_d + sum_l h_{l,d}))       (m_{r,d} != 0 only)
 *   start = h + W m_r;  integral_d += a dt_r sum_q w_q sigma(b_d + sum_l start_{l,d} e^{-s_q r_l})
 *   h = start e^{-dt_r r_l}
 * with Gauss-Legendre nodes s_q = node_q dt_r on each interval [t_r, t_{r+1}), the rule of the
 * interval's length from a table of K rules (nodes and qweights (K, Q), thresholds (K,), see
 * rule_of). The last row's
 * start (the traces just after it) is written to h_out (N, L, D) when given: a long sequence
 * is scored in chunks that carry it. bias, weight, rates and a advance by their *_seq strides
 * per sequence (0: shared). work: (2 D + 1) L.
 */
static void FN(spiking_terms)(Py_ssize_t N, Py_ssize_t R, Py_ssize_t L, Py_ssize_t D,
                              Py_ssize_t K, Py_ssize_t Q, const T *times, const T *marks,
                              const int64_t *labels, const T *bias, Py_ssize_t bias_seq,
                              const T *weight, Py_ssize_t weight_seq, const T *rates,
                              Py_ssize_t rates_seq, const T *upper, Py_ssize_t upper_seq,
                              const T *rule_nodes, const T *rule_weights, const T *thresholds,
                              const T *h_in, T *h_out, T *mark_sum, T *integral, T *work,
                              double *sums) {
    T *h = work, *start = work + L * D, *e = work + 2 * L * D;
    /* the sums over rows in double whatever T (a float32 running sum of 1e5 terms loses ~1e-3) */
    double *ms = sums, *in = sums + D;
    for (Py_ssize_t n = 0; n < N; n++) {
        const T *t = times + n * R, *b = bias + n * bias_seq, *w = weight + n * weight_seq;
        const T *rate = rates + n * rates_seq;
        const T a = upper[n * upper_seq], log_a = LOG(a);
        for (Py_ssize_t d = 0; d < D; d++) ms[d] = in[d] = 0;
        for (Py_ssize_t k = 0; k < L * D; k++) start[k] = h[k] = h_in ? h_in[n * L * D + k] : 0;
        for (Py_ssize_t r = 0; r < R; r++) {
            Py_ssize_t lo, hi;
            const T *m;
            ROW_MARKS(labels, marks, n * R + r, D, lo, hi, m);
            for (Py_ssize_t k = 0; k < L * D; k++) start[k] = h[k];
            for (Py_ssize_t i = lo; i < hi; i++) {
                const T mi = m ? m[i] : 1;
                if (mi == 0) continue;
                /* the mark's own term, at the left limit */
                T u = b[i];
                for (Py_ssize_t l = 0; l < L; l++) u += h[l * D + i];
                ms[i] += mi * (log_a - FN(softplus)(-u));
                /* its jump of every trace: W[l, d, i] */
                for (Py_ssize_t l = 0; l < L; l++) {
                    const T *wl = w + l * D * D;
                    T *sl = start + l * D;
                    for (Py_ssize_t d = 0; d < D; d++) sl[d] += wl[d * D + i] * mi;
                }
            }
            if (r == R - 1) break;
            const T dt = t[r + 1] - t[r];
            const Py_ssize_t rule = FN(rule_of)(dt, thresholds, K);
            const T *nodes = rule_nodes + rule * Q, *qweights = rule_weights + rule * Q;
            for (Py_ssize_t q = 0; q < Q && qweights[q] != 0; q++) {
                for (Py_ssize_t l = 0; l < L; l++) e[l] = EXP(-nodes[q] * dt * rate[l]);
                const T scale = qweights[q] * a * dt;
                for (Py_ssize_t d = 0; d < D; d++) {
                    T u = b[d];
                    for (Py_ssize_t l = 0; l < L; l++) u += start[l * D + d] * e[l];
                    in[d] += scale / (1 + EXP(-u));
                }
            }
            for (Py_ssize_t l = 0; l < L; l++) {
                const T decay = EXP(-dt * rate[l]);
                for (Py_ssize_t d = 0; d < D; d++) h[l * D + d] = start[l * D + d] * decay;
            }
        }
        for (Py_ssize_t d = 0; d < D; d++) {
            mark_sum[n * D + d] = (T)ms[d];
            integral[n * D + d] = (T)in[d];
        }
        if (h_out)
            for (Py_ssize_t k = 0; k < L * D; k++) h_out[n * L * D + k] = start[k];
    }
}

/*
 * Vector-Jacobian product of spiking_terms (per sequence; weight gradients are written per
 * sequence, gw (N, L, D, D), and summed by the caller when the weights are shared). With gM,
 * gI the adjoints of the mark sums and integrals and g_out that of h_out (or NULL: zero), a
 * reverse sweep over the rows carries the adjoint of the traces: at row r the quadrature terms
 * and the recursion h_{r+1} = start_r E_r give the adjoint S of start_r, then
 * start_r = h_r + W m_r gives those of h_r, W and m_r (dense marks only: gm is NULL with
 * labels), and the mark term at u^-_r = b + sum_l h_r adds its own. The adjoint of h_in is
 * written to g_in when given. The rows' start values are recomputed by a forward pass into
 * work (R L D entries, plus 4 L D + 2 L).
 */
static void FN(spiking_terms_backward)(
    Py_ssize_t N, Py_ssize_t R, Py_ssize_t L, Py_ssize_t D, Py_ssize_t K, Py_ssize_t Q,
    const T *times, const T *marks, const int64_t *labels, const T *bias, Py_ssize_t bias_seq,
    const T *weight, Py_ssize_t weight_seq, const T *rates, Py_ssize_t rates_seq,
    const T *upper, Py_ssize_t upper_seq, const T *rule_nodes, const T *rule_weights,
    const T *thresholds, const T *h_in, const T *g_mark,
    const T *g_int, const T *g_out, T *gt, T *gm, T *gb, T *gw, T *gr, T *ga, T *g_in,
    T *work, double *sums) {
    T *starts = work, *hb = work + R * L * D, *sb = hb + L * D, *h = sb + L * D;
    T *e = h + L * D, *eb = e + L;
    /* the parameters' adjoints sum over rows: in double whatever T */
    double *gbd = sums, *gwd = sums + D, *grd = gwd + L * D * D;
    for (Py_ssize_t n = 0; n < N; n++) {
        const T *t = times + n * R, *b = bias + n * bias_seq, *w = weight + n * weight_seq;
        const T *rate = rates + n * rates_seq;
        const T *h0 = h_in ? h_in + n * L * D : NULL;
        const T a = upper[n * upper_seq], log_a = LOG(a);
        const T *gM = g_mark + n * D, *gI = g_int + n * D;
        T *gtn = gt + n * R, *gmn = gm ? gm + n * R * D : NULL, *gbn = gb + n * D;
        T *gwn = gw + n * L * D * D, *grn = gr + n * L;
        double gan = 0;
        for (Py_ssize_t k = 0; k < R; k++) gtn[k] = 0;
        if (gmn)
            for (Py_ssize_t k = 0; k < R * D; k++) gmn[k] = 0;
        for (Py_ssize_t k = 0; k < D; k++) gbd[k] = 0;
        for (Py_ssize_t k = 0; k < L * D * D; k++) gwd[k] = 0;
        for (Py_ssize_t k = 0; k < L; k++) grd[k] = 0;
        /* forward: the start value of every row */
        for (Py_ssize_t k = 0; k < L * D; k++) h[k] = h0 ? h0[k] : 0;
        for (Py_ssize_t r = 0; r < R; r++) {
            Py_ssize_t lo, hi;
            const T *m;
            ROW_MARKS(labels, marks, n * R + r, D, lo, hi, m);
            T *st = starts + r * L * D;
            for (Py_ssize_t k = 0; k < L * D; k++) st[k] = h[k];
            for (Py_ssize_t i = lo; i < hi; i++) {
                const T mi = m ? m[i] : 1;
                if (mi == 0) continue;
                for (Py_ssize_t l = 0; l < L; l++)
                    for (Py_ssize_t d = 0; d < D; d++) st[l * D + d] += w[(l * D + d) * D + i] * mi;
            }
            if (r < R - 1) {
                const T dt = t[r + 1] - t[r];
                for (Py_ssize_t l = 0; l < L; l++) {
                    const T decay = EXP(-dt * rate[l]);
                    for (Py_ssize_t d = 0; d < D; d++) h[l * D + d] = st[l * D + d] * decay;
                }
            }
        }
        /* reverse sweep; hb: adjoint of h_{r+1} (of h_in when R = 0) */
        for (Py_ssize_t k = 0; k < L * D; k++) hb[k] = (R == 0 && g_out) ? g_out[n * L * D + k] : 0;
        for (Py_ssize_t r = R - 1; r >= 0; r--) {
            Py_ssize_t lo, hi;
            const T *m;
            ROW_MARKS(labels, marks, n * R + r, D, lo, hi, m);
            const T *st = starts + r * L * D;
            for (Py_ssize_t k = 0; k < L * D; k++)
                sb[k] = (r == R - 1 && g_out) ? g_out[n * L * D + k] : 0;
            if (r < R - 1) {
                const T dt = t[r + 1] - t[r];
                T dtb = 0;
                for (Py_ssize_t l = 0; l < L; l++) { /* h_{r+1} = start_r E_r */
                    const T decay = EXP(-dt * rate[l]);
                    T eb_l = 0;
                    for (Py_ssize_t d = 0; d < D; d++) {
                        eb_l += hb[l * D + d] * st[l * D + d];
                        sb[l * D + d] += hb[l * D + d] * decay;
                    }
                    dtb -= eb_l * rate[l] * decay;
                    grd[l] -= eb_l * dt * decay;
                }
                const Py_ssize_t rule = FN(rule_of)(dt, thresholds, K);
                const T *nodes = rule_nodes + rule * Q, *qweights = rule_weights + rule * Q;
                for (Py_ssize_t q = 0; q < Q && qweights[q] != 0; q++) { /* the quadrature */
                    for (Py_ssize_t l = 0; l < L; l++) {
                        e[l] = EXP(-nodes[q] * dt * rate[l]);
                        eb[l] = 0;
                    }
                    for (Py_ssize_t d = 0; d < D; d++) {
                        if (gI[d] == 0) continue;
                        T u = b[d];
                        for (Py_ssize_t l = 0; l < L; l++) u += st[l * D + d] * e[l];
                        const T sig = 1 / (1 + EXP(-u));
                        gan += gI[d] * dt * qweights[q] * sig;
                        dtb += gI[d] * a * qweights[q] * sig;
                        const T ub = gI[d] * a * dt * qweights[q] * sig * (1 - sig);
                        gbd[d] += ub;
                        for (Py_ssize_t l = 0; l < L; l++) {
                            sb[l * D + d] += ub * e[l];
                            eb[l] += ub * st[l * D + d];
                        }
                    }
                    for (Py_ssize_t l = 0; l < L; l++) {
                        dtb -= eb[l] * nodes[q] * rate[l] * e[l];
                        grd[l] -= eb[l] * nodes[q] * dt * e[l];
                    }
                }
                gtn[r + 1] += dtb;
                gtn[r] -= dtb;
            }
            /* start_r = h_r + W m_r: hb becomes the adjoint of h_r */
            for (Py_ssize_t k = 0; k < L * D; k++) hb[k] = sb[k];
            if (gmn)
                for (Py_ssize_t i = 0; i < D; i++) {
                    T acc = 0;
                    for (Py_ssize_t l = 0; l < L; l++)
                        for (Py_ssize_t d = 0; d < D; d++) acc += sb[l * D + d] * w[(l * D + d) * D + i];
                    gmn[r * D + i] += acc;
                }
            for (Py_ssize_t i = lo; i < hi; i++) {
                const T mi = m ? m[i] : 1;
                if (mi == 0) continue;
                for (Py_ssize_t l = 0; l < L; l++)
                    for (Py_ssize_t d = 0; d < D; d++) gwd[(l * D + d) * D + i] += sb[l * D + d] * mi;
            }
            /* the mark term at the left limit u^- = b + sum_l h_r, h_r = start_{r-1} E_{r-1} */
            if (r > 0) {
                const T dtp = t[r] - t[r - 1];
                const T *sp = starts + (r - 1) * L * D;
                for (Py_ssize_t l = 0; l < L; l++) {
                    const T decay = EXP(-dtp * rate[l]);
                    for (Py_ssize_t d = 0; d < D; d++) h[l * D + d] = sp[l * D + d] * decay;
                }
            } else {
                for (Py_ssize_t k = 0; k < L * D; k++) h[k] = h0 ? h0[k] : 0;
            }
            /* dense marks: the mark term's derivative in every m_{r,d} (for gm) */
            const Py_ssize_t dlo = gmn ? 0 : lo, dhi = gmn ? D : hi;
            for (Py_ssize_t d = dlo; d < dhi; d++) {
                if (gM[d] == 0) continue;
                T u = b[d];
                for (Py_ssize_t l = 0; l < L; l++) u += h[l * D + d];
                if (gmn) gmn[r * D + d] += gM[d] * (log_a - FN(softplus)(-u));
                const T md = m ? m[d] : 1;
                if (md == 0) continue;
                const T ub = gM[d] * md / (1 + EXP(u)); /* d log sigma(u) / du = sigma(-u) */
                gbd[d] += ub;
                for (Py_ssize_t l = 0; l < L; l++) hb[l * D + d] += ub;
                gan += gM[d] * md / a;
            }
        }
        ga[n] = (T)gan;
        for (Py_ssize_t k = 0; k < D; k++) gbn[k] = (T)gbd[k];
        for (Py_ssize_t k = 0; k < L * D * D; k++) gwn[k] = (T)gwd[k];
        for (Py_ssize_t k = 0; k < L; k++) grn[k] = (T)grd[k];
        if (g_in)
            for (Py_ssize_t k = 0; k < L * D; k++) g_in[n * L * D + k] = hb[k];
    }
}

#undef ROW_MARKS

/*
 * Log-likelihood terms of a linear Hawkes process with exponential kernels and one decay beta
 * per sequence (HawkesProcess with a uniform decay), with their derivatives in the same pass
 * (forward mode: O(D) per event, nothing stored per event). Over the sorted events of each
 * sequence (times (N, K); labels (N, K), -1 = none) in the window [t0, t1], with the source
 * traces a_j(t) = sum_{m: j_m = j, t_m < t} e^{-beta (t - t_m)} and b_j = sum (t - t_m) e^{..}
 * (so that d a_j / d beta = -b_j), at an event k of neuron i:
 *   lambda = mu_i + beta sum_j alpha_ij a_j;   mark_sum_i += log lambda;
 *   j_mu_i += 1 / lambda;   j_alpha_ij += beta a_j / lambda;
 *   j_beta_i += sum_j alpha_ij (a_j - beta b_j) / lambda   (only with want_beta)
 * and then a_i += 1 (a simultaneous later event sees it, as in the PyTorch path). At the end,
 * s_j = sum_{k: j_k = j} (1 - e^{-beta (t1 - t_k)}) = count_j - a_j(t1) and
 * s_prime_j = sum_k (t1 - t_k) e^{-beta (t1 - t_k)} = b_j(t1). The
 * compensator is integral_i = mu_i (t1 - t0) + sum_j alpha_ij s_j, its derivatives t1 - t0,
 * s_j and sum_j alpha_ij s_prime_j.
 *
 * The traces are kept relative to a reference time r, A_j = sum_m e^{beta (t_m - r)} and
 * C_j = sum_m (r - t_m) e^{beta (t_m - r)}, so a_j(t) = E A_j and b_j(t) = E ((t - r) A_j + C_j)
 * with E = e^{-beta (t - r)}: an event then costs one dot product and one update of a row of
 * j_alpha (and one more dot product with want_beta), not a decay of all D traces. The
 * reference moves to the current time (an O(D) rescaling) when beta (t - r) exceeds RENORM,
 * so that A and C stay far from overflow. mu, alpha and beta advance by their *_seq strides
 * per sequence (0: shared). work: 2 D; sums: 4 D + D^2 doubles (the event sums, accumulated
 * in double also for float32).
 *
 * One sequence can be split in time into chunks that run in parallel (N = 1 only): a chunk
 * starts from the traces `init` (A then C, 2 D values, relative to the reference time ref0;
 * NULL: zero traces at t0), writes its final traces to `state_out` (A, C, then the reference
 * time; NULL: not written), and only the last chunk `finish`es (the terms at t1; the others
 * leave s = their counts, s_prime = 0 and integral = 0, to be summed). With terms = 0 the pass
 * only advances the traces (one exponential per event): the chunk's own contribution to the
 * traces that the later chunks start from.
 */
static void FN(hawkes_terms)(Py_ssize_t N, Py_ssize_t K, Py_ssize_t D, const T *times,
                             const int64_t *labels, const T *mu, Py_ssize_t mu_seq,
                             const T *alpha, Py_ssize_t alpha_seq, const T *beta,
                             Py_ssize_t beta_seq, double t0, double t1, int want_beta,
                             T *mark_sum, T *integral, T *j_mu, T *j_alpha, T *j_beta, T *s,
                             T *s_prime, const T *init, double ref0, T *state_out, int finish,
                             int terms, T *work, double *sums) {
    const T RENORM = sizeof(T) == sizeof(double) ? 200 : 30;
    T *A = work, *C = work + D;
    /* the sums over events in double whatever T (a float32 sum of 1e5 terms loses 1e-2) */
    double *ms_d = sums, *jm_d = sums + D, *jb_d = sums + 2 * D, *sn_d = sums + 3 * D,
           *ja_d = sums + 4 * D;
    for (Py_ssize_t n = 0; n < N; n++) {
        const T *t = times + n * K, *m = mu + n * mu_seq, *al = alpha + n * alpha_seq;
        const int64_t *lab = labels + n * K;
        const T bt = beta[n * beta_seq];
        T *ms = mark_sum + n * D, *in = integral + n * D, *jm = j_mu + n * D;
        T *ja = j_alpha + n * D * D, *jb = j_beta + n * D, *sn = s + n * D;
        T *sp = s_prime + n * D;
        for (Py_ssize_t k = 0; k < D; k++) {
            in[k] = sp[k] = 0;
            ms_d[k] = jm_d[k] = jb_d[k] = sn_d[k] = 0;
        }
        for (Py_ssize_t k = 0; k < D * D; k++) ja_d[k] = 0;
        for (Py_ssize_t k = 0; k < D; k++) {
            A[k] = init ? init[k] : 0;
            C[k] = init ? init[D + k] : 0;
        }
        T ref = (T)(init ? ref0 : t0);
        for (Py_ssize_t r = 0; r < K; r++) {
            const int64_t i = lab[r];
            if (i < 0) continue;
            T since = t[r] - ref;
            if (bt * since > RENORM) { /* move the reference to t[r] */
                const T e = EXP(-bt * since);
                for (Py_ssize_t j = 0; j < D; j++) {
                    C[j] = e * (C[j] + since * A[j]);
                    A[j] *= e;
                }
                ref = t[r];
                since = 0;
            }
            if (!terms) { /* the traces only */
                const T grow = EXP(bt * since);
                A[i] += grow;
                C[i] -= since * grow;
                continue;
            }
            const T E = EXP(-bt * since);
            const T *row = al + i * D;
            const T acc = FN(dot)(row, A, D);
            const T lam = m[i] + bt * E * acc, inv = 1 / lam;
            ms_d[i] += LOG(lam);
            jm_d[i] += inv;
            if (want_beta) {
                const T acc_c = FN(dot)(row, C, D);
                jb_d[i] += E * (acc - bt * (since * acc + acc_c)) * inv;
            }
            double *jrow = ja_d + i * D;
            const T scale = bt * E * inv;
            for (Py_ssize_t j = 0; j < D; j++) jrow[j] += scale * A[j];
            sn_d[i] += 1; /* the count: s_i = count_i - a_i(t1) below */
            const T grow = 1 / E; /* e^{beta (t - ref)} <= e^{RENORM} */
            A[i] += grow;
            C[i] -= since * grow;
        }
        if (state_out) {
            for (Py_ssize_t j = 0; j < D; j++) {
                state_out[j] = A[j];
                state_out[D + j] = C[j];
            }
            state_out[2 * D] = ref;
        }
        if (finish) {
            /* s_j = sum_k (1 - e^{-beta (t1 - t_k)}) = count_j - a_j(t1) and
               s_prime_j = sum_k (t1 - t_k) e^{-beta (t1 - t_k)} = b_j(t1), from the traces */
            const T end = (T)t1 - ref, E1 = EXP(-bt * end);
            for (Py_ssize_t j = 0; j < D; j++) {
                sp[j] = E1 * (end * A[j] + C[j]);
                sn_d[j] -= E1 * A[j];
            }
            for (Py_ssize_t i = 0; i < D; i++) {
                double acc = m[i] * (t1 - t0);
                for (Py_ssize_t j = 0; j < D; j++) acc += al[i * D + j] * sn_d[j];
                in[i] = (T)acc;
            }
        }
        for (Py_ssize_t k = 0; k < D; k++) {
            ms[k] = (T)ms_d[k];
            jm[k] = (T)jm_d[k];
            jb[k] = (T)jb_d[k];
            sn[k] = (T)sn_d[k];
        }
        for (Py_ssize_t k = 0; k < D * D; k++) ja[k] = (T)ja_d[k];
    }
}

/*
 * The problems of index-layout events (N, K, 2), rows (time, neuron index), for the checks of
 * pyro_spikes.spikes.validate_index_events, as INDEX_* bit flags (the same ones as the PyTorch
 * checks, so that both raise the same errors). Comparisons with NaN are false, as in PyTorch.
 */
static int FN(index_flags)(Py_ssize_t N, Py_ssize_t K, Py_ssize_t D, const T *events,
                           double duration) {
    const T dur = (T)duration, top = (T)D;
    int flags = 0;
    for (Py_ssize_t n = 0; n < N; n++) {
        const T *ev = events + 2 * n * K;
        T prev = -(T)INFINITY;
        for (Py_ssize_t r = 0; r < K; r++) {
            const T t = ev[2 * r], x = ev[2 * r + 1];
            if (!isfinite(t)) flags |= INDEX_NONFINITE_TIME;
            else if (t < 0 || t > dur) flags |= INDEX_OUTSIDE;
            if (t < prev) flags |= INDEX_UNSORTED;
            prev = t;
            if (!isfinite(x)) flags |= INDEX_NONFINITE_LABEL;
            else if (x < -1 || x >= top || x != (T)(int64_t)x) flags |= INDEX_BAD_LABEL;
            else if (x == -1 && t < dur) flags |= INDEX_EARLY_PADDING;
        }
    }
    return flags;
}

/*
 * One pass over index-layout events (N, K, 2): writes the int64 labels (-1 where the index is
 * not an integer in [-1, D); labels NULL: not written), sets *keep to the number of leading rows that hold every
 * sequence's last non-padding row (at least 1; the rows that trim_padding keeps) and returns
 * the problems found (index_flags, which runs only when the branch-free pass finds one).
 */
static int FN(index_scan)(Py_ssize_t N, Py_ssize_t K, Py_ssize_t D, const T *events,
                          double duration, int64_t *labels, Py_ssize_t *keep) {
    const T dur = (T)duration, top = (T)D;
    int ok = 1;
    Py_ssize_t last = 0;
    for (Py_ssize_t n = 0; n < N; n++) {
        const T *ev = events + 2 * n * K;
        int64_t *lab = labels ? labels + n * K : NULL;
        T prev = -(T)INFINITY;
        Py_ssize_t seq_last = 0;
        for (Py_ssize_t r = 0; r < K; r++) {
            const T t = ev[2 * r], x = ev[2 * r + 1];
            const int in_range = (x >= -1) & (x < top); /* false for NaN */
            const int64_t i = (int64_t)(in_range ? x : (T)-1);
            ok &= in_range & ((T)i == x) & (t >= prev) & (t >= 0) & (t <= dur) &
                  !((i == -1) & (t < dur));
            if (labels) lab[r] = i;
            prev = t;
            seq_last = (x < 0) & (t >= dur) ? seq_last : r + 1;
        }
        if (seq_last > last) last = seq_last;
    }
    *keep = last > 0 ? last : 1;
    return ok ? 0 : FN(index_flags)(N, K, D, events, duration);
}

#undef FN
#undef CAT
#undef CAT_
