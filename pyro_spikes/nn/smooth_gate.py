"""
Smooth-gate spiking network with exact gradients.

Implements the differentiable spiking network of

    D. Huh and T. J. Sejnowski, "Gradient Descent for Spiking Neural Networks",
    NeurIPS 2018 (arXiv:1706.04698).

Each neuron :math:`i` has a phase-like state :math:`u_i` and a synaptic current :math:`s_i`.
The non-differentiable threshold of a spiking synapse, :math:`\\tau_s \\dot s = -s +
\\sum_k \\delta(t - t_k)`, is replaced by a *gate* :math:`g \\ge 0` of finite width
:math:`\\Delta` (the *active zone*) that multiplies the rate of change of the state:

.. math::

    \\tau_s \\dot s_i = -s_i + g(u_i)\\, \\dot u_i .

Since :math:`g(u)\\dot u = \\frac{d}{dt} G(u)` with :math:`G` the running integral of the gate
(a smooth staircase that rises by one across every active zone), a full passage through an
active zone delivers exactly one unit of charge, however fast it happens; an excursion that
enters the zone and leaves it the way it came delivers a graded, transient current. The whole
network is an ODE, so back-propagation through its (fixed-step) solution gives the exact gradient
of the simulated loss. As :math:`\\Delta \\to 0`, :math:`g(u)\\dot u \\to \\sum_k \\delta(t - t_k)`
and the network becomes an ordinary spiking network (:meth:`SmoothGateSNN.hard_gate`).

The gate used here is the :math:`C^1` polynomial bump
:math:`g(u) = \\Delta^{-1} \\phi(r)`, :math:`\\phi(r) = 30 r^2 (1 - r)^2` on :math:`r \\in [0, 1]`
(the relative position in the zone), with running integral
:math:`\\Phi(r) = 10 r^3 - 15 r^4 + 6 r^5` (the paper's figures use a box gate; any non-negative
gate with unit integral gives the same :math:`\\Delta \\to 0` limit).

The current into neuron :math:`i` is

.. math::

    I_i(t) = \\sum_j W^{\\rm in}_{ij} x_j(t) + \\sum_j W^{\\rm rec}_{ij} s_j(t) + b_i ,

and the readout is linear in the synaptic currents,
:math:`o(t) = W^{\\rm out} s(t) + b^{\\rm out}`.

Two neuron models are available:

* ``neuron="qif"`` (the paper's choice): the quadratic integrate-and-fire neuron
  :math:`\\tau_m \\dot V = V^2 + I` in its theta form, :math:`V = \\tan(\\pi u)`,

  .. math::

      2\\pi\\tau_m \\dot u = (1 - \\cos 2\\pi u) + (1 + \\cos 2\\pi u)\\, I ,

  which spikes when :math:`u` crosses a half-integer (:math:`V \\to \\pm\\infty`), so the reset is
  built into the dynamics. Active zones are :math:`[k + \\tfrac12 - \\tfrac\\Delta2,
  k + \\tfrac12 + \\tfrac\\Delta2]`.

* ``neuron="lif"``: the leaky integrate-and-fire neuron :math:`\\tau_m \\dot V = -V + I` with
  threshold :math:`\\vartheta` and reset :math:`V_r`, made continuous by a *gate-driven reset*.
  :math:`u` is an unwrapped voltage and the membrane potential is

  .. math::

      V(u) = u - P\\, G(u), \\qquad P = \\vartheta - V_r + \\Delta ,

  with active zones :math:`[\\vartheta + kP, \\vartheta + kP + \\Delta]`, :math:`k \\ge 0`: across a
  zone the membrane potential is carried smoothly from :math:`\\vartheta` down to :math:`V_r` while
  the synapse receives its unit of charge. The state obeys

  .. math::

      \\dot u = \\tau_m^{-1}\\bigl(-V(u) + I\\bigr) + c\\, \\Delta\\, g(u),

  where the spike drive :math:`c` (default :math:`5 (\\vartheta - V_r) / \\tau_m`) carries the
  state through a zone in a time of order :math:`\\Delta / c`. As :math:`\\Delta \\to 0` this is the
  LIF with instantaneous reset by subtraction. (A neuron whose net input turns strongly negative
  while it is inside a zone can stop there: a smooth "partial spike".)

**Time stepping.** A fixed step :math:`dt`, looping over time steps only (vectorised over batch
and neurons); the current :math:`I_n` is computed from :math:`s_n` and held over the step.

* ``qif``: the membrane step is *exact* for the held current: the Riccati equation
  :math:`\\tau_m \\dot V = V^2 + I` is linear in homogeneous coordinates, so the step is a
  Moebius map of :math:`V = \\tan \\pi u` (see ``_qif_step``). It is stable for any
  current and any :math:`dt` (several spikes per step are counted correctly).
* ``lif``: explicit Euler, :math:`u_{n+1} = u_n + dt\\, \\dot u(u_n, I_n)`. The gated reset is
  stiff inside a zone (rates up to about :math:`c\\,\\phi'/\\Delta`): use
  :math:`dt \\le 0.2\\, \\Delta / c` (a :class:`RuntimeWarning` says so otherwise) for accurate
  trajectories and gradients, or ``gate_width=0`` (hard gate). Very narrow gates with a coarser
  step, where most steps jump over a zone, still converge to the LIF (tested), but only the
  hard-gate limit is meant there.

The synaptic current uses exponential Euler with the *exact* gate charge of the step,
:math:`s_{n+1} = e^{-dt/\\tau_s} s_n + (G(u_{n+1}) - G(u_n)) / \\tau_s`, so a spike delivers
exactly unit charge even when a narrow zone is crossed within one step. ``outputs[:, n]`` is the
readout at time :math:`(n + 1)\\, dt` and the input ``inputs[:, n]`` is held over
:math:`[n\\, dt, (n + 1)\\, dt)`.

On the CPU (float32/float64, with ``pyro_spikes._kernels`` built and
:func:`~pyro_spikes.distributions.kernels.compiled_loops` on) the LIF recurrence with
``gate_width > 0`` runs as one autograd function: the elementwise step is one compiled pass
each way (the same arithmetic as the PyTorch step; its backward is the hand-written
vector-Jacobian product, swept in reverse), and the recurrent-weight gradient is one matrix
product after the sweep. It has no second derivatives (run inside ``compiled_loops(False)`` for
those); elsewhere (``qif``, the hard gate, other devices) the step runs as PyTorch operations.

Spike times (for rasters and plots) are the times at which :math:`u` crosses the middle of an
active zone upwards (where :math:`G = k + \\tfrac12`), linearly interpolated within a step.
"""

import copy
import math
import numbers
import warnings
from typing import NamedTuple

import torch
from pyro.nn import PyroModule
from torch import nn

from pyro_spikes.distributions import kernels as _kernels

__all__ = ["SmoothGateSNN", "SmoothGateTrajectory", "crossings_to_events", "gate_integral"]

_NEURONS = ("qif", "lif")


def _smoothstep(r):
    """:math:`\\Phi(r) = 10 r^3 - 15 r^4 + 6 r^5` on ``[0, 1]``, constant outside."""
    r = r.clamp(0.0, 1.0)
    return r * r * r * (10.0 + r * (-15.0 + 6.0 * r))


def _bump(r):
    """:math:`\\phi(r) = \\Phi'(r) = 30 r^2 (1 - r)^2` on ``[0, 1]``, zero outside."""
    r = r.clamp(0.0, 1.0)
    return 30.0 * r * r * (1.0 - r) ** 2


def gate_integral(u, gate_width, start, period, lower=False):
    """
    Running integral :math:`G(u)` of a periodic gate: zones ``[start + k * period,
    start + k * period + gate_width]``; :math:`G` rises by one across each zone.

    ``gate_width=0`` gives the Heaviside staircase (the hard-gate limit). If ``lower``,
    zones with ``k < 0`` are absent (``G = 0`` below ``start``); otherwise :math:`G` is periodic
    in the sense :math:`G(u + P) = G(u) + 1`.

    :returns: ``(G, r)`` where ``r`` is the relative position in the current zone (``None`` for a
        hard gate; negative below the first zone if ``lower``).
    """
    x = (u - start) / period
    k = torch.floor(x).detach()
    if gate_width == 0:
        # with lower, k <= -1 below start: clamping it there gives G = 0
        G = (k.clamp(min=-1.0) if lower else k) + 1.0
        r = None
    else:
        if lower:  # below start, position relative to the first zone: r < 0, so Phi(r) = 0
            k = k.clamp(min=0.0)
        r = (u - start - k * period) / gate_width
        G = k + _smoothstep(r)
    return G, r


class SmoothGateTrajectory(NamedTuple):
    """
    Trajectories of a :class:`SmoothGateSNN` run, each of shape ``(batch, steps, N)``;
    index ``n`` is time :math:`(n + 1)\\, dt`.

    :ivar voltage: membrane potential :math:`V` (``lif``) or phase :math:`u` (``qif``).
    :ivar current: synaptic currents :math:`s`.
    :ivar gate: running gate integral :math:`G(u)` (a smooth spike count).
    :ivar raster: number of spikes (upward crossings of an active zone's midpoint) in each step.
    :ivar state: the state :math:`u`, shape ``(batch, steps + 1, N)`` including the initial one.
    :ivar dt: the step size.
    :ivar spike_level: :math:`u` at the midpoint of the first active zone.
    :ivar period: distance between active zones in :math:`u`.
    :ivar lower: whether zones below the first are absent (``lif``).
    """

    voltage: torch.Tensor
    current: torch.Tensor
    gate: torch.Tensor
    raster: torch.Tensor
    state: torch.Tensor
    dt: float
    spike_level: float
    period: float
    lower: bool

    @property
    def duration(self):
        return self.voltage.shape[1] * self.dt

    def events(self, capacity=None):
        """Spikes in the library's ``events`` layout, shape ``(batch, capacity, 1 + N)``."""
        return crossings_to_events(self.state, self.dt, self.spike_level, self.period,
                                   lower=self.lower, capacity=capacity)


def _levels(u, spike_level, period, lower):
    """Index of the last zone midpoint at or below ``u`` (``-1`` below the first for ``lower``)."""
    lev = torch.floor((u - spike_level) / period)
    return lev.clamp(min=-1.0) if lower else lev


def crossings_to_events(u, dt, spike_level, period, lower=False, capacity=None):
    """
    Spike events from a state trajectory (vectorised equivalent of
    :func:`~pyro_spikes.spikes.pack_spikes`).

    A spike is an upward crossing of a zone midpoint :math:`u^* = u_0^* + kP` (``spike_level``
    :math:`u_0^*`, ``period`` :math:`P`; ``k >= 0`` only if ``lower``); its time is linearly
    interpolated within the step. Downward crossings are ignored.

    :param torch.Tensor u: shape ``(batch, steps + 1, N)``; ``u[:, n]`` at time :math:`n\\, dt`.
    :param float dt: step size.
    :param int capacity: number of rows (default: the largest spike count in the batch); a
        :class:`ValueError` names ``capacity`` if it is too small.
    :returns: tensor ``(batch, capacity, 1 + N)``: sorted spike times with one-hot marks,
        padded with time :math:`T` and zero marks.
    """
    if not isinstance(u, torch.Tensor) or u.dim() != 3 or u.shape[1] < 2:
        raise ValueError(f"u must be a tensor of shape (batch, steps + 1, N), got "
                         f"{tuple(getattr(u, 'shape', ()))}")
    u = u.detach()
    if not bool(torch.isfinite(u).all()):
        raise ValueError("u contains NaN or infinite entries")
    B, S1, N = u.shape
    T = (S1 - 1) * dt
    lev = _levels(u, spike_level, period, lower)
    count = (lev[:, 1:] - lev[:, :-1]).clamp(min=0).long()  # (B, S, N)
    b, n, i = count.nonzero(as_tuple=True)
    c = count[b, n, i]
    rep = torch.repeat_interleave(torch.arange(c.numel(), device=u.device), c)
    first = torch.cumsum(c, 0) - c
    j = torch.arange(rep.numel(), device=u.device) - first[rep]  # index of a spike in its step
    b, n, i = b[rep], n[rep], i[rep]
    target = spike_level + (lev[b, n, i] + 1.0 + j.to(u.dtype)) * period
    u0, u1 = u[b, n, i], u[b, n + 1, i]
    frac = ((target - u0) / (u1 - u0)).clamp(0.0, 1.0)
    t = ((n.to(u.dtype) + frac) * dt).clamp(0.0, T)
    counts = torch.bincount(b, minlength=B)
    max_count = int(counts.max()) if counts.numel() else 0
    if capacity is None:
        capacity = max(max_count, 1)
    elif max_count > capacity:
        raise ValueError(f"capacity={capacity} is too small: a spike train has {max_count} spikes")
    out = torch.zeros(B, capacity, 1 + N, dtype=u.dtype, device=u.device)
    out[..., 0] = T
    if t.numel():
        order = torch.argsort(b.to(u.dtype) * (2.0 * T + 1.0) + t, stable=True)
        b, i, t = b[order], i[order], t[order]
        start = torch.cumsum(counts, 0) - counts
        row = torch.arange(t.numel(), device=u.device) - start[b]
        out[b, row, 0] = t
        out[b, row, 1 + i] = 1.0
    return out


def _riccati_cs(z):
    """
    ``(C, Sc)`` with :math:`C = \\cos\\sqrt z`, :math:`Sc = \\sin\\sqrt z / \\sqrt z` for
    :math:`z \\ge 0` and :math:`(1, \\tanh\\sqrt{-z} / \\sqrt{-z})` (both divided by
    :math:`\\cosh\\sqrt{-z}`, which leaves a Moebius map unchanged) for :math:`z < 0`; Taylor
    series near zero so that gradients stay finite.
    """
    small = z.abs() < 1e-2
    zs = torch.where(small, z, torch.zeros_like(z))
    C_series = 1 - zs / 2 + zs * zs / 24 - zs ** 3 / 720
    Sc_series = 1 - zs / 6 + zs * zs / 120 - zs ** 3 / 5040
    C_neg_series = 1 / C_series.clamp(min=0.5)  # cosh(w) / cosh(w) with the same scaling
    w = torch.sqrt(torch.where(small, torch.ones_like(z), z.abs()))
    C_big = torch.where(z > 0, torch.cos(w), torch.ones_like(w))
    Sc_big = torch.where(z > 0, torch.sin(w) / w, torch.tanh(w) / w)
    # for small z < 0 divide by cosh(w) = C_series(z) as well, for continuity at |z| = 1e-2
    C = torch.where(small, torch.where(z > 0, C_series, torch.ones_like(z)), C_big)
    Sc = torch.where(small, torch.where(z > 0, Sc_series, Sc_series * C_neg_series), Sc_big)
    return C, Sc


def _qif_step(u, current, h):
    """
    Exact step of the theta-form QIF neuron over a normalised time ``h = dt / tau_m`` with the
    current held constant.

    With :math:`V = \\tan(\\pi u)`, the Riccati equation :math:`dV / d\\tilde t = V^2 + I`
    is linear in homogeneous coordinates :math:`V = p / q`: :math:`p' = I q`, :math:`q' = -p`,
    whose flow :math:`\\begin{pmatrix} C & I h\\,Sc \\\\ -h\\,Sc & C \\end{pmatrix}` (with
    :math:`C, Sc` from :func:`_riccati_cs` at :math:`z = I h^2`) acts on
    :math:`(p, q) = (\\sin \\pi u, \\cos \\pi u)`. The angle :math:`\\pi u` of
    :math:`(q, p)` is lifted continuously: full periods :math:`\\pi / \\sqrt I` (one
    spike each) are counted separately, and the rest of the step turns it by less than
    :math:`\\pi`. Unconditionally stable, for any current.
    """
    I = current
    a = torch.sqrt(I.clamp(min=1e-12))
    n_full = torch.where(I > 0, torch.floor(a * h / math.pi), torch.zeros_like(I)).detach()
    h_rest = h - n_full * math.pi / a  # the remaining time, less than one period
    C, Sc = _riccati_cs(I * h_rest * h_rest)
    theta = math.pi * u
    p, q = torch.sin(theta), torch.cos(theta)
    p_new = C * p + I * h_rest * Sc * q
    q_new = C * q - h_rest * Sc * p
    delta = torch.atan2(p_new, q_new) - theta
    delta = delta - 2 * math.pi * torch.round(delta / (2 * math.pi)).detach()
    return u + delta / math.pi + n_full


def _fused_lif_module(like):
    """The compiled extension if it runs the fused LIF step for tensors like ``like``."""
    module = _kernels._compiled
    if getattr(module, "SMOOTH_GATE_VERSION", None) != 1 or not _kernels.compiled_for(like):
        return None
    return module


class _FusedLifLoop(torch.autograd.Function):
    """
    The smooth-gate LIF recurrence ``current_n = drive_n + s_n W^T``,
    ``(u_{n+1}, s_{n+1}, G(u_{n+1})) = step(u_n, s_n, current_n)`` over all steps, with the step
    as one compiled elementwise pass each way (the same arithmetic as the PyTorch step,
    :meth:`SmoothGateSNN._step` and the gate) and a hand-written reverse sweep: no autograd
    node per step, and the recurrent-weight gradient :math:`\\sum_n g_n^T s_n` as one matrix
    product after the sweep. Inputs: ``drive`` ``(steps, batch, N)``, ``W_rec``, ``u0``, ``s0``;
    outputs ``(steps, batch, N)`` each: states, synaptic currents, gate integrals.
    """

    @staticmethod
    def forward(ctx, drive, W_rec, u0, s0, consts, module):
        steps, batch, N = drive.shape
        U = drive.new_empty(steps + 1, batch, N)
        S = drive.new_empty(steps + 1, batch, N)
        G = drive.new_empty(steps, batch, N)
        U[0], S[0] = u0, s0
        current = drive.new_empty(batch, N)
        W_t, is_double = W_rec.T, int(drive.dtype == torch.float64)
        for n in range(steps):
            torch.addmm(drive[n], S[n], W_t, out=current)
            module.smooth_gate_lif_step(is_double, 0, batch * N, consts, U[n].data_ptr(),
                                        S[n].data_ptr(), current.data_ptr(), U[n + 1].data_ptr(),
                                        S[n + 1].data_ptr(), G[n].data_ptr(), 0, 0)
        ctx.save_for_backward(W_rec, U, S)
        ctx.consts, ctx.module = consts, module
        ctx.set_materialize_grads(False)  # unused outputs: no zero tensors in the backward
        return U[1:], S[1:], G  # views: an in-place change of one fails the backward

    @staticmethod
    def backward(ctx, gU, gS, gG):
        if torch.is_grad_enabled():
            raise RuntimeError("the fused smooth-gate loop has no second derivatives; run the "
                               "network inside pyro_spikes.distributions.kernels."
                               "compiled_loops(False) for higher derivatives")
        W_rec, U, S = ctx.saved_tensors
        steps, batch, N = U.shape[0] - 1, U.shape[1], U.shape[2]
        is_double = int(U.dtype == torch.float64)
        g_current = U.new_empty(steps, batch, N)
        gu, gs = torch.zeros_like(U[0]), torch.zeros_like(U[0])  # of u_{n+1}, s_{n+1}
        gu_prev, gs_prev = torch.empty_like(gu), torch.empty_like(gs)
        gU, gS, gG = (g.contiguous() if g is not None else None for g in (gU, gS, gG))
        for n in reversed(range(steps)):
            if gU is not None:
                gu.add_(gU[n])
            if gS is not None:
                gs.add_(gS[n])
            ctx.module.smooth_gate_lif_step(
                is_double, 1, batch * N, ctx.consts, U[n].data_ptr(), U[n + 1].data_ptr(),
                gu.data_ptr(), gs.data_ptr(), gG[n].data_ptr() if gG is not None else 0,
                gu_prev.data_ptr(), gs_prev.data_ptr(), g_current[n].data_ptr())
            gs_prev.addmm_(g_current[n], W_rec)  # current_n = drive_n + s_n W^T
            gu, gu_prev = gu_prev, gu
            gs, gs_prev = gs_prev, gs
        g_W = g_current.reshape(-1, N).T @ S[:-1].reshape(-1, N)
        return g_current, g_W, gu, gs, None, None


def _check_positive(name, value, allow_zero=False):
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    ok = value >= 0 if allow_zero else value > 0
    if not (math.isfinite(value) and ok):
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name} must be {kind} and finite, got {value}")
    return value


class SmoothGateSNN(PyroModule):
    """
    Recurrent smooth-gate spiking network (Huh & Sejnowski, NeurIPS 2018); see the module
    docstring for the equations and the time stepping.

    Parameters (``nn.Parameter``; replace any of them by a
    :class:`~pyro.nn.PyroSample` to give it a prior):

    * ``input_weight`` :math:`W^{\\rm in}`, shape ``(N, I)``;
    * ``recurrent_weight`` :math:`W^{\\rm rec}`, shape ``(N, N)``;
    * ``bias`` :math:`b`, shape ``(N,)``;
    * ``readout_weight`` :math:`W^{\\rm out}`, shape ``(O, N)``;
    * ``readout_bias`` :math:`b^{\\rm out}`, shape ``(O,)``.

    :param int input_size: :math:`I`.
    :param int hidden_size: number of neurons :math:`N`.
    :param int output_size: :math:`O`.
    :param float gate_width: :math:`\\Delta`; ``0`` is the hard (Heaviside) gate. For ``qif`` in
        phase units, ``0 <= gate_width < 1``; for ``lif`` in voltage units.
    :param str neuron: ``"qif"`` (default, as in the paper) or ``"lif"``.
    :param float tau_mem: membrane time constant :math:`\\tau_m`.
    :param float tau_syn: synaptic time constant :math:`\\tau_s`.
    :param float threshold: :math:`\\vartheta` (``lif`` only).
    :param float reset: :math:`V_r < \\vartheta` (``lif`` only).
    :param float spike_drive: :math:`c` (``lif`` only); default :math:`5 (\\vartheta - V_r) /
        \\tau_m`.
    :param float input_scale: initialisation scale, ``input_weight ~ N(0, input_scale^2 / I)``.
    :param float recurrent_scale: initialisation scale,
        ``recurrent_weight ~ N(0, recurrent_scale^2 / N)``.
    :param float bias_init: initial bias, ``bias = bias_init``.
    """

    def __init__(
        self,
        input_size,
        hidden_size,
        output_size,
        gate_width=0.1,
        neuron="qif",
        tau_mem=10.0,
        tau_syn=10.0,
        threshold=1.0,
        reset=0.0,
        spike_drive=None,
        input_scale=1.0,
        recurrent_scale=1.0,
        bias_init=None,
    ):
        super().__init__()
        for name, val in [("input_size", input_size), ("hidden_size", hidden_size),
                          ("output_size", output_size)]:
            if not isinstance(val, numbers.Integral) or isinstance(val, bool) or val < 1:
                raise ValueError(f"{name} must be a positive integer, got {val!r}")
        if neuron not in _NEURONS:
            raise ValueError(f"neuron must be one of {_NEURONS}, got {neuron!r}")
        self.input_size, self.hidden_size, self.output_size = input_size, hidden_size, output_size
        self.neuron = neuron
        self.tau_mem = _check_positive("tau_mem", tau_mem)
        self.tau_syn = _check_positive("tau_syn", tau_syn)
        if not (isinstance(threshold, numbers.Real) and isinstance(reset, numbers.Real)
                and math.isfinite(threshold) and math.isfinite(reset) and reset < threshold):
            raise ValueError(f"reset must be finite and below threshold, got reset={reset!r}, "
                             f"threshold={threshold!r}")
        self.threshold, self.reset = float(threshold), float(reset)
        if spike_drive is None:
            spike_drive = 5.0 * (self.threshold - self.reset) / self.tau_mem
        self.spike_drive = _check_positive("spike_drive", spike_drive)
        self.gate_width = self._check_gate_width(gate_width)
        if bias_init is None:
            bias_init = -0.1 if neuron == "qif" else 0.0
        input_scale = _check_positive("input_scale", input_scale, allow_zero=True)
        recurrent_scale = _check_positive("recurrent_scale", recurrent_scale, allow_zero=True)
        self.input_weight = nn.Parameter(
            torch.randn(hidden_size, input_size) * input_scale / math.sqrt(input_size))
        self.recurrent_weight = nn.Parameter(
            torch.randn(hidden_size, hidden_size) * recurrent_scale / math.sqrt(hidden_size))
        self.bias = nn.Parameter(torch.full((hidden_size,), float(bias_init)))
        self.readout_weight = nn.Parameter(
            torch.randn(output_size, hidden_size) / math.sqrt(hidden_size))
        self.readout_bias = nn.Parameter(torch.zeros(output_size))

    # ------------------------------------------------------------------ helpers
    def _check_gate_width(self, gate_width):
        gate_width = _check_positive("gate_width", gate_width, allow_zero=True)
        if self.neuron == "qif" and gate_width >= 1.0:
            raise ValueError(
                f"gate_width must be in [0, 1) for neuron='qif' (phase units), got {gate_width}")
        return gate_width

    def with_gate_width(self, gate_width):
        """A shallow copy that shares all parameters but uses another ``gate_width``."""
        new = copy.copy(self)
        new.gate_width = self._check_gate_width(gate_width)
        return new

    def hard_gate(self):
        """The :math:`\\Delta \\to 0` limit: a copy sharing the parameters with a Heaviside gate.

        It is an ordinary spiking network (QIF or LIF with reset); its gradients with respect to
        the parameters are zero almost everywhere except through the readout.
        """
        return self.with_gate_width(0.0)

    @property
    def _period(self):
        if self.neuron == "qif":
            return 1.0
        return self.threshold - self.reset + self.gate_width

    def _spike_geometry(self):
        """``(spike_level, period, lower)``: midpoint of the first zone, zone spacing, and
        whether zones below it are absent."""
        if self.neuron == "qif":
            return 0.5, 1.0, False
        return self.threshold + 0.5 * self.gate_width, self._period, True

    def _gate(self, u, gate_width):
        """Running gate integral ``G(u)`` and relative zone position ``r``."""
        if self.neuron == "qif":
            return gate_integral(u, gate_width, 0.5 - 0.5 * gate_width, 1.0)
        return gate_integral(u, gate_width, self.threshold, self._period, lower=True)

    def voltage(self, u, G=None):
        """Membrane potential from the state: :math:`V(u)` (``lif``) or the phase (``qif``)."""
        if self.neuron == "qif":
            return u
        if G is None:
            G = self._gate(u, self.gate_width)[0]
        return u - self._period * G

    def _step(self, u, G, r, current, dt):
        """One step of the state: exact QIF flow (``qif``) or explicit Euler (``lif``)."""
        if self.neuron == "qif":
            return _qif_step(u, current, dt / self.tau_mem)
        return u + dt * self._du(u, G, r, current)

    def _du(self, u, G, r, current):
        if self.neuron == "qif":
            c = torch.cos(2.0 * math.pi * u)
            return ((1.0 - c) + (1.0 + c) * current) / (2.0 * math.pi * self.tau_mem)
        V = u - self._period * G
        du = (current - V) / self.tau_mem
        if r is not None:
            du = du + self.spike_drive * _bump(r)
        return du

    def initial_state(self, batch_size, dtype=None, device=None):
        """Default state ``(u0, s0)``, each ``(batch_size, N)``: ``u = 0`` (:math:`V = 0`, the
        leak's rest potential, for ``lif``; phase 0, :math:`V = 0`, for ``qif``) and ``s = 0``.
        ``dtype`` and ``device`` default to the parameters'."""
        if dtype is None or device is None:
            p = self.input_weight
            dtype = p.dtype if dtype is None else dtype
            device = p.device if device is None else device
        z = torch.zeros(batch_size, self.hidden_size, dtype=dtype, device=device)
        return z, z.clone()

    # ------------------------------------------------------------------ forward
    def forward(self, inputs, dt, return_trajectories=False, initial_state=None):
        """
        Simulate the network.

        :param torch.Tensor inputs: shape ``(batch, steps, I)``.
        :param float dt: step size, positive (and below ``tau_mem``).
        :param bool return_trajectories: also return a :class:`SmoothGateTrajectory`.
        :param tuple initial_state: optional ``(u0, s0)``, each ``(batch, N)``.
        :returns: outputs of shape ``(batch, steps, O)`` (and the trajectories).

        The computation dtype is the promotion of the inputs' and the parameters' dtypes (so
        float64 inputs give float64 outputs); inputs must be on the parameters' device.
        """
        W_in, W_rec, b = self.input_weight, self.recurrent_weight, self.bias
        W_out, b_out = self.readout_weight, self.readout_bias
        if not isinstance(inputs, torch.Tensor):
            raise ValueError(f"inputs must be a torch.Tensor, got {type(inputs).__name__}")
        if inputs.dim() != 3 or inputs.shape[-1] != self.input_size:
            raise ValueError(
                f"inputs must have shape (batch, steps, input_size={self.input_size}), "
                f"got {tuple(inputs.shape)}")
        if inputs.shape[0] < 1 or inputs.shape[1] < 1:
            raise ValueError(
                f"inputs must have at least one sequence and one step, got {tuple(inputs.shape)}")
        if not inputs.is_floating_point():
            raise ValueError(f"inputs must be a floating-point tensor, got {inputs.dtype}")
        if inputs.device != b.device:
            raise ValueError(f"inputs are on {inputs.device} but the parameters are on {b.device}")
        if not bool(torch.isfinite(inputs).all()):
            raise ValueError("inputs contains NaN or infinite entries")
        dt = _check_positive("dt", dt)
        if self.neuron == "lif" and dt >= self.tau_mem:
            raise ValueError(
                f"dt={dt} must be smaller than tau_mem={self.tau_mem} for the Euler step")
        if self.neuron == "lif" and self.gate_width > 0:
            if self.spike_drive * dt > 0.2 * self.gate_width:
                warnings.warn(
                    f"dt={dt} under-resolves the gated reset of the LIF (spike_drive * dt > "
                    f"0.2 * gate_width={self.gate_width}): spike counts and gradients can be "
                    f"inaccurate; use dt <= {0.2 * self.gate_width / self.spike_drive:.3g}",
                    RuntimeWarning, stacklevel=2)
        for name, p, shape in [("input_weight", W_in, (self.hidden_size, self.input_size)),
                               ("recurrent_weight", W_rec, (self.hidden_size, self.hidden_size)),
                               ("bias", b, (self.hidden_size,)),
                               ("readout_weight", W_out, (self.output_size, self.hidden_size)),
                               ("readout_bias", b_out, (self.output_size,))]:
            if tuple(p.shape) != shape:
                raise ValueError(f"{name} must have shape {shape}, got {tuple(p.shape)} "
                                 "(batched parameter samples are not supported)")
            if not bool(torch.isfinite(p).all()):
                raise ValueError(f"{name} contains NaN or infinite entries")
        dtype = torch.promote_types(inputs.dtype, b.dtype)
        inputs = inputs.to(dtype)
        W_in, W_rec, b, W_out, b_out = (p.to(dtype) for p in (W_in, W_rec, b, W_out, b_out))
        batch, steps, _ = inputs.shape
        if initial_state is None:
            u, s = self.initial_state(batch, dtype=dtype, device=b.device)
        else:
            u, s = initial_state
            for name, x in (("initial_state[0]", u), ("initial_state[1]", s)):
                if not isinstance(x, torch.Tensor) or tuple(x.shape) != (batch, self.hidden_size):
                    raise ValueError(
                        f"{name} must be a tensor of shape {(batch, self.hidden_size)}")
            u, s = u.to(dtype), s.to(dtype)
        width = self.gate_width
        decay = math.exp(-dt / self.tau_syn)
        # all input currents at once, step-major; unbound once (one backward node for all steps,
        # where drive[:, n] would scatter a full-size zero tensor per step)
        drive = torch.addmm(b, inputs.transpose(0, 1).reshape(-1, self.input_size), W_in.T)
        drive = drive.reshape(steps, batch, -1)  # all input currents at once, step-major
        u0 = u
        module = _fused_lif_module(u) if self.neuron == "lif" and width > 0 else None
        if module is not None:  # compiled CPU step and reverse sweep (same arithmetic)
            consts = (self.threshold, self._period, 1.0 / width, 1.0 / self.tau_mem,
                      1.0 / self.tau_syn, self.spike_drive, dt, decay)
            U, S, G = _FusedLifLoop.apply(drive, W_rec, u, s, consts, module)
            u_all, s_all, G_all = U.transpose(0, 1), S.transpose(0, 1), G.transpose(0, 1)
            outputs = torch.addmm(b_out, S.reshape(-1, S.shape[-1]), W_out.T)
            outputs = outputs.reshape(steps, batch, -1).transpose(0, 1)  # readout step-major
        else:
            us, ss, Gs = [], [], []
            G, r = self._gate(u, width)
            # unbound once: one backward node for all steps (drive[n] of the tensor would
            # scatter a full-size zero tensor per step)
            for n, drive_n in enumerate(drive.unbind(0)):
                current = drive_n + s @ W_rec.T
                u = self._step(u, G, r, current, dt)
                G_new, r = self._gate(u, width)
                s = decay * s + (G_new - G) / self.tau_syn
                G = G_new
                us.append(u)
                ss.append(s)
                Gs.append(G)
            s_all = torch.stack(ss, dim=1)
            outputs = s_all @ W_out.T + b_out
        if not bool(torch.isfinite(outputs).all()):
            raise ValueError(f"the simulation diverged (non-finite outputs); reduce dt={dt} "
                             "or the weights")
        if not return_trajectories:
            return outputs
        if module is None:
            u_all, G_all = torch.stack(us, dim=1), torch.stack(Gs, dim=1)
        state = torch.cat([u0.unsqueeze(1), u_all], dim=1).detach()
        spike_level, period, lower = self._spike_geometry()
        lev = _levels(state, spike_level, period, lower)
        raster = (lev[:, 1:] - lev[:, :-1]).clamp(min=0)
        traj = SmoothGateTrajectory(
            voltage=self.voltage(u_all, G_all), current=s_all, gate=G_all, raster=raster,
            state=state, dt=dt, spike_level=spike_level, period=period, lower=lower)
        return outputs, traj

    def extra_repr(self):
        return (f"input_size={self.input_size}, hidden_size={self.hidden_size}, "
                f"output_size={self.output_size}, neuron={self.neuron!r}, "
                f"gate_width={self.gate_width}, tau_mem={self.tau_mem}, tau_syn={self.tau_syn}")
