"""
Stochastic leaky integrate-and-fire (SLIF) networks with exact path-wise gradients of spike times.

Reference: C. Holberg and C. Salvi, *Exact gradients for stochastic spiking neural networks driven
by rough signals*, NeurIPS 2024.
"""

import math
import numbers

import torch
from pyro.distributions.torch_distribution import TorchDistribution
from pyro.distributions.util import broadcast_shape
from torch.distributions import constraints

from pyro_spikes.distributions._checks import check_allocation, check_finite
from pyro_spikes.distributions.point_process import check_duration
from pyro_spikes.distributions.unavailable import NoMoments

__all__ = ["StochasticLIF"]

_NEURON_PARAMS = ("input_current", "threshold", "reset", "tau", "noise_scale", "rest", "init")


class StochasticLIF(NoMoments, TorchDistribution):
    r"""
    First :math:`K` spike times of each neuron of a network of :math:`D` stochastic leaky
    integrate-and-fire neurons on :math:`[0, T]` (Holberg & Salvi, NeurIPS 2024).

    Between spikes each membrane potential follows the SDE

    .. math::

        dv_d = \Big(-\frac{v_d - v_{\mathrm{rest}}}{\tau} + c_d\Big)\,dt + \sigma\,dW_d(t),
        \qquad v_d(0) = v_{\mathrm{init}},

    with independent Brownian motions :math:`W_d`. Spikes are generated either

    * **by threshold crossing** (``escape_noise=False``): neuron :math:`d` spikes at the first
      time :math:`t^*` with :math:`v_d(t^*) = v_{\mathrm{th}}`; or
    * **by escape noise** (``escape_noise=True``): neuron :math:`d` spikes when its integrated
      intensity :math:`\int_{t_{\mathrm{last}}}^{t} \lambda(v_d(s))\,ds` with
      :math:`\lambda(v) = \lambda_0 \exp((v - v_{\mathrm{th}})/\delta)` reaches an independent
      :math:`\mathrm{Exp}(1)` draw :math:`E` (a fresh draw after every spike).

    On a spike of neuron :math:`d'` at :math:`t^*`: :math:`v_{d'} \leftarrow v_{\mathrm{reset}}`,
    then every membrane jumps, :math:`v_d \leftarrow v_d + W_{d d'}` (**delta synapses**: an
    instantaneous jump, no synaptic current; the self weight :math:`W_{d'd'}` is added after the
    reset). A jump that lifts a membrane to the threshold makes it spike at the same instant.

    **Solver** (fixed step ``dt``, event-driven inside a step). The Brownian path is replaced by
    its piecewise-linear interpolation on the grid (Wong--Zakai; the SDE has additive noise, so
    no correction term arises). On a step :math:`[t_n, t_n + h]` with increment
    :math:`\Delta W_n` the membrane then solves a linear ODE with constant forcing, whose flow is
    exact:

    .. math::

        v(t_n + s + u) = v_\infty + (v(t_n + s) - v_\infty)\,e^{-u/\tau},\qquad
        v_\infty = v_{\mathrm{rest}} + \tau\,(c + \sigma \Delta W_n / h).

    The membrane is monotone on the step, so a threshold crossing exists iff
    :math:`v < v_{\mathrm{th}} < v_\infty` and the root is closed-form,
    :math:`u^* = \tau \log\frac{v_\infty - v}{v_\infty - v_{\mathrm{th}}}`. With escape noise
    the intensity is interpolated linearly in time between the current point and the end of
    the step, so the integrated intensity is quadratic in :math:`u` and its root is closed-form
    too. Events are processed in time order (earliest neuron first, vectorised over the
    batch); after each one the remaining part of the step is re-solved. For :math:`\sigma = 0`
    the threshold-crossing solution is exact for any ``dt``.

    **Gradients.** Every spike time is a smooth function of the parameters through the
    closed-form roots, so autograd gives the implicit-function-theorem derivative
    :math:`\frac{dt^*}{d\theta} = -\frac{\partial_\theta v(t^*)}{\dot v(t^*)}` of the discrete
    solution exactly (path-wise gradients with the noise held fixed; see ``noise`` in
    :meth:`rsample`).

    .. warning::

        With threshold crossing and Brownian noise, the expected path-wise gradient of an
        expectation (e.g. of a loss of the spike times) is biased: a parameter change mostly
        turns near-miss excursions into crossings (or back), which the derivative of a fixed
        path cannot see. On the rate-matching task of ``examples/gradient_families.py`` it is
        about 18 times too small. With ``escape_noise=True`` the spike times are smooth in the
        parameters for fixed noise and the path-wise gradient is unbiased (tested in
        ``tests/test_gradient_families.py``).

    **Samples** use the library's ``events`` layout: shape
    ``sample_shape + batch_shape + (K * D, 1 + D)``, rows sorted by time, one row per recorded
    spike (time, one-hot neuron); a neuron with fewer than :math:`K` spikes on :math:`[0, T]`
    contributes padding rows (time :math:`T`, zero mark) at the end.

    **Parameters** ``input_current``, ``threshold``, ``reset``, ``tau``, ``noise_scale``,
    ``rest`` and ``init`` are numbers or tensors of shape ``batch + (D,)`` or ``batch + (1,)``
    (the last dimension indexes neurons); ``weight`` has shape ``batch + (D, D)``, row :math:`d`
    holding the input weights of neuron :math:`d`. ``batch_shape`` is their broadcast.

    :param input_current: constant input current :math:`c`.
    :param weight: synaptic weights :math:`W` (``None``: uncoupled neurons).
    :param threshold: threshold :math:`v_{\mathrm{th}}` (centre of the escape link with
        ``escape_noise=True``).
    :param reset: reset potential :math:`v_{\mathrm{reset}}`.
    :param tau: membrane time constant :math:`\tau > 0` (leak rate :math:`1/\tau`).
    :param noise_scale: :math:`\sigma \ge 0`.
    :param float duration: the window :math:`T > 0`.
    :param int num_spikes: :math:`K \ge 1`, spikes recorded per neuron.
    :param float dt: solver step :math:`> 0`.
    :param rest: resting potential :math:`v_{\mathrm{rest}}`.
    :param init: initial potential (default: ``reset``).
    :param bool escape_noise: spike by escape noise instead of threshold crossing.
    :param escape_rate: :math:`\lambda_0 > 0` of the escape link.
    :param escape_width: :math:`\delta > 0` of the escape link.
    :param int max_events_per_step: guard against runaway cascades (e.g. a self weight that
        lifts the reset potential above threshold); exceeding it raises :class:`ValueError`.
    """

    _unavailable_hints = {
        "mean": ("the mean spike times have no closed form",
                 "average samples: d.rsample((n,)).mean(0)"),
        "variance": ("the variance of the spike times has no closed form",
                     "use samples: d.rsample((n,)).var(0)"),
        "stddev": ("the standard deviation of the spike times has no closed form",
                   "use samples: d.rsample((n,)).std(0)"),
        "cdf": ("the spike times have no closed-form distribution function",
                "use the empirical distribution of d.rsample((n,))"),
        "entropy": (
            "StochasticLIF has no tractable likelihood, so no entropy either",
            "compare samples with a scoring rule (pyro_spikes.scoring)",
        ),
    }

    arg_constraints = {
        "input_current": constraints.real,
        "weight": constraints.real,
        "threshold": constraints.real,
        "reset": constraints.real,
        "tau": constraints.positive,
        "noise_scale": constraints.greater_than_eq(0.0),
        "rest": constraints.real,
        "init": constraints.real,
        "escape_rate": constraints.positive,
        "escape_width": constraints.positive,
    }
    support = constraints.independent(constraints.real, 2)
    has_rsample = True

    def __init__(
        self,
        input_current,
        weight=None,
        threshold=1.0,
        reset=0.0,
        tau=1.0,
        noise_scale=0.0,
        duration=1.0,
        num_spikes=1,
        dt=1e-2,
        rest=0.0,
        init=None,
        escape_noise=False,
        escape_rate=1.0,
        escape_width=0.1,
        max_events_per_step=None,
        validate_args=None,
    ):
        # ----- settings (python numbers) -----
        duration = check_duration(duration)
        if isinstance(dt, torch.Tensor):
            dt = dt.item()
        if not isinstance(dt, numbers.Real) or not math.isfinite(dt) or dt <= 0:
            raise ValueError(f"dt must be a positive finite number, got {dt}")
        if dt > duration:
            raise ValueError(f"dt={dt} must not exceed duration={duration}")
        if isinstance(num_spikes, bool) or not isinstance(num_spikes, numbers.Integral) or num_spikes < 1:
            raise ValueError(f"num_spikes must be an integer >= 1, got {num_spikes!r}")
        self.duration = float(duration)
        self.dt = float(dt)
        self.num_spikes = int(num_spikes)
        self.escape_noise = bool(escape_noise)

        # ----- tensors: dtype/device from the first tensor argument -----
        values = dict(
            input_current=input_current, threshold=threshold, reset=reset, tau=tau,
            noise_scale=noise_scale, rest=rest, init=reset if init is None else init,
            escape_rate=escape_rate, escape_width=escape_width,
        )
        ref = next((x for x in [input_current, weight, *values.values()] if isinstance(x, torch.Tensor)), None)
        dtype = ref.dtype if ref is not None else torch.get_default_dtype()
        device = ref.device if ref is not None else None
        if weight is not None:
            weight = torch.as_tensor(weight, dtype=dtype, device=device)
            if weight.dim() < 2 or weight.shape[-1] != weight.shape[-2]:
                raise ValueError(f"weight must have shape batch + (D, D), got {tuple(weight.shape)}")
            D = weight.shape[-1]
        else:
            c = torch.as_tensor(input_current)
            D = c.shape[-1] if c.dim() > 0 else 1
        if D < 1:
            raise ValueError("input_current/weight must describe at least one neuron (D >= 1)")
        tensors = {}
        for name, x in values.items():
            x = torch.as_tensor(x, dtype=dtype, device=device)
            if not x.is_floating_point():
                raise ValueError(f"{name} must be a floating point tensor, got {x.dtype}")
            if x.dim() == 0:
                x = x.reshape(1)
            if x.shape[-1] not in (1, D):
                raise ValueError(
                    f"{name} must have shape batch + (D,) or batch + (1,) with D={D}, got {tuple(x.shape)}"
                )
            tensors[name] = x
        if weight is None:
            weight = torch.zeros(D, D, dtype=dtype, device=device)
        try:
            batch_shape = torch.Size(broadcast_shape(weight.shape[:-2],
                                                     *(x.shape[:-1] for x in tensors.values())))
        except ValueError as e:
            raise ValueError(f"parameter batch shapes do not broadcast: {e}") from None
        for name, x in tensors.items():
            if not bool(torch.isfinite(x).all()):
                raise ValueError(f"{name} must be finite")
            setattr(self, name, x.expand(batch_shape + (D,)))
        if not bool(torch.isfinite(weight).all()):
            raise ValueError("weight must be finite")
        self.weight = weight.expand(batch_shape + (D, D))
        if bool((self.noise_scale < 0).any()):
            raise ValueError("noise_scale (sigma) must be >= 0")
        if bool((self.tau <= 0).any()):
            raise ValueError("tau must be > 0")
        if bool((self.escape_rate <= 0).any()):
            raise ValueError("escape_rate must be > 0")
        if bool((self.escape_width <= 0).any()):
            raise ValueError("escape_width must be > 0")
        if not self.escape_noise and bool((self.reset >= self.threshold).any()):
            raise ValueError("reset must be below threshold (otherwise a neuron fires forever at one instant)")
        if max_events_per_step is None:
            max_events_per_step = 64 + 16 * D
        if isinstance(max_events_per_step, bool) or not isinstance(max_events_per_step, numbers.Integral) or max_events_per_step < 1:
            raise ValueError(f"max_events_per_step must be an integer >= 1, got {max_events_per_step!r}")
        self.max_events_per_step = int(max_events_per_step)
        self.num_neurons = D
        event_shape = torch.Size((self.num_spikes * D, 1 + D))
        super().__init__(batch_shape, event_shape, validate_args=validate_args)

    # ------------------------------------------------------------------ helpers
    @property
    def num_steps(self):
        """Number of solver steps :math:`\\lceil T / dt \\rceil` (the last one may be shorter)."""
        return max(1, math.ceil(self.duration / self.dt - 1e-9))

    def step_sizes(self):
        """The solver steps :math:`h_n` as a list of floats summing to :math:`T`."""
        n = self.num_steps
        return [self.dt] * (n - 1) + [self.duration - (n - 1) * self.dt]

    def expand(self, batch_shape, _instance=None):
        """The same neurons with parameters expanded to ``batch_shape`` (no copy)."""
        new = self._get_checked_instance(StochasticLIF, _instance)
        batch_shape = torch.Size(batch_shape)
        D = self.num_neurons
        for name in _NEURON_PARAMS + ("escape_rate", "escape_width"):
            setattr(new, name, getattr(self, name).expand(batch_shape + (D,)))
        new.weight = self.weight.expand(batch_shape + (D, D))
        for name in ("duration", "dt", "num_spikes", "escape_noise", "max_events_per_step", "num_neurons"):
            setattr(new, name, getattr(self, name))
        super(StochasticLIF, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def sample_noise(self, sample_shape=torch.Size(), generator=None, num_exponential=None):
        """
        Draw the driving noise, to be passed back as ``rsample(..., noise=...)`` (e.g. to hold
        it fixed in finite-difference checks).

        :returns: dict with ``"brownian"``: Brownian increments :math:`\\Delta W_n \\sim
            N(0, h_n)` of shape ``sample_shape + batch_shape + (num_steps, D)``, and, with escape
            noise, ``"exponential"``: :math:`\\mathrm{Exp}(1)` thresholds of shape
            ``sample_shape + batch_shape + (num_exponential, D)`` (default ``4 K + 16``), the
            :math:`j`-th used for the :math:`j`-th inter-spike interval of each neuron.
        """
        shape = torch.Size(sample_shape) + self.batch_shape
        D = self.num_neurons
        ref = self.input_current
        check_allocation("dt", float(shape.numel()) * self.num_steps * D, ref.dtype, ref.device,
                         f"Brownian increments on duration / dt = {self.num_steps} steps")
        h = torch.tensor(self.step_sizes(), dtype=ref.dtype, device=ref.device)
        eps = torch.randn(shape + (self.num_steps, D), generator=generator, dtype=ref.dtype, device=ref.device)
        noise = {"brownian": eps * h.sqrt().unsqueeze(-1)}
        if self.escape_noise:
            P = 4 * self.num_spikes + 16 if num_exponential is None else int(num_exponential)
            u = torch.rand(shape + (P, D), generator=generator, dtype=ref.dtype, device=ref.device)
            noise["exponential"] = -torch.log1p(-u)
        return noise

    def _check_noise(self, noise, shape):
        D = self.num_neurons
        if not isinstance(noise, dict) or "brownian" not in noise:
            raise ValueError("noise must be a dict with key 'brownian' (see StochasticLIF.sample_noise)")
        bm = noise["brownian"]
        want = shape + (self.num_steps, D)
        if not isinstance(bm, torch.Tensor) or bm.shape != want:
            got = tuple(bm.shape) if isinstance(bm, torch.Tensor) else type(bm).__name__
            raise ValueError(f"noise['brownian'] must have shape {tuple(want)}, got {got}")
        if bm.dtype != self.input_current.dtype or bm.device != self.input_current.device:
            raise TypeError(f"noise['brownian'] must have dtype {self.input_current.dtype} on "
                            f"{self.input_current.device}, got {bm.dtype} on {bm.device}")
        check_finite("noise['brownian']", bm)
        expo = None
        if self.escape_noise:
            expo = noise.get("exponential")
            if not isinstance(expo, torch.Tensor) or expo.dim() != len(shape) + 2 or expo.shape[:-2] != shape or expo.shape[-1] != D:
                got = tuple(expo.shape) if isinstance(expo, torch.Tensor) else type(expo).__name__
                raise ValueError(f"noise['exponential'] must have shape {tuple(shape)} + (P, {D}), got {got}")
            if expo.dtype != bm.dtype or expo.device != bm.device:
                raise TypeError(f"noise['exponential'] must have dtype {bm.dtype} on "
                                f"{bm.device}, got {expo.dtype} on {expo.device}")
            if not bool((torch.isfinite(expo) & (expo > 0)).all()):
                raise ValueError("noise['exponential'] must be positive finite Exp(1) draws")
        return bm, expo

    # ------------------------------------------------------------------ sampling
    def rsample(self, sample_shape=torch.Size(), noise=None):
        """
        Reparameterised sample of the first ``num_spikes`` spike times of each neuron.

        :param noise: optional dict as returned by :meth:`sample_noise`; drawn fresh if ``None``.
        :returns: ``events`` of shape ``sample_shape + batch_shape + (K * D, 1 + D)``.
        """
        times, counts = self.rsample_spike_times(sample_shape, noise=noise)
        K, D = self.num_spikes, self.num_neurons
        shape = times.shape[:-2]
        filled = torch.arange(K, device=counts.device) < counts.clamp(max=K).unsqueeze(-1)
        marks = torch.eye(D, dtype=times.dtype, device=times.device).unsqueeze(-2) * filled.unsqueeze(-1).to(times.dtype)
        flat_t = times.reshape(shape + (K * D,))
        flat_m = marks.reshape(shape + (K * D, D))
        flat_f = filled.reshape(shape + (K * D,))
        # spikes before padding among equal times (a spike exactly at T), then by time
        order = torch.sort((~flat_f).to(torch.uint8), dim=-1, stable=True).indices
        flat_t, flat_m = flat_t.gather(-1, order), flat_m.gather(-2, order.unsqueeze(-1).expand(flat_m.shape))
        flat_t, order = torch.sort(flat_t, dim=-1, stable=True)
        flat_m = flat_m.gather(-2, order.unsqueeze(-1).expand(flat_m.shape))
        return torch.cat([flat_t.unsqueeze(-1), flat_m], dim=-1)

    def rsample_spike_times(self, sample_shape=torch.Size(), noise=None):
        """
        Like :meth:`rsample` but per neuron: returns ``(times, counts)`` with ``times`` of shape
        ``sample_shape + batch_shape + (D, K)`` (the first ``K`` spike times of each neuron in
        order, :math:`T` where a neuron spiked fewer times) and the total spike counts on
        :math:`[0, T]` so far simulated (``counts >= K`` means all ``K`` slots are filled).
        """
        shape = torch.Size(sample_shape) + self.batch_shape
        user_noise = noise is not None
        if noise is None:
            noise = self.sample_noise(sample_shape)
        bm, expo = self._check_noise(noise, shape)
        return self._simulate(shape, bm, expo, user_noise)

    def _simulate(self, shape, bm, expo, user_noise):
        D, K, T = self.num_neurons, self.num_spikes, self.duration
        ex = lambda x: x.expand(shape + (D,))  # noqa: E731
        c, th, reset, tau, sigma, rest = (ex(getattr(self, n)) for n in ("input_current", "threshold", "reset", "tau", "noise_scale", "rest"))
        W = self.weight.expand(shape + (D, D))
        v = ex(self.init)
        dtype, device = c.dtype, c.device
        times = torch.full(shape + (D, K), T, dtype=dtype, device=device)
        counts = torch.zeros(shape + (D,), dtype=torch.long, device=device)
        slots = torch.arange(K, device=device)
        neurons = torch.arange(D, device=device)
        inf = torch.tensor(math.inf, dtype=dtype, device=device)
        if self.escape_noise:
            rate, width = ex(self.escape_rate), ex(self.escape_width)
            acc = torch.zeros(shape + (D,), dtype=dtype, device=device)  # integrated intensity
            eidx = torch.zeros(shape + (D,), dtype=torch.long, device=device)
            E = expo[..., 0, :]
        t0 = 0.0
        for n, h in enumerate(self.step_sizes()):
            v_inf = rest + tau * (c + sigma * bm[..., n, :] / h)
            s = torch.zeros(shape + (1,), dtype=dtype, device=device)  # elapsed time in the step
            for _ in range(self.max_events_per_step + 1):
                rem = h - s
                if not self.escape_noise:
                    above = v >= th
                    cross = (v_inf > th) & ~above
                    num = torch.where(cross, v_inf - v, torch.ones_like(v))
                    den = torch.where(cross, v_inf - th, torch.ones_like(v))
                    u = torch.where(cross, tau * torch.log(num / den), inf)
                    u = torch.where(above, torch.zeros_like(u), u)
                else:
                    lam0 = rate * torch.exp((v - th) / width)
                    v_end = v_inf + (v - v_inf) * torch.exp(-rem / tau)
                    lam1 = rate * torch.exp((v_end - th) / width)
                    live = rem > 0
                    slope = (lam1 - lam0) / torch.where(live, rem, torch.ones_like(rem))
                    r = E - acc
                    disc = lam0 * lam0 + 2 * slope * r
                    ok = (disc > 0) & live
                    u = torch.where(ok, 2 * r / (lam0 + torch.sqrt(torch.where(ok, disc, torch.ones_like(disc)))), inf)
                    u = torch.where(r <= 0, torch.zeros_like(u), u)
                u = torch.where(u <= rem, u, inf)
                u_min, d_star = u.min(-1)
                ev = torch.isfinite(u_min)
                if not bool(ev.any()):
                    break
                step = torch.where(ev, u_min, torch.zeros_like(u_min)).unsqueeze(-1)
                if self.escape_noise:
                    acc = acc + lam0 * step + 0.5 * slope * step * step
                v = v_inf + (v - v_inf) * torch.exp(-step / tau)
                s = s + step
                spike = (neurons == d_star.unsqueeze(-1)) & ev.unsqueeze(-1)
                t_ev = t0 + s.squeeze(-1)
                slot = (slots == counts.unsqueeze(-1)) & spike.unsqueeze(-1)
                times = torch.where(slot, t_ev[..., None, None], times)
                counts = counts + spike.long()
                v = torch.where(spike, reset, v)
                v = v + (W * spike.unsqueeze(-2).to(dtype)).sum(-1)
                if self.escape_noise:
                    acc = torch.where(spike, torch.zeros_like(acc), acc)
                    eidx = eidx + spike.long()
                    if int(eidx.max()) >= expo.shape[-2]:
                        if user_noise:
                            raise ValueError(
                                f"noise['exponential'] holds {expo.shape[-2]} draws per neuron but a neuron "
                                "fired more often; pass more draws (sample_noise(num_exponential=...))"
                            )
                        more = -torch.log1p(-torch.rand(expo.shape, dtype=dtype, device=device))
                        expo = torch.cat([expo, more], dim=-2)
                    E = expo.gather(-2, eidx.unsqueeze(-2)).squeeze(-2)
            else:
                raise ValueError(
                    f"more than max_events_per_step={self.max_events_per_step} spikes within one step "
                    f"(t={t0}): decrease dt, raise max_events_per_step, or check weight for runaway excitation"
                )
            # no further event in this step: flow to its end
            rem = h - s
            if self.escape_noise:
                lam0 = rate * torch.exp((v - th) / width)
                v_new = v_inf + (v - v_inf) * torch.exp(-rem / tau)
                lam1 = rate * torch.exp((v_new - th) / width)
                acc = acc + 0.5 * (lam0 + lam1) * rem
                v = v_new
            else:
                v = v_inf + (v - v_inf) * torch.exp(-rem / tau)
            t0 += h
            if bool((counts >= K).all()):
                break
        return times, counts

    def log_prob(self, value):
        raise NotImplementedError(
            "StochasticLIF has no tractable likelihood. Train it with a scoring rule on samples "
            "(path-wise gradients through rsample), e.g. pyro_spikes.scoring.signature_kernel_score "
            "or signature_mmd (Holberg & Salvi, 2024)."
        )
