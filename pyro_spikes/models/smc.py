"""
Sequential Monte Carlo in continuous time for the marginal likelihood :math:`p(J_O)` of the
observed neurons of a partially observed spiking network.
"""

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from pyro_spikes.distributions import kernels
from pyro_spikes.distributions.spiking import _gauss_legendre
from pyro_spikes.models.lookahead import anticausal_traces
from pyro_spikes.spikes import validate_events

try:  # the particle filter compiled for the CPU (built by ``pip install``; optional)
    from pyro_spikes import _smc as _compiled
except ImportError:
    _compiled = None
if _compiled is not None and getattr(_compiled, "VERSION", None) != 2:
    _compiled = None

__all__ = ["HiddenProposal", "SMCResult", "smc_log_marginal"]

# the compiled filter lowers the quadrature order on pieces much shorter than the integrand's
# time scale (see _smc.c: piece_order); tests switch it off to measure the difference
_ADAPTIVE_QUADRATURE = True


@dataclass
class HiddenProposal:
    """
    A proposal :math:`q(J_H)` for the hidden neurons :math:`h \\in \\mathcal H` of a network of
    :math:`D = D_O + D_H` neurons (observed first): the hidden neurons fire with intensity

    .. math::

        \\lambda^q_h(t) = a\\,\\sigma\\Big(c_h + \\sum_l \\sum_{d} V_{l,h,d}
            \\sum_{t' \\in J_d,\\, t' < t} e^{-(t-t')/\\tau_l}
            + \\sum_m \\sum_{o} A_{m,h,o} \\sum_{t' \\in J_o,\\, t' > t} e^{-(t'-t)/\\kappa_m}\\Big),

    the network's own form (bias :math:`c`, causal weights :math:`V` on the traces of every
    neuron, with the network's :math:`\\tau_l` and :math:`a`) plus an optional *anticausal*
    term: exponential traces of the observed spikes **after** :math:`t` with time constants
    :math:`\\kappa_m` and weights :math:`A`, so that the proposal can anticipate the observed
    spikes that a hidden spike causes.

    :param torch.Tensor bias: :math:`c`, shape ``(D_H,)``.
    :param torch.Tensor weight: :math:`V`, shape ``(L, D_H, D)``.
    :param torch.Tensor lookahead_weight: :math:`A`, shape ``(M, D_H, D_O)`` (optional).
    :param torch.Tensor lookahead_time_constants: :math:`\\kappa_m > 0`, shape ``(M,)``.
    """

    bias: torch.Tensor
    weight: torch.Tensor
    lookahead_weight: Optional[torch.Tensor] = None
    lookahead_time_constants: Optional[torch.Tensor] = None


@dataclass
class SMCResult:
    """
    Output of :func:`smc_log_marginal`, per sequence (shape ``(B,)`` each).

    :ivar log_marginal: :math:`\\log \\hat Z`, the log of an unbiased estimate of
        :math:`p(J_O)`.
    :ivar ess_min: smallest effective sample size of the normalised weights seen before any
        resampling step (a fraction of the particles: 1 is perfect, ``1 / P`` degenerate).
    :ivar ess_mean: mean of that effective sample size fraction over the segments.
    :ivar num_resampled: number of resampling steps.
    :ivar num_segments: number of segments (observed spikes plus grid points).
    """

    log_marginal: torch.Tensor
    ess_min: torch.Tensor
    ess_mean: torch.Tensor
    num_resampled: torch.Tensor
    num_segments: torch.Tensor


def _boundaries(observed, duration, step):
    """
    Per sequence, the sorted segment ends: every observed spike (label = its neuron) and a grid
    of spacing at most ``step`` ending at :math:`T` (label ``-1``); padding rows become empty
    segments at :math:`T`. Returns ``times (B, M)`` float64 and ``labels (B, M)`` long.
    """
    times = observed[..., 0].to(torch.float64)
    marks = observed[..., 1:]
    spike = marks.sum(-1) > 0
    labels = torch.where(spike, marks.argmax(-1), torch.full_like(spike, -1, dtype=torch.long))
    times = torch.where(spike, times, torch.full_like(times, duration))
    num_grid = max(int(math.ceil(duration / step - 1e-9)), 1)
    grid = torch.arange(1, num_grid + 1, dtype=torch.float64, device=times.device)
    grid = (grid * (duration / num_grid)).clamp(max=duration)
    grid[-1] = duration
    b = times.shape[0]
    times = torch.cat([times, grid.expand(b, num_grid)], -1)
    labels = torch.cat([labels, labels.new_full((b, num_grid), -1)], -1)
    times, order = torch.sort(times, dim=-1, stable=True)  # spikes before grid points at ties
    return times, labels.gather(-1, order)


def _lookahead_terms(times, labels, num_observed, weight, time_constants):
    """
    For every segment :math:`(s_j, e_j]`, :math:`G_{j,m,h} = \\sum_o A_{m,h,o} R_{j,m,o}` with
    :math:`R_{j,m,o} = \\sum_{t' \\in J_o, t' \\ge e_j} e^{-(t' - e_j)/\\kappa_m}` (the observed
    spikes from the segment's end on, :func:`~pyro_spikes.models.lookahead.anticausal_traces`):
    inside the segment the anticausal potential is
    :math:`\\sum_m e^{-(e_j - t)/\\kappa_m} G_{j,m,h}`. Returns ``(B, M, M_k, D_H)``.
    """
    onehot = F.one_hot(labels.clamp(min=0), num_observed).to(times) * (labels >= 0).unsqueeze(-1)
    r_all = anticausal_traces(times, onehot, time_constants)  # (B, Mk, M, D_O)
    return torch.einsum("bmjo,mho->bjmh", r_all, weight)


def _systematic_indices(log_w, resample):
    """Systematic resampling indices ``(B, P)``; identity where ``resample`` is False."""
    b, p = log_w.shape
    w = torch.softmax(log_w, -1)
    cum = w.cumsum(-1)
    cum[:, -1] = 1.0
    pos = (torch.rand(b, 1, dtype=w.dtype, device=w.device)
           + torch.arange(p, dtype=w.dtype, device=w.device)) / p
    idx = torch.searchsorted(cum, pos).clamp(max=p - 1)
    ident = torch.arange(p, device=w.device).expand(b, p)
    return torch.where(resample.unsqueeze(-1), idx, ident)


def smc_log_marginal(observed, bias, weight, time_constants, upper_bound, duration,
                     proposal=None, num_particles=256, ess_threshold=0.5, max_step=None,
                     quadrature_order=8, progress=False):
    """
    Sequential Monte Carlo (a particle filter) in continuous time for :math:`\\log p(J_O)`
    of the observed neurons of the spiking network of
    :class:`~pyro_spikes.distributions.SpikingPointProcess`, neurons ``0..D_O-1`` observed,
    the rest hidden.

    **Particles** are hidden histories; with exponential kernels a history enters the future
    only through the basis traces, so a particle is the ``(L, D)`` trace state. The window is
    cut at every observed spike and at a grid of spacing at most ``max_step`` into segments
    :math:`(s_j, e_j]`. In a segment every particle draws its hidden spikes from the proposal
    :math:`q` by exact thinning (candidates of rate :math:`a D_H`), and its weight is multiplied
    by the incremental importance weight

    .. math::

        w_j = \\frac{p_H(J_H \\cap (s_j, e_j] \\,\\|\\, \\cdot)}{q(J_H \\cap (s_j, e_j])}\\,
              \\lambda_{o_j}(e_j^-)^{[e_j \\in J_O]}
              \\exp\\Big(-\\int_{s_j}^{e_j} \\sum_{o} \\lambda_o(t)\\, dt\\Big),

    the observed neurons' likelihood over the segment (and, unless :math:`q` is the model's own
    hidden dynamics, the ratio of the hidden densities, both from their intensities and
    compensators). When the effective sample size :math:`(\\sum w)^2/\\sum w^2` of a sequence's
    particles falls below ``ess_threshold`` times :math:`P`, they are resampled (systematic
    resampling) and the mean weight is banked.

    **Bias.** :math:`\\hat Z = \\prod_k \\frac1P \\sum_p w^{(p)}_k` (over resampling epochs) is
    an unbiased estimate of :math:`p(J_O)` for any number of particles, with adaptive
    resampling too (Del Moral, 2004; Whiteley, Lee & Heine, 2016, "On the role of interaction in
    sequential Monte Carlo algorithms", Bernoulli): :math:`E[\\hat Z] = p(J_O)`. Its log is
    therefore biased low by Jensen's inequality, by about :math:`\\mathrm{Var}(\\hat Z/Z)/2`,
    and consistent: the bias and the variance of :math:`\\log \\hat Z` decay as :math:`1/P`.
    The only other error is the compensator quadrature (Gauss–Legendre of order
    ``quadrature_order`` on pieces no longer than ``max_step``, as in
    :class:`~pyro_spikes.distributions.SpikingPointProcess`: relative error below
    :math:`10^{-8}` at the defaults). ``ess_threshold=0`` never resamples: plain importance
    sampling with the same proposal, for comparison.

    Everything is vectorised over sequences and particles, and computed in float64 whatever the
    parameters' dtype; the loop runs over segments and, within a segment, over candidate slots.

    :param torch.Tensor observed: exact events of the observed neurons, ``(B, C, 1 + D_O)``.
    :param torch.Tensor bias: :math:`b`, ``(D,)``.
    :param torch.Tensor weight: :math:`W`, ``(L, D, D)``.
    :param torch.Tensor time_constants: :math:`\\tau_l`, ``(L,)``.
    :param upper_bound: :math:`a`.
    :param float duration: :math:`T`.
    :param HiddenProposal proposal: the proposal; ``None``: the model's own hidden dynamics
        driven by the observed spikes (Kajino's guide), for which the hidden densities cancel.
    :param int num_particles: :math:`P` per sequence.
    :param float ess_threshold: resample when ESS < ``ess_threshold * P`` (in ``[0, 1]``).
    :param float max_step: longest segment (default :math:`\\min(\\tau_l, \\kappa_m)`).
    :param int quadrature_order: Gauss–Legendre nodes per piece.
    :param bool progress: show a tqdm bar over segments.
    :rtype: SMCResult
    """
    dtype, device = bias.dtype, bias.device
    f64 = dict(dtype=torch.float64, device=device)
    bias = bias.detach().to(**f64)
    weight = weight.detach().to(**f64)
    tau = torch.as_tensor(time_constants).detach().to(**f64).reshape(-1)
    if torch.is_tensor(upper_bound) and upper_bound.numel() != 1:
        raise ValueError("upper_bound must be a single number (one network), got shape "
                         f"{tuple(upper_bound.shape)}")
    a = float(upper_bound)
    duration = float(duration)
    d = bias.shape[-1]
    num_basis = tau.numel()
    if weight.shape != (num_basis, d, d):
        raise ValueError(f"weight must have shape (L, D, D) = {(num_basis, d, d)}, "
                         f"got {tuple(weight.shape)}")
    if not isinstance(observed, torch.Tensor) or observed.dim() != 3:
        raise ValueError("observed must be a tensor of shape (num_sequences, capacity, 1 + D_O)")
    d_o = observed.shape[-1] - 1
    d_h = d - d_o
    if not 1 <= d_o < d:
        raise ValueError(f"observed has {d_o} neurons; the network has {d} (need 1 <= D_O < D)")
    validate_events(observed, duration, d_o, name="observed")
    if not (isinstance(num_particles, int) and num_particles >= 1):
        raise ValueError(f"num_particles must be a positive integer, got {num_particles!r}")
    if not 0.0 <= float(ess_threshold) <= 1.0:
        raise ValueError(f"ess_threshold must be in [0, 1], got {ess_threshold!r}")
    for name, x in (("bias", bias), ("weight", weight)):
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} must be finite")
    if not (math.isfinite(a) and a > 0):
        raise ValueError(f"upper_bound must be positive and finite, got {a}")
    if not bool((tau > 0).all() and torch.isfinite(tau).all()):
        raise ValueError(f"time_constants must be positive and finite, got {tau.tolist()}")

    prior = proposal is None
    look = None
    steps = [float(tau.min())]
    if not prior:
        if proposal.bias.numel() != d_h:
            raise ValueError(f"proposal.bias must have shape (D_H,) = ({d_h},), got "
                             f"{tuple(proposal.bias.shape)}")
        q_bias = proposal.bias.detach().to(**f64).reshape(d_h)
        q_weight = proposal.weight.detach().to(**f64)
        if q_weight.shape != (num_basis, d_h, d):
            raise ValueError(f"proposal.weight must have shape (L, D_H, D) = "
                             f"{(num_basis, d_h, d)}, got {tuple(q_weight.shape)}")
        if proposal.lookahead_weight is not None:
            kappa = torch.as_tensor(proposal.lookahead_time_constants).detach().to(**f64)
            kappa = kappa.reshape(-1)
            look_w = proposal.lookahead_weight.detach().to(**f64)
            if look_w.shape != (kappa.numel(), d_h, d_o):
                raise ValueError(f"proposal.lookahead_weight must have shape (M, D_H, D_O) = "
                                 f"{(kappa.numel(), d_h, d_o)}, got {tuple(look_w.shape)}")
            if not bool((kappa > 0).all() and torch.isfinite(kappa).all()):
                raise ValueError("proposal.lookahead_time_constants must be positive and finite")
            steps.append(float(kappa.min()))
            look = (look_w, kappa)
    step = min(steps) if max_step is None else float(max_step)
    if not step > 0:
        raise ValueError(f"max_step must be positive, got {max_step}")

    b, p = observed.shape[0], num_particles
    ends, labels = _boundaries(observed.to(device), duration, step)
    num_seg = ends.shape[-1]
    starts = torch.cat([ends.new_zeros(b, 1), ends[:, :-1]], -1)
    look_g = None
    if look is not None:
        look_g = _lookahead_terms(ends, labels, d_o, *look)  # (B, M, Mk, D_H)
        look_rates = 1.0 / look[1]
    nodes, qweights = _gauss_legendre(int(quadrature_order), bias)  # float64, bias's device
    rates = 1.0 / tau
    if _compiled is not None and kernels.compiled_for(bias) and num_basis <= 64:
        return _smc_compiled(ends, labels, look_g, bias, weight, rates, a, d_o, nodes, qweights,
                             None if prior else (q_bias, q_weight),
                             None if look is None else look_rates, num_particles,
                             float(ess_threshold), dtype, device, _ADAPTIVE_QUADRATURE)
    jumps = weight.permute(2, 0, 1)  # (D, L, D): the traces' jump at a spike of each neuron
    q_jumps = None if prior else q_weight.permute(2, 0, 1)  # (D, L, D_H)
    b_o, b_h = bias[:d_o], bias[d_o:]
    log_a = math.log(a)

    state = bias.new_zeros(b, p, num_basis, d)  # V_{l,d}: the weighted traces, all neurons
    q_state = None if prior else bias.new_zeros(b, p, num_basis, d_h)
    log_w = bias.new_zeros(b, p)
    log_z = bias.new_zeros(b)
    ess_min = bias.new_ones(b)
    ess_sum = bias.new_zeros(b)
    resampled = torch.zeros(b, dtype=torch.long, device=device)
    real_segments = (ends > starts) | (labels >= 0)

    def integrals(states, q_states, t0, dt, g_end, e):
        """
        The compensator terms of pieces ``[t0, t0 + dt]`` (``(B, P, K)``) from the traces at
        their starts (``(B, P, K, L, D)``): observed neurons, and for a proposal other than the
        prior also the model's minus the proposal's hidden intensities. Sum over pieces.
        """
        x = dt.unsqueeze(-1) * nodes  # (B, P, K, Q)
        dec = torch.exp(-x.unsqueeze(-1) * rates)  # (B, P, K, Q, L)
        cols = d_o if prior else d
        u = torch.matmul(dec, states[..., :cols])  # (B, P, K, Q, cols)
        cost = torch.sigmoid(u[..., :d_o] + b_o).sum(-1)
        if not prior:
            u_q = torch.matmul(dec, q_states) + q_bias
            if g_end is not None:
                # anticausal share: sum_m exp(-(e - t)/kappa_m) G_m at t = t0 + x
                back = torch.exp(-(e.unsqueeze(-1).unsqueeze(-1) - t0.unsqueeze(-1) - x)
                                 .unsqueeze(-1) * look_rates)  # (B, P, K, Q, Mk)
                u_q = u_q + torch.matmul(back, g_end.unsqueeze(2))
            cost = cost + torch.sigmoid(u[..., d_o:] + b_h).sum(-1) - torch.sigmoid(u_q).sum(-1)
        return a * (dt * torch.matmul(cost, qweights)).sum(-1)

    bar = tqdm(total=num_seg, desc="SMC segments", disable=not progress, leave=False)
    for j in range(num_seg):
        s = starts[:, j].unsqueeze(-1).expand(b, p)
        e = ends[:, j].unsqueeze(-1).expand(b, p)
        width = e - s
        g_end = None if look_g is None else look_g[:, j].unsqueeze(1)  # (B, 1, Mk, D_H)
        counts = torch.poisson(width * (a * d_h))
        k_max = int(counts.max()) if counts.numel() else 0
        slots = torch.arange(k_max, device=device)
        valid = slots < counts.unsqueeze(-1)  # (B, P, K)
        u01 = torch.where(valid, torch.rand(b, p, k_max, **f64), torch.ones(b, p, k_max, **f64))
        cand = s.unsqueeze(-1) + width.unsqueeze(-1) * u01.sort(-1).values  # (B, P, K)
        piece_start = torch.cat([s.unsqueeze(-1), cand], -1)  # (B, P, K + 1)
        piece_len = torch.diff(piece_start, dim=-1, append=e.unsqueeze(-1)).clamp(min=0)
        decay = torch.exp(-piece_len.unsqueeze(-1) * rates).unsqueeze(-1)  # (B, P, K+1, L, 1)
        pick = torch.rand(b, p, k_max, **f64) * d_h
        label = pick.floor().long().clamp(max=d_h - 1)
        frac = pick - label
        states, q_states = [state], [q_state]
        for k in range(k_max):
            state = state * decay[:, :, k]
            u_h = state[..., d_o:].sum(-2) + b_h  # (B, P, D_H)
            if prior:
                u_prop = u_h
            else:
                q_state = q_state * decay[:, :, k]
                u_prop = q_state.sum(-2) + q_bias
                if g_end is not None:
                    back = torch.exp(-(e - cand[..., k]).unsqueeze(-1) * look_rates)  # (B, P, Mk)
                    u_prop = u_prop + torch.matmul(back.unsqueeze(-2), g_end).squeeze(-2)
            lab_k = label[..., k]
            u_lab = u_prop.gather(-1, lab_k.unsqueeze(-1)).squeeze(-1)
            accept = valid[..., k] & (frac[..., k] < torch.sigmoid(u_lab))
            if bool(accept.any()):
                if not prior:
                    u_mod = u_h.gather(-1, lab_k.unsqueeze(-1)).squeeze(-1)
                    log_w = log_w + torch.where(accept, F.logsigmoid(u_mod) - F.logsigmoid(u_lab),
                                                torch.zeros_like(u_lab))
                mask = accept.to(state.dtype).unsqueeze(-1).unsqueeze(-1)
                neuron = lab_k + d_o
                state = state + mask * jumps[neuron]
                if not prior:
                    q_state = q_state + mask * q_jumps[neuron]
            states.append(state)
            q_states.append(q_state)
        log_w = log_w - integrals(
            torch.stack(states, 2), None if prior else torch.stack(q_states, 2), piece_start,
            piece_len, g_end, e)
        state = state * decay[:, :, k_max]
        if not prior:
            q_state = q_state * decay[:, :, k_max]
        lab = labels[:, j]
        is_spike = lab >= 0
        if bool(is_spike.any()):
            o = lab.clamp(min=0)
            u_o = state[..., :d_o].sum(-2) + b_o  # (B, P, D_O)
            u_obs = u_o.gather(-1, o.view(b, 1, 1).expand(b, p, 1)).squeeze(-1)
            log_w = log_w + torch.where(is_spike.unsqueeze(-1), log_a + F.logsigmoid(u_obs),
                                        torch.zeros_like(u_obs))
            mask = is_spike.to(state.dtype).view(b, 1, 1, 1)
            state = state + mask * jumps[o].unsqueeze(1)
            if not prior:
                q_state = q_state + mask * q_jumps[o].unsqueeze(1)
        # effective sample size and adaptive resampling
        norm = torch.logsumexp(log_w, -1)
        ess = torch.exp(2 * norm - torch.logsumexp(2 * log_w, -1)) / p
        real = real_segments[:, j]
        ess_min = torch.where(real, torch.minimum(ess_min, ess), ess_min)
        ess_sum = ess_sum + torch.where(real, ess, torch.zeros_like(ess))
        resample = real & (ess < float(ess_threshold)) & (j < num_seg - 1)
        if bool(resample.any()):
            idx = _systematic_indices(log_w, resample)
            state = state.gather(1, idx.view(b, p, 1, 1).expand(state.shape))
            if not prior:
                q_state = q_state.gather(1, idx.view(b, p, 1, 1).expand(q_state.shape))
            log_z = log_z + torch.where(resample, norm - math.log(p), torch.zeros_like(norm))
            log_w = torch.where(resample.unsqueeze(-1), torch.zeros_like(log_w), log_w)
            resampled = resampled + resample.long()
        bar.update()
    bar.close()
    log_z = log_z + torch.logsumexp(log_w, -1) - math.log(p)
    num_real = real_segments.sum(-1)
    return SMCResult(
        log_marginal=log_z.to(dtype),
        ess_min=ess_min.to(dtype),
        ess_mean=(ess_sum / num_real.clamp(min=1)).to(dtype),
        num_resampled=resampled,
        num_segments=num_real,
    )


def _smc_compiled(ends, labels, look_g, bias, weight, rates, a, d_o, nodes, qweights, proposal,
                  look_rates, num_particles, threshold, dtype, device, adaptive=True):
    """The same particle filter in ``pyro_spikes._smc`` (float64 CPU buffers, sizes checked
    here), each sequence with its own xoshiro256** stream seeded from torch's generator."""
    b, m = ends.shape
    num_basis, d = weight.shape[0], weight.shape[-1]
    d_h = d - d_o

    def buf(x, dtype=torch.float64):
        return x.detach().to(dtype=dtype, device="cpu").contiguous()

    ends, labels = buf(ends), buf(labels, torch.int64)
    bias, weight, rates = buf(bias), buf(weight), buf(rates)
    rules = [_gauss_legendre(n, nodes) for n in (2, 3, 4)] + [(nodes, qweights)]
    nodes = buf(torch.cat([r[0] for r in rules]))
    qweights = buf(torch.cat([r[1] for r in rules]))
    empty = torch.zeros(1, dtype=torch.float64)
    q_bias, q_weight = (empty, empty) if proposal is None else (buf(proposal[0]),
                                                                buf(proposal[1]))
    if look_g is None:
        look_g, look_rates, num_look = empty, empty, 0
    else:
        look_g, look_rates = buf(look_g), buf(look_rates)
        num_look = look_rates.numel()
    expected = {"ends": (ends, (b, m)), "labels": (labels, (b, m)), "bias": (bias, (d,)),
                "weight": (weight, (num_basis, d, d)), "rates": (rates, (num_basis,))}
    if proposal is not None:
        expected["proposal.bias"] = (q_bias, (d_h,))
        expected["proposal.weight"] = (q_weight, (num_basis, d_h, d))
    if num_look:
        expected["lookahead"] = (look_g, (b, m, num_look, d_h))
    for name, (x, shape) in expected.items():
        if tuple(x.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(x.shape)}")
    if bool((labels >= d_o).any()) or bool((labels < -1).any()):
        raise ValueError("observed labels out of range")
    seeds = torch.randint(0, 2 ** 62, (b,), dtype=torch.int64)
    out = torch.zeros(3, b, dtype=torch.float64)
    counts = torch.zeros(2, b, dtype=torch.int64)
    look_batched = num_look > 0

    def run(lo, hi):
        def at(x, batched=True):
            return x[lo:].data_ptr() if batched else x.data_ptr()

        _compiled.smc(
            hi - lo, m, num_basis, d, d_o, nodes.numel() - 9, num_look, int(num_particles),
            int(proposal is None), int(num_look > 0), int(adaptive), float(a), float(threshold),
            at(ends), at(labels), at(look_g, look_batched), at(seeds),
            bias.data_ptr(), weight.data_ptr(), rates.data_ptr(), nodes.data_ptr(),
            qweights.data_ptr(), q_bias.data_ptr(), q_weight.data_ptr(), look_rates.data_ptr(),
            at(out[0]), at(out[1]), at(out[2]), at(counts[0]), at(counts[1]),
        )

    # sequences are independent (each has its own random stream): split them over torch's
    # intra-op threads like the other compiled loops (the extension releases the GIL); the
    # result does not depend on the split
    kernels._for_sequences(b, b * m * int(num_particles), run)
    return SMCResult(
        log_marginal=out[0].to(dtype=dtype, device=device),
        ess_min=out[1].to(dtype=dtype, device=device),
        ess_mean=out[2].to(dtype=dtype, device=device),
        num_resampled=counts[0].to(device),
        num_segments=counts[1].to(device),
    )
