import math

import numpy as np
import torch
import torch.nn.functional as F
from pyro.distributions.util import broadcast_shape
from torch.distributions import constraints

from pyro_spikes.distributions.point_process import (
    PointProcess,
    as_param,
    sequential_threads,
    uniform_order_statistics,
)
from pyro_spikes.distributions.poisson import _poisson_capacity
from pyro_spikes.distributions.scan import exp_decay_scan

__all__ = ["SpikingPointProcess"]


def _gauss_legendre(order, like):
    nodes, weights = np.polynomial.legendre.leggauss(order)
    nodes = torch.as_tensor((nodes + 1) / 2, dtype=like.dtype, device=like.device)
    weights = torch.as_tensor(weights / 2, dtype=like.dtype, device=like.device)
    return nodes, weights


class SpikingPointProcess(PointProcess):
    """
    The probabilistic spiking neural network of Kajino (2021), "A Differentiable Point Process
    with Its Application to Spiking Neural Networks" (ICML), after Rezende & Gerstner (2014):
    neuron :math:`d` fires with conditional intensity

    .. math::

        \\lambda_d(t) = a\\, \\sigma(u_d(t)), \\qquad
        u_d(t) = b_d + \\sum_{l=1}^{L} \\sum_{d'} W_{l,d,d'}
            \\sum_{t' \\in J_{d'},\\, t' < t} e^{-(t - t')/\\tau_l},

    with :math:`\\sigma` the logistic sigmoid, bias :math:`b`, :math:`L` exponential basis
    functions with time constants :math:`\\tau_l` and weights :math:`W_{l,d,d'}` (from
    :math:`d'` to :math:`d`; negative for inhibition), and upper bound :math:`a`.

    The basis traces :math:`V_{l,d}(t) = \\sum_{d'} W_{l,d,d'} \\sum_{t'} e^{-(t-t')/\\tau_l}`
    decay by :math:`e^{-\\Delta/\\tau_l}` between events and jump by :math:`W_{l,:,d'}` (by
    :math:`W_l m` for a soft mark :math:`m`) at an event, an O(L D) update per event.

    **Sampling** is exact thinning (Lewis & Shedler, 1979; Ogata, 1981): candidates form a
    homogeneous Poisson process of rate :math:`\\bar\\lambda = a D \\ge \\sum_d \\lambda_d(t)`;
    a candidate at :math:`s` is a spike of neuron :math:`d` with probability
    :math:`\\lambda_d(s)/\\bar\\lambda` and is rejected otherwise. The loop runs over candidate
    index only; all sequences and neurons advance together.

    **log_prob** is :math:`\\sum_i \\log \\lambda_{d_i}(t_i^-) - \\sum_d \\int_0^T \\lambda_d`.
    The compensator has no closed form: between consecutive rows the potential is a sum of
    exponentials, and each such interval, cut by auxiliary rows into pieces of length at most
    ``max_step`` (default :math:`\\min_l \\tau_l`), is integrated by Gauss–Legendre quadrature of
    order ``quadrature_order`` :math:`q`. On a piece of length :math:`h` the error is
    :math:`\\frac{h^{2q+1} (q!)^4}{(2q+1) ((2q)!)^3} f^{(2q)}(\\xi)`; as the integrand's
    derivatives scale as :math:`\\tau_{\\min}^{-k}`, the default :math:`q = 8`,
    :math:`h \\le \\tau_{\\min}` gives a relative error of the compensator below
    :math:`10^{-8}` (tested in float64 against adaptive quadrature).

    :param torch.Tensor bias: :math:`b`, shape ``batch_shape + (D,)``.
    :param torch.Tensor weight: :math:`W`, shape ``batch_shape + (L, D, D)``.
    :param torch.Tensor time_constants: :math:`\\tau_l > 0`, shape ``batch_shape + (L,)``.
    :param float duration: observation window :math:`T`.
    :param upper_bound: :math:`a > 0`, a number or a tensor of shape ``batch_shape``.
    :param int capacity: rows of a realisation; defaults to a candidate count exceeded with
        probability below ~1e-9, so exact samples never overflow.
    :param int quadrature_order: Gauss–Legendre nodes per piece.
    :param float max_step: longest piece of the compensator quadrature.
    """

    arg_constraints = {
        "bias": constraints.independent(constraints.real, 1),
        "weight": constraints.independent(constraints.real, 3),
        "time_constants": constraints.independent(constraints.positive, 1),
        "upper_bound": constraints.positive,
    }

    def __init__(self, bias, weight, time_constants, duration, upper_bound=5.0, capacity=None,
                 quadrature_order=8, max_step=None, validate_args=None):
        bias = as_param(bias)
        weight = as_param(weight, bias)
        time_constants = as_param(time_constants, bias)
        upper_bound = as_param(upper_bound, bias)
        if bias.dim() < 1:
            raise ValueError(f"bias must have shape (..., D), got {tuple(bias.shape)}")
        num_neurons = bias.shape[-1]
        if time_constants.dim() < 1:
            raise ValueError(
                f"time_constants must have shape (..., L), got {tuple(time_constants.shape)}"
            )
        num_basis = time_constants.shape[-1]
        if weight.dim() < 3 or weight.shape[-3:] != (num_basis, num_neurons, num_neurons):
            raise ValueError(
                f"weight must have shape (..., L, D, D) with L={num_basis}, D={num_neurons}, "
                f"got {tuple(weight.shape)}"
            )
        try:
            batch_shape = broadcast_shape(
                bias.shape[:-1], weight.shape[:-3], time_constants.shape[:-1], upper_bound.shape
            )
        except ValueError:
            raise ValueError(
                f"bias {tuple(bias.shape)}, weight {tuple(weight.shape)}, time_constants "
                f"{tuple(time_constants.shape)} and upper_bound {tuple(upper_bound.shape)} have "
                "incompatible batch shapes"
            ) from None
        if int(quadrature_order) < 1:
            raise ValueError(f"quadrature_order must be >= 1, got {quadrature_order}")
        if max_step is not None and not float(max_step) > 0:
            raise ValueError(f"max_step must be positive, got {max_step}")
        self.bias, self.weight = bias, weight
        self.time_constants, self.upper_bound = time_constants, upper_bound
        self.num_basis = num_basis
        self.quadrature_order = int(quadrature_order)
        self.max_step = None if max_step is None else float(max_step)
        if capacity is None:
            if not bool(((upper_bound > 0) & torch.isfinite(upper_bound)).all()):
                raise ValueError("upper_bound must be positive and finite")
            bound = float(upper_bound.detach().max()) * num_neurons
            capacity = _poisson_capacity(bound * float(duration))
        super().__init__(batch_shape, num_neurons, duration, capacity, validate_args)

    def _params_like(self):
        return self.bias

    def _max_step(self):
        if self.max_step is not None:
            return self.max_step
        return float(self.time_constants.detach().min())

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(SpikingPointProcess, _instance)
        batch_shape = torch.Size(batch_shape)
        d, l = self.num_neurons, self.num_basis
        new.bias = self.bias.expand(batch_shape + (d,))
        new.weight = self.weight.expand(batch_shape + (l, d, d))
        new.time_constants = self.time_constants.expand(batch_shape + (l,))
        new.upper_bound = self.upper_bound.expand(batch_shape)
        new.num_basis = l
        new.quadrature_order = self.quadrature_order
        new.max_step = self.max_step
        PointProcess.__init__(new, batch_shape, d, self.duration, self.capacity,
                              validate_args=False)
        new._validate_args = self._validate_args
        return new

    # ------------------------------------------------------------------ likelihood
    def basis_states(self, times, marks):
        """
        Left limits :math:`V_{l,d}(t_r^-)` of the basis traces at sorted rows, and the row
        contributions :math:`x_{l,r,d} = (W_l m_r)_d`; both of shape ``batch + (L, R, D)``.
        """
        x = torch.matmul(marks.unsqueeze(-3), self.weight.transpose(-1, -2))
        return exp_decay_scan(times, x, 1.0 / self.time_constants), x

    def _row_terms(self, times, marks):
        a = self.upper_bound.unsqueeze(-1).unsqueeze(-1)
        bias = self.bias.unsqueeze(-2)
        h, x = self.basis_states(times, marks)
        log_rate = torch.log(a) + F.logsigmoid(bias + h.sum(-3))
        # potential inside interval r at node s: b + sum_l (h + x)_{l,r} exp(-s dt_r / tau_l)
        start = (h + x)[..., :-1, :]  # (..., L, R-1, D)
        dt = times[..., 1:] - times[..., :-1]  # (..., R-1)
        nodes, weights = _gauss_legendre(self.quadrature_order, dt)
        tau = self.time_constants.unsqueeze(-1).unsqueeze(-1)  # batch + (L, 1, 1)
        decay = torch.exp(-(dt.unsqueeze(-2).unsqueeze(-1) * nodes) / tau)  # (..., L, R-1, Q)
        # one batched (Q, L) @ (L, D) product per interval: u_{r,q,d} of shape (..., R-1, Q, D)
        u = torch.matmul(decay.movedim(-3, -1), start.movedim(-3, -2)) + bias.unsqueeze(-2)
        rate = torch.sigmoid(u)  # lambda / a
        integral = torch.matmul(weights, rate) * (a * dt.unsqueeze(-1))
        return log_rate, integral

    # ------------------------------------------------------------------ sampling
    def _flat_params(self, shape):
        """Parameters broadcast to ``shape`` and flattened to a leading ``N`` dimension."""
        d, l = self.num_neurons, self.num_basis
        n = shape.numel()
        bias = self.bias.expand(shape + (d,)).reshape(n, d)
        a = self.upper_bound.expand(shape).reshape(n)
        rate = (1.0 / self.time_constants).expand(shape + (l,)).reshape(n, l)
        if self.weight.shape[:-3].numel() == 1:
            weight = self.weight.reshape(l, d, d)
        else:
            weight = self.weight.expand(shape + (l, d, d)).reshape(n, l, d, d)
        return bias, weight, rate, a

    def _candidates(self, n, bound, like):
        """Homogeneous Poisson candidates at rate ``bound`` (shape ``(N,)``) on [0, T]."""
        counts = torch.poisson(bound * self.duration)
        k = max(int(counts.max()) if counts.numel() else 0, 1)
        return uniform_order_statistics(counts, k, self.duration, like)

    @staticmethod
    def _weight_column(weight, label):
        """:math:`W_{:, :, d}` for a label per sequence: shape ``(N, L, D)``."""
        if weight.dim() == 3:
            return weight[:, :, label].permute(2, 0, 1)
        rows = torch.arange(weight.shape[0], device=weight.device)
        return weight[rows, :, :, label]

    @staticmethod
    def _jump_table(weight, n):
        """
        :meth:`_weight_column` for every label at once, plus an all-zero entry for the rejection
        label ``D``: shape ``(D + 1, L, D)`` for shared weights, else ``(N (D + 1), L, D)``
        (entry ``k (D + 1) + label`` for sequence ``k``).
        """
        if weight.dim() == 3:
            table = weight.permute(2, 0, 1)
        else:
            table = weight.permute(0, 3, 1, 2)  # (N, D, L, D)
        table = torch.cat([table, table.new_zeros(table.shape[:-3] + (1,) + table.shape[-2:])], -3)
        return table.reshape((-1,) + table.shape[-2:])

    def sample(self, sample_shape=torch.Size()):
        """
        Thinning over the candidates of :meth:`_candidates`. The decay factors of the basis
        traces between consecutive candidates and the uniforms are computed for all candidates
        before the loop; each step then decays the traces, draws the label by a ``searchsorted``
        of the uniform in the cumulated intensity (label ``D`` = rejected) and adds the jump of
        that label (zero for ``D``). Candidates past the count of their sequence sit at
        :math:`T` after all real ones, so the loop ignores them and they are masked afterwards.
        """
        shape = self._extended_shape(sample_shape)[:-2]
        d, l = self.num_neurons, self.num_basis
        with torch.no_grad():
            bias, weight, rate, a = self._flat_params(shape)
            n = bias.shape[0]
            bound = a * d
            cand, valid = self._candidates(n, bound, bias)
            k = cand.shape[-1]
            table = self._jump_table(weight, n)
            offset = None
            if table.shape[0] != d + 1:
                offset = torch.arange(n, device=bias.device) * (d + 1)
            gaps = torch.diff(cand, dim=-1, prepend=cand.new_zeros(n, 1))  # (N, K)
            # lambda_d / a = sigmoid(u_d) is compared with U * D (bound / a = D)
            uniforms = torch.rand(k, n, 1, dtype=bias.dtype, device=bias.device) * d
            state = bias.new_zeros(n, l, d)
            labels = []
            with sequential_threads(state.numel()):
                for start in range(0, k, 256):
                    stop = min(start + 256, k)
                    # decay factors of this chunk of candidates, (chunk, N, L, 1)
                    decay = torch.exp(-gaps[:, start:stop].t().unsqueeze(-1) * rate).unsqueeze(-1)
                    for dec, u in zip(decay.unbind(0), uniforms[start:stop].unbind(0)):
                        state.mul_(dec)
                        potential = state.sum(-2) if l > 1 else state[:, 0]
                        cum = torch.sigmoid(potential + bias).cumsum_(-1)
                        label = torch.searchsorted(cum, u).squeeze(-1)
                        index = label if offset is None else label + offset
                        state.add_(table.index_select(0, index))
                        labels.append(label)
                # the O(N K) post-processing is a few passes: not worth threads either
                labels = torch.stack(labels, -1)
                accepted = (labels < d) & valid
                return self._compact(cand, accepted, labels.clamp(max=d - 1), shape)
