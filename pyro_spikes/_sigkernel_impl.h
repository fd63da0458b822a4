/*
 * Signature-kernel Goursat PDE solver of _kernels.c (section "signature kernel" there),
 * included with
 *   T      the type (double: float32 inputs are solved in double too)
 *   SUF    the suffix of the function names (f64).
 *
 * Explicit second-order scheme on the grid of refined cells (Salvi et al., 2021): with
 * z = <dx_p, dy_q> / r^2 on the r x r refined cells of coarse cell (p, q), r = 2^lam,
 *   k[i+1][j+1] = (k[i+1][j] + k[i][j+1]) A - k[i][j] B,  A = 1 + z/2 + z^2/12,
 *   B = 1 - z^2/12,  k[0][.] = k[.][0] = 1.
 * Layouts (contiguous): dx (n, M, d), dy (m, N, d) path increments (linear static kernel), or
 * z (n, m, M, N) the coarse increment products (any static kernel: its second differences on
 * the vertices); out and gout (n, m); gdx (n, M, d), gdy (m, N, d), gz (n, m, M, N).
 *
 * The pairs (a, b) are swept in groups of SKW lanes (one x-path a, SKW consecutive y-paths b):
 * the lanes are independent recurrences, so the inner lane loops vectorise and hide the
 * latency of the row recursion. The forward keeps one grid row per group.
 *
 * The backward is the exact discrete adjoint of the scheme (the discrete counterpart of the
 * adjoint Goursat PDE of Salvi et al.), swept in reverse from the corner,
 *   l[i][j] = l[i][j+1] A[i-1][j] + l[i+1][j] A[i][j-1] - l[i+1][j+1] B[i][j],  l[Mr][Nr] = g,
 * with dK/dA[i][j] = l[i+1][j+1] (k[i+1][j] + k[i][j+1]) and dK/dB[i][j] = -l[i+1][j+1] k[i][j].
 * The grid k is not stored: a first forward sweep keeps every s-th row (s ~ sqrt(M r)), and
 * each block of s rows is recomputed from its checkpoint (bit-identical to the forward) just
 * before the reverse sweep crosses it. Memory per group O(sqrt(M r) N r), nothing kept between
 * forward and backward; cost about two forward sweeps plus the adjoint.
 */
#define SK_CAT_(a, b) a##_##b
#define SK_CAT(a, b) SK_CAT_(a, b)
#define SKFN(name) SK_CAT(name, SUF)

#ifndef SKW
#define SKW 8
#endif

typedef struct {
    Py_ssize_t m, M, N, d;
    int lam;
    T inv_r2;
    const T *dx, *dy, *z; /* linear mode: dx, dy; z mode: z */
    Py_ssize_t a;
    Py_ssize_t b[SKW];
} SKFN(sk_group);

/* coarse row p of the lanes' increment products and scheme coefficients, (N, SKW) each */
static void SKFN(sk_coarse)(const SKFN(sk_group) *g, Py_ssize_t p, T *zr, T *Ar, T *Br) {
    const Py_ssize_t N = g->N, d = g->d;
    if (g->z) {
        for (int w = 0; w < SKW; w++) {
            const T *src = g->z + ((g->a * g->m + g->b[w]) * g->M + p) * N;
            for (Py_ssize_t q = 0; q < N; q++) zr[q * SKW + w] = src[q] * g->inv_r2;
        }
    } else {
        const T *xp = g->dx + (g->a * g->M + p) * d;
        for (int w = 0; w < SKW; w++) {
            const T *yb = g->dy + g->b[w] * N * d;
            for (Py_ssize_t q = 0; q < N; q++) {
                T s = 0;
                for (Py_ssize_t k = 0; k < d; k++) s += xp[k] * yb[q * d + k];
                zr[q * SKW + w] = s * g->inv_r2;
            }
        }
    }
    for (Py_ssize_t q = 0; q < N * SKW; q++) {
        const T z = zr[q];
        Ar[q] = 1 + z * (T)0.5 + z * z * (T)(1.0 / 12);
        Br[q] = 1 - z * z * (T)(1.0 / 12);
    }
}

/* next grid row from row `old` (nw may alias old); rows are (Nr + 1, SKW) */
static void SKFN(sk_advance)(const T *Ar, const T *Br, Py_ssize_t Nr, int lam, const T *old,
                             T *nw) {
    T left[SKW], o0[SKW];
    for (int w = 0; w < SKW; w++) {
        left[w] = 1;
        o0[w] = old[w];
        nw[w] = 1;
    }
    for (Py_ssize_t j = 0; j < Nr; j++) {
        const T *a = Ar + (j >> lam) * SKW, *b = Br + (j >> lam) * SKW;
        const T *o = old + (j + 1) * SKW;
        T *n = nw + (j + 1) * SKW;
        for (int w = 0; w < SKW; w++) {
            const T o1 = o[w];
            const T v = (left[w] + o1) * a[w] - o0[w] * b[w];
            n[w] = v;
            left[w] = v;
            o0[w] = o1;
        }
    }
}

static void SKFN(sk_lanes)(SKFN(sk_group) *g, Py_ssize_t a, Py_ssize_t b0) {
    g->a = a;
    for (int w = 0; w < SKW; w++) g->b[w] = b0 + w < g->m ? b0 + w : g->m - 1;
}

/* out[a, b] = k[Mr][Nr] for a in [a0, a1), all b */
static int SKFN(sigkernel_forward)(Py_ssize_t a0, Py_ssize_t a1, Py_ssize_t m, Py_ssize_t M,
                                   Py_ssize_t N, Py_ssize_t d, int lam, const T *dx,
                                   const T *dy, const T *z, T *out) {
    const Py_ssize_t Nr = N << lam, r = (Py_ssize_t)1 << lam;
    T *row = (T *)malloc(sizeof(T) * (size_t)((Nr + 1) * SKW + 3 * N * SKW));
    if (!row) return -1;
    T *zr = row + (Nr + 1) * SKW, *Ar = zr + N * SKW, *Br = Ar + N * SKW;
    SKFN(sk_group) g = {m, M, N, d, lam, (T)(1.0 / ((double)r * (double)r)), dx, dy, z, 0, {0}};
    for (Py_ssize_t a = a0; a < a1; a++) {
        for (Py_ssize_t b0 = 0; b0 < m; b0 += SKW) {
            SKFN(sk_lanes)(&g, a, b0);
            for (Py_ssize_t q = 0; q < (Nr + 1) * SKW; q++) row[q] = 1;
            for (Py_ssize_t p = 0; p < M; p++) {
                SKFN(sk_coarse)(&g, p, zr, Ar, Br);
                for (Py_ssize_t s = 0; s < r; s++) SKFN(sk_advance)(Ar, Br, Nr, lam, row, row);
            }
            for (int w = 0; w < SKW && b0 + w < m; w++) out[a * m + b0 + w] = row[Nr * SKW + w];
        }
    }
    free(row);
    return 0;
}

/* coarse-row cache of two slots (the reverse sweep needs cell rows i and i - 1) */
typedef struct {
    Py_ssize_t p[2];
    T *z[2], *A[2], *B[2];
} SKFN(sk_cache);

static int SKFN(sk_get)(SKFN(sk_cache) *c, const SKFN(sk_group) *g, Py_ssize_t p) {
    if (c->p[0] == p) return 0;
    if (c->p[1] == p) return 1;
    /* evict the slot not holding p + 1 (the row just above, still in use) */
    const int s = c->p[0] == p + 1 ? 1 : 0;
    SKFN(sk_coarse)(g, p, c->z[s], c->A[s], c->B[s]);
    c->p[s] = p;
    return s;
}

/*
 * Vector-Jacobian product for a in [a0, a1), all b: linear mode accumulates into gdx (rows
 * a0..a1) and gdy (all m; callers running several a-ranges at once give each its own gdy);
 * z mode writes gz (rows a0..a1).
 */
static int SKFN(sigkernel_backward)(Py_ssize_t a0, Py_ssize_t a1, Py_ssize_t m, Py_ssize_t M,
                                    Py_ssize_t N, Py_ssize_t d, int lam, const T *dx,
                                    const T *dy, const T *z, const T *gout, T *gdx, T *gdy,
                                    T *gz) {
    const Py_ssize_t Nr = N << lam, Mr = M << lam, r = (Py_ssize_t)1 << lam;
    const Py_ssize_t W1 = (Nr + 1) * SKW; /* one grid row of the lanes */
    Py_ssize_t s = 1;
    while (s * s < Mr) s++;
    const Py_ssize_t nb = (Mr + s - 1) / s;
    const size_t total = (size_t)(nb * W1 + (s + 1) * W1 + 2 * W1 + 7 * N * SKW +
                                  (z ? 0 : M * d + SKW * N * d));
    T *buf = (T *)malloc(sizeof(T) * total);
    if (!buf) return -1;
    T *ckpt = buf, *block = ckpt + nb * W1, *lamn = block + (s + 1) * W1, *lamc = lamn + W1;
    T *cz = lamc + W1;
    SKFN(sk_cache) cache;
    for (int t = 0; t < 2; t++) {
        cache.z[t] = cz + (3 * t) * N * SKW;
        cache.A[t] = cz + (3 * t + 1) * N * SKW;
        cache.B[t] = cz + (3 * t + 2) * N * SKW;
    }
    T *gzc = cz + 6 * N * SKW;
    T *gdx_loc = gzc + N * SKW, *gdy_loc = gdx_loc + M * d;
    SKFN(sk_group) g = {m, M, N, d, lam, (T)(1.0 / ((double)r * (double)r)), dx, dy, z, 0, {0}};
    const T sixth = (T)(1.0 / 6);
    for (Py_ssize_t a = a0; a < a1; a++) {
        for (Py_ssize_t b0 = 0; b0 < m; b0 += SKW) {
            SKFN(sk_lanes)(&g, a, b0);
            cache.p[0] = cache.p[1] = -1;
            /* forward sweep, keeping rows 0, s, 2s, ... */
            T *row = block;
            for (Py_ssize_t q = 0; q < W1; q++) row[q] = 1;
            for (Py_ssize_t i = 0; i < Mr; i++) {
                if (i % s == 0) memcpy(ckpt + (i / s) * W1, row, sizeof(T) * (size_t)W1);
                const int c = SKFN(sk_get)(&cache, &g, i >> lam);
                SKFN(sk_advance)(cache.A[c], cache.B[c], Nr, lam, row, row);
            }
            /* adjoint of the top row Mr: l[Mr][j] = l[Mr][j+1] A[Mr-1][j] */
            {
                const int c = SKFN(sk_get)(&cache, &g, (Mr - 1) >> lam);
                const T *Am = cache.A[c];
                for (int w = 0; w < SKW; w++) {
                    lamn[Nr * SKW + w] = b0 + w < m ? gout[a * m + b0 + w] : 0;
                    lamn[w] = 0;
                }
                for (Py_ssize_t j = Nr - 1; j >= 1; j--)
                    for (int w = 0; w < SKW; w++)
                        lamn[j * SKW + w] = lamn[(j + 1) * SKW + w] * Am[(j >> lam) * SKW + w];
            }
            memset(gzc, 0, sizeof(T) * (size_t)(N * SKW));
            if (!z) memset(gdx_loc, 0, sizeof(T) * (size_t)(M * d + SKW * N * d));
            for (Py_ssize_t cb = nb - 1; cb >= 0; cb--) {
                const Py_ssize_t i0 = cb * s, i1 = i0 + s < Mr ? i0 + s : Mr;
                memcpy(block, ckpt + cb * W1, sizeof(T) * (size_t)W1);
                for (Py_ssize_t i = i0; i < i1 - 1; i++) {
                    const int c = SKFN(sk_get)(&cache, &g, i >> lam);
                    SKFN(sk_advance)(cache.A[c], cache.B[c], Nr, lam, block + (i - i0) * W1,
                                     block + (i - i0 + 1) * W1);
                }
                for (Py_ssize_t i = i1 - 1; i >= i0; i--) {
                    /* row i + 1 of the grid: in the block, or (i + 1 = i1) recomputed */
                    const T *kc = block + (i - i0) * W1;
                    T *kn = block + (i - i0 + 1) * W1;
                    const int ci = SKFN(sk_get)(&cache, &g, i >> lam);
                    if (i == i1 - 1)
                        SKFN(sk_advance)(cache.A[ci], cache.B[ci], Nr, lam, kc, kn);
                    const T *Zi = cache.z[ci], *Ai = cache.A[ci], *Bi = cache.B[ci];
                    const T *Ab = NULL;
                    if (i >= 1) {
                        const int cm = SKFN(sk_get)(&cache, &g, (i - 1) >> lam);
                        Ab = cache.A[cm];
                    }
                    /* cell gradients of row i; adjoint row i (for i >= 1) */
                    if (Ab) {
                        for (int w = 0; w < SKW; w++)
                            lamc[Nr * SKW + w] =
                                lamn[Nr * SKW + w] * Ai[((Nr - 1) >> lam) * SKW + w];
                    }
                    for (Py_ssize_t j = Nr - 1; j >= 0; j--) {
                        const Py_ssize_t q = (j >> lam) * SKW;
                        const T *ln = lamn + j * SKW, *kcj = kc + j * SKW, *knj = kn + j * SKW;
                        T *gq = gzc + q;
                        for (int w = 0; w < SKW; w++) {
                            const T mu = ln[SKW + w];
                            const T zz = Zi[q + w];
                            gq[w] += mu * ((knj[w] + kcj[SKW + w]) * ((T)0.5 + zz * sixth) +
                                           kcj[w] * zz * sixth);
                        }
                        if (Ab && j >= 1) {
                            const Py_ssize_t qm = ((j - 1) >> lam) * SKW;
                            T *lc = lamc + j * SKW;
                            for (int w = 0; w < SKW; w++)
                                lc[w] = lc[SKW + w] * Ab[q + w] + ln[w] * Ai[qm + w] -
                                        ln[SKW + w] * Bi[q + w];
                        }
                    }
                    if (Ab) {
                        T *tmp = lamn;
                        lamn = lamc;
                        lamc = tmp;
                    }
                    if ((i & (r - 1)) == 0) { /* coarse row p = i / r complete */
                        const Py_ssize_t p = i >> lam;
                        if (z) {
                            for (int w = 0; w < SKW && b0 + w < m; w++) {
                                T *dst = gz + ((a * m + b0 + w) * M + p) * N;
                                for (Py_ssize_t qq = 0; qq < N; qq++)
                                    dst[qq] = gzc[qq * SKW + w] * g.inv_r2;
                            }
                        } else {
                            const T *xp = dx + (a * M + p) * d;
                            T *gx = gdx_loc + p * d;
                            for (int w = 0; w < SKW; w++) {
                                const T *yb = dy + g.b[w] * N * d;
                                T *gy = gdy_loc + w * N * d;
                                for (Py_ssize_t qq = 0; qq < N; qq++) {
                                    const T gv = gzc[qq * SKW + w] * g.inv_r2;
                                    for (Py_ssize_t k = 0; k < d; k++) {
                                        gx[k] += gv * yb[qq * d + k];
                                        gy[qq * d + k] += gv * xp[k];
                                    }
                                }
                            }
                        }
                        memset(gzc, 0, sizeof(T) * (size_t)(N * SKW));
                    }
                }
            }
            if (!z) {
                for (Py_ssize_t q = 0; q < M * d; q++) gdx[a * M * d + q] += gdx_loc[q];
                for (int w = 0; w < SKW && b0 + w < m; w++) {
                    T *dst = gdy + (b0 + w) * N * d;
                    const T *src = gdy_loc + w * N * d;
                    for (Py_ssize_t q = 0; q < N * d; q++) dst[q] += src[q];
                }
            }
        }
    }
    free(buf);
    return 0;
}

#undef SKFN
#undef SK_CAT
#undef SK_CAT_
