import math

import pyro
import torch
from pyro.nn import PyroModule, PyroParam, pyro_method

from pyro_spikes.distributions.relaxed import RelaxedPointProcess
from pyro_spikes.distributions.spiking import SpikingPointProcess
from pyro_spikes.models.lookahead import LookaheadDrive
from pyro_spikes.models.smc import HiddenProposal, smc_log_marginal
from pyro_spikes.spikes import select_neurons, trim_padding

__all__ = ["SNN", "temperature_schedule"]


def temperature_schedule(step, num_steps, start=1.0, end=0.3):
    """
    Geometric annealing of the relaxation temperature from ``start`` (step 0) to ``end``
    (step ``num_steps - 1``): :math:`\\tau_s = \\tau_0 (\\tau_1/\\tau_0)^{s/(S-1)}`.
    """
    if num_steps <= 1:
        return float(end)
    frac = min(max(step / (num_steps - 1), 0.0), 1.0)
    return float(start) * (float(end) / float(start)) ** frac


class SNN(PyroModule):
    """
    A partially observed probabilistic spiking neural network (Rezende & Gerstner, 2014;
    Kajino, 2021) as a Pyro model and guide.

    The network has :math:`D = D_O + D_H` neurons (observed first, then hidden) with the
    intensity of :class:`~pyro_spikes.distributions.SpikingPointProcess`,
    :math:`\\lambda_d(t) = a\\,\\sigma(b_d + \\sum_l \\sum_{d'} W_{l,d,d'} \\sum_{t'} e^{-(t-t')/\\tau_l})`.
    Its joint density factorises over the two groups of neurons given the whole past,

    .. math::

        p(J_O, J_H) = p_H(J_H \\,\\|\\, J_O)\\; p_O(J_O \\,\\|\\, J_H),

    where :math:`p_H(\\cdot \\| J_O)` is the likelihood of the hidden neurons' events with the
    observed events as context (and likewise for :math:`p_O`). :meth:`model` has one sample
    site per factor: ``"hidden"`` (latent) and ``"observed"`` (``obs=``). With ``relaxed=True``
    the hidden factor is the :class:`~pyro_spikes.distributions.RelaxedPointProcess` of the
    hidden neurons (concrete marks at candidates of rate :math:`a D_H`), and the observed
    factor sees the soft hidden marks in its history; with ``relaxed=False`` both are exact.

    :meth:`guide` is :math:`q(J_H)`: the hidden neurons' own dynamics driven by the observed
    spikes (Kajino's choice, ``guide_type="prior"``, sharing the model's parameters), the
    same architecture with its own parameters (``guide_type="separate"``), or that plus
    anticausal traces of the observed spikes after :math:`t`
    (:class:`~pyro_spikes.models.lookahead.LookaheadDrive`, ``guide_type="lookahead"``, its
    weights ``lookahead_weight`` starting at zero) so that it can anticipate the observed
    spikes a hidden spike causes. ``relaxed=True``
    samples it by relaxed thinning (path-wise gradients under ``Trace_ELBO``); ``relaxed=False``
    samples the exact process (score-function/REINFORCE gradients under ``Trace_ELBO``, or
    ``TraceGraph_ELBO`` with a decaying-average baseline, ``baseline=True``).

    :param int num_observed: :math:`D_O`.
    :param int num_hidden: :math:`D_H`.
    :param float duration: :math:`T` of every sequence.
    :param time_constants: :math:`\\tau_l` of the exponential basis.
    :param float upper_bound: :math:`a`.
    :param str guide_type: ``"prior"`` or ``"separate"``.
    :param float init_scale: standard deviation of the initial weights.
    :param int hidden_capacity: rows of a hidden realisation (default: the candidate count
        of relaxed thinning exceeded with probability below ~1e-9).
    :param str name: prefix of the parameter names in Pyro's param store (give two networks
        in one program different names).
    """

    def __init__(self, num_observed, num_hidden, duration, time_constants=(1.0, 5.0),
                 upper_bound=5.0, guide_type="prior", init_scale=0.1, hidden_capacity=None,
                 name=""):
        super().__init__(name)
        if num_observed < 1 or num_hidden < 0:
            raise ValueError("num_observed must be >= 1 and num_hidden >= 0")
        if guide_type not in ("prior", "separate", "lookahead"):
            raise ValueError(
                f"guide_type must be 'prior', 'separate' or 'lookahead', got {guide_type!r}")
        d = num_observed + num_hidden
        self.num_observed, self.num_hidden = num_observed, num_hidden
        self.duration = float(duration)
        self.guide_type = guide_type
        self.register_buffer("time_constants", torch.as_tensor(time_constants,
                                                               dtype=torch.get_default_dtype()))
        self.register_buffer("upper_bound", torch.tensor(float(upper_bound)))
        num_basis = self.time_constants.numel()
        self.bias = PyroParam(torch.zeros(d))
        self.weight = PyroParam(init_scale * torch.randn(num_basis, d, d))
        if guide_type in ("separate", "lookahead"):
            self.guide_bias = PyroParam(torch.zeros(d))
            self.guide_weight = PyroParam(init_scale * torch.randn(num_basis, d, d))
        if guide_type == "lookahead":
            # anticausal traces of the observed spikes, one per basis time constant; zero at
            # the start, so the guide starts as the "separate" one
            self.lookahead_weight = PyroParam(torch.zeros(num_basis, num_hidden, num_observed))
            self.register_buffer("lookahead_time_constants", self.time_constants.clone())
        self.hidden_capacity = hidden_capacity

    @property
    def observed_neurons(self):
        return list(range(self.num_observed))

    @property
    def hidden_neurons(self):
        return list(range(self.num_observed, self.num_observed + self.num_hidden))

    # ------------------------------------------------------------------ processes
    def network(self, capacity=None, bias=None, weight=None, duration=None):
        """The full network as a :class:`SpikingPointProcess` (all neurons modelled)."""
        return SpikingPointProcess(
            self.bias if bias is None else bias, self.weight if weight is None else weight,
            self.time_constants, self.duration if duration is None else duration,
            self.upper_bound, capacity=capacity,
        )

    def _process(self, neurons, context, bias, weight, capacity=None, arg_names=None,
                 stimulus=None):
        return SpikingPointProcess(
            bias, weight, self.time_constants, self.duration, self.upper_bound,
            capacity=capacity, neurons=neurons, context=context, arg_names=arg_names,
            stimulus=stimulus,
        )

    def hidden_process(self, observed, guide=False):
        """The hidden neurons given the observed spikes (model factor, or the guide)."""
        stimulus = None
        if guide and self.guide_type != "prior":
            bias, weight = self.guide_bias, self.guide_weight
            if self.guide_type == "lookahead":
                stimulus = LookaheadDrive(observed, self.lookahead_weight,
                                          self.lookahead_time_constants, self.hidden_neurons,
                                          self.num_observed + self.num_hidden, self.duration)
        else:
            bias, weight = self.bias, self.weight
        return self._process(self.hidden_neurons, observed, bias, weight, stimulus=stimulus,
                             capacity=self.hidden_capacity,
                             arg_names={"context": "observed", "capacity": "hidden_capacity"})

    def observed_process(self, hidden, capacity):
        """The observed neurons given the hidden spikes (model factor)."""
        return self._process(self.observed_neurons, hidden, self.bias, self.weight,
                             capacity=capacity)

    def _check_observed(self, observed):
        if not isinstance(observed, torch.Tensor) or observed.dim() != 3:
            raise ValueError(
                "observed must be a tensor of shape (num_sequences, capacity, 1 + num_observed)"
            )
        if observed.shape[-1] != 1 + self.num_observed:
            raise ValueError(
                f"observed has {observed.shape[-1] - 1} neurons, expected {self.num_observed}"
            )

    def _check_cancel(self, relaxed, cancel_hidden):
        if cancel_hidden and (self.guide_type != "prior" or not relaxed):
            raise ValueError(
                "cancel_hidden=True needs guide_type='prior' (the guide is the model's hidden "
                "factor) and relaxed=True (score-function gradients need log q); got "
                f"guide_type={self.guide_type!r}, relaxed={relaxed!r}"
            )

    # ------------------------------------------------------------------ Pyro programs
    @pyro_method
    def model(self, observed, relaxed=True, temperature=0.3, baseline=False,
              cancel_hidden=False):
        """
        :math:`p(J_O, J_H; \\theta)` with ``observed`` (``(B, C, 1 + D_O)``) as data.
        ``baseline`` is accepted (and ignored) so that model and guide take the same arguments.

        ``cancel_hidden=True`` (only with ``guide_type="prior"`` and ``relaxed=True``, passed to
        model and guide alike): the model's hidden factor and the guide are then the same
        density, so :math:`\\log p_H(J_H) - \\log q(J_H) = 0` for every sample and every
        parameter value; both sites are masked (``.mask(False)``: no log density is computed),
        which leaves the ELBO :math:`E_q[\\log p_O(J_O \\| J_H)]` and its path-wise gradient
        unchanged and saves two relaxed log-densities per step. The model is then no longer
        the joint density on its own, so leave it off outside such SVI steps.
        """
        self._check_observed(observed)
        self._check_cancel(relaxed, cancel_hidden)
        with pyro.plate("sequences", observed.shape[0], dim=-1):
            if self.num_hidden:
                hid = self.hidden_process(observed)
                if relaxed:
                    hid = RelaxedPointProcess(hid, temperature)
                if cancel_hidden:
                    hid = hid.mask(False)
                hidden = pyro.sample("hidden", hid)
                obs = self.observed_process(hidden, observed.shape[-2])
            else:
                obs = self.network(capacity=observed.shape[-2])
            pyro.sample("observed", obs, obs=observed)

    @pyro_method
    def guide(self, observed, relaxed=True, temperature=0.3, baseline=False,
              cancel_hidden=False):
        """
        :math:`q(J_H; \\phi)`: hidden dynamics driven by the observed spikes (see
        :meth:`model` for ``cancel_hidden``).
        """
        self._check_observed(observed)
        self._check_cancel(relaxed, cancel_hidden)
        if not self.num_hidden:
            return
        with pyro.plate("sequences", observed.shape[0], dim=-1):
            hid = self.hidden_process(observed, guide=True)
            infer = {}
            if relaxed:
                hid = RelaxedPointProcess(hid, temperature)
                if cancel_hidden:
                    hid = hid.mask(False)
            elif baseline:
                infer = {"baseline": {"use_decaying_avg_baseline": True, "baseline_beta": 0.9}}
            pyro.sample("hidden", hid, infer=infer)

    # ------------------------------------------------------------------ utilities
    def proposal(self):
        """
        The guide as a :class:`~pyro_spikes.models.smc.HiddenProposal` (its hidden neurons'
        bias and weights), or ``None`` for ``guide_type="prior"`` (the model's own hidden
        factor). Reads the parameters through Pyro's param store, like :meth:`guide`.
        """
        if self.guide_type == "prior":
            return None
        return self._proposal()

    @pyro_method
    def _proposal(self):
        hidden = torch.as_tensor(self.hidden_neurons, device=self.guide_bias.device)
        if self.guide_type == "lookahead":
            return HiddenProposal(self.guide_bias.index_select(-1, hidden),
                                  self.guide_weight.index_select(-2, hidden),
                                  self.lookahead_weight, self.lookahead_time_constants)
        return HiddenProposal(self.guide_bias.index_select(-1, hidden),
                              self.guide_weight.index_select(-2, hidden))

    @torch.no_grad()
    @pyro_method
    def simulate(self, num_sequences, duration=None, capacity=None):
        """
        Sample the whole network (exact thinning) and split it into observed and hidden spikes.
        The parameters are read through Pyro's param store (as in :meth:`model`), so a loaded
        param store is honoured.

        :param int num_sequences: number of independent sequences.
        :param float duration: window of the simulation (default: the model's :math:`T`; data
            for :meth:`model` must use the model's window).
        :param int capacity: rows of the full-network sample (default: see
            :class:`~pyro_spikes.distributions.SpikingPointProcess`).
        :returns: ``(observed, hidden)`` events of shapes ``(B, C_O, 1 + D_O)`` and
            ``(B, C_H, 1 + D_H)``, trailing padding trimmed.
        """
        duration = self.duration if duration is None else float(duration)
        events = self.network(capacity=capacity, duration=duration).sample((num_sequences,))
        observed = select_neurons(events, self.observed_neurons, duration)
        hidden = select_neurons(events, self.hidden_neurons, duration)
        return trim_padding(observed, duration), trim_padding(hidden, duration)

    @torch.no_grad()
    @pyro_method
    def log_marginal(self, observed, num_samples=256, batch_size=None, return_ess=False,
                     method="smc", ess_threshold=0.5, progress=False):
        """
        Estimate :math:`\\log p(J_O)` per sequence, the held-out yardstick of a partially
        observed network, with the guide as proposal. Parameters are read through Pyro's param
        store (as in :meth:`model` and :meth:`guide`).

        ``method="smc"`` (default): sequential Monte Carlo in continuous time
        (:func:`~pyro_spikes.models.smc.smc_log_marginal`): ``num_samples`` particles per
        sequence, resampled whenever their effective sample size falls below
        ``ess_threshold`` times the particle count. :math:`\\hat Z` is an unbiased estimate of
        :math:`p(J_O)`; its log is biased low by about :math:`\\mathrm{Var}(\\hat Z / Z)/2`,
        a bias that decays as :math:`1/S`.

        ``method="is"``: plain importance sampling over whole sequences,
        :math:`\\log \\frac1S \\sum_s w_s` with :math:`w_s = p(J_O, J_H^{(s)}) / q(J_H^{(s)})`:
        also unbiased for :math:`p(J_O)` on the natural scale, but for strongly coupled networks
        the weights degenerate (effective sample size near 1) and the log estimate falls far
        below :math:`\\log p(J_O)`.

        :param int num_samples: particles (SMC) or importance samples (IS), :math:`S`.
        :param int batch_size: IS only: samples drawn at a time (memory); default all at once.
        :param bool return_ess: also return an effective sample size per sequence: for IS
            :math:`(\\sum_s w_s)^2 / \\sum_s w_s^2`; for SMC the mean, over segments, of the
            particles' effective sample size before resampling (both out of :math:`S`).
        :param str method: ``"smc"`` or ``"is"``.
        :param float ess_threshold: SMC resampling threshold in ``[0, 1]``.
        :param bool progress: show a progress bar (SMC).
        :returns: ``(num_sequences,)`` estimates (and the effective sample sizes).
        """
        self._check_observed(observed)
        if method not in ("smc", "is"):
            raise ValueError(f"method must be 'smc' or 'is', got {method!r}")
        if not (isinstance(num_samples, int) and num_samples >= 1):
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        if batch_size is None:
            batch_size = num_samples
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not self.num_hidden:
            log_p = self.network(capacity=observed.shape[-2]).log_prob(observed)
            return (log_p, torch.full_like(log_p, float(num_samples))) if return_ess else log_p
        if method == "smc":
            result = smc_log_marginal(
                observed, self.bias, self.weight, self.time_constants, self.upper_bound,
                self.duration, proposal=self.proposal(), num_particles=num_samples,
                ess_threshold=ess_threshold, progress=progress,
            )
            if return_ess:
                return result.log_marginal, result.ess_mean * num_samples
            return result.log_marginal
        q = self.hidden_process(observed, guide=True)
        # for the prior guide log p_H - log q = 0 exactly: only the observed factor is weighed
        model_hidden = None if self.guide_type == "prior" else self.hidden_process(observed)
        chunks = []
        for start in range(0, num_samples, batch_size):
            hidden = q.sample((min(batch_size, num_samples - start),))
            log_w = self.observed_process(hidden, observed.shape[-2]).log_prob(observed)
            if model_hidden is not None:
                log_w = log_w + model_hidden.log_prob(hidden) - q.log_prob(hidden)
            chunks.append(log_w)
        log_w = torch.cat(chunks, 0)
        total = torch.logsumexp(log_w, 0)
        estimate = total - math.log(num_samples)
        if not return_ess:
            return estimate
        return estimate, torch.exp(2 * total - torch.logsumexp(2 * log_w, 0))
