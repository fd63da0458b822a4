/*
 * One time step of the smooth-gate LIF network (pyro_spikes/nn/smooth_gate.py, neuron="lif",
 * gate_width > 0), elementwise over batch x neurons, and its vector-Jacobian product; section
 * "smooth gate" of _kernels.c, included once per type with T (double, float) and SUF (f64,
 * f32). With r = (u - theta - k P) / Delta, k = max(floor((u - theta) / P), 0), rc = clamp(r),
 *   G(u) = k + Phi(rc),  Phi = 10 r^3 - 15 r^4 + 6 r^5,  phi = Phi' = 30 r^2 (1 - r)^2,
 *   u' = u + dt ((I - u + P G(u)) / tau_m + c phi(rc)),
 *   s' = decay s + (G(u') - G(u)) / tau_s.
 * Outputs u', s', G(u'); the backward recomputes G and r from u and u'.
 */
#define SG_CAT_(a, b) a##_##b
#define SG_CAT(a, b) SG_CAT_(a, b)
#define SGFN(name) SG_CAT(name, SUF)

typedef struct {
    T theta, period, inv_width, inv_tau_m, inv_tau_s, drive, dt, decay;
} SGFN(sg_consts);

/* G(u), and phi(rc) (the derivative of Phi; dG/du = phi / Delta) and phi'(rc) */
static inline T SGFN(sg_gate)(const SGFN(sg_consts) *c, T u, T *phi, T *dphi) {
    const T x = (u - c->theta) / c->period;
    /* max(floor(x), 0) without a libm call: truncation is the floor for x >= 0 (and x is
       already an integer beyond 2^52, where the cast could overflow) */
    const T k = x > 0 ? (x < (T)4e15 ? (T)(int64_t)x : x) : 0;
    T r = (u - c->theta - k * c->period) * c->inv_width;
    if (r < 0) r = 0;
    if (r > 1) r = 1;
    const T q = 1 - r;
    *phi = 30 * r * r * q * q;
    *dphi = 60 * r * q * (1 - 2 * r);
    return k + r * r * r * (10 + r * (-15 + 6 * r));
}

static void SGFN(sg_step)(Py_ssize_t n, const SGFN(sg_consts) *c, const T *u, const T *s,
                          const T *current, T *u_out, T *s_out, T *G_out) {
    for (Py_ssize_t e = 0; e < n; e++) {
        T phi, dphi, phi1, dphi1;
        const T G = SGFN(sg_gate)(c, u[e], &phi, &dphi);
        const T un = u[e] + c->dt * ((current[e] - u[e] + c->period * G) * c->inv_tau_m +
                                     c->drive * phi);
        const T Gn = SGFN(sg_gate)(c, un, &phi1, &dphi1);
        u_out[e] = un;
        s_out[e] = c->decay * s[e] + (Gn - G) * c->inv_tau_s;
        G_out[e] = Gn;
    }
}

static void SGFN(sg_step_backward)(Py_ssize_t n, const SGFN(sg_consts) *c, const T *u,
                                   const T *u_new, const T *gu_new, const T *gs_new,
                                   const T *gG_new, T *gu, T *gs, T *gcurrent) {
    for (Py_ssize_t e = 0; e < n; e++) {
        T phi, dphi, phi1, dphi1;
        (void)SGFN(sg_gate)(c, u[e], &phi, &dphi);
        (void)SGFN(sg_gate)(c, u_new[e], &phi1, &dphi1);
        /* gu_new, gG_new may be NULL (no gradient: zero) */
        const T gsn = gs_new[e] * c->inv_tau_s; /* the gradient of G(u') - G(u) */
        const T gun = (gu_new ? gu_new[e] : 0) + ((gG_new ? gG_new[e] : 0) + gsn) * phi1 *
                                                      c->inv_width;
        const T Gu = phi * c->inv_width;
        const T dudu = 1 + c->dt * ((c->period * Gu - 1) * c->inv_tau_m +
                                    c->drive * dphi * c->inv_width);
        gu[e] = gun * dudu - gsn * Gu;
        gs[e] = c->decay * gs_new[e];
        gcurrent[e] = gun * c->dt * c->inv_tau_m;
    }
}

#undef SGFN
#undef SG_CAT
#undef SG_CAT_
