"""
Exponential-kernel state recursions, evaluated in parallel blocks.

For exponential spike-response kernels the history enters the intensity only through states

.. math::

    h_g(t) = \\sum_{j:\\, t_j < t} e^{-r_g (t - t_j)}\\, x_{g,j},

one per decay rate :math:`r_g`, with :math:`x_{g,j}` the (projected) contribution of row
:math:`j`. Sequentially this is the O(1)-per-event recursion
:math:`h_g(t_i^-) = e^{-r_g (t_i - t_{i-1})} (h_g(t_{i-1}^-) + x_{g,i-1})`. On a batch of
realisations :func:`exp_decay_scan` evaluates it in blocks of ``b`` rows: inside a block the
states are one matrix product with the lower-triangular decay matrix
:math:`M_{ik} = e^{-r_g (t_i - t_k)}\\,[k < i]` (built from time differences, so it never
overflows), and the blocks' totals are carried across blocks by the same scan over the block
ends, recursively: no Python loop over rows or blocks.
"""

import torch
from pyro.distributions.util import broadcast_shape
from pyro.ops.provenance import detach_provenance, get_provenance, track_provenance

from pyro_spikes.distributions import kernels

__all__ = ["exp_decay_scan"]


def _block_size(batch_numel, num_groups, num_rows, block_size=None):
    # One level holds batch * G * R * b decay factors and costs O(R b) work; small blocks (16,
    # measured best on CPU from 300 to 5000 rows) keep both low at a depth of log_16 R.
    if block_size is not None:
        return max(2, int(block_size))
    b = int(_BUDGET / max(1, batch_numel * num_groups * num_rows))
    return max(4, min(b, 16))


_BUDGET = 1 << 24


def _dense(times, inputs, rates):
    """All rows in one block: the lower-triangular decay matrix times the inputs."""
    r = rates.unsqueeze(-1).unsqueeze(-1)  # batch + (G, 1, 1)
    n = times.shape[-1]
    diff = (times.unsqueeze(-1) - times.unsqueeze(-2)).clamp(min=0).unsqueeze(-3)
    lower = torch.ones(n, n, dtype=torch.bool, device=times.device).tril(-1)
    return torch.matmul(torch.exp(-r * diff) * lower, inputs)


def exp_decay_scan(times, inputs, rates, block_size=None, initial=None):
    """
    Left-limit states of exponentially decaying traces at every row.

    The rows are cut into blocks of ``b``. Inside every block the states are one product with
    the block's lower-triangular decay matrix; each block's total, decayed to its last row, is
    carried into the following blocks by the same scan applied to the block ends (recursively,
    so the depth is :math:`O(\\log_b R)` and no Python loop runs over rows or blocks).

    :param torch.Tensor times: sorted row times, shape ``batch + (R,)``.
    :param torch.Tensor inputs: row contributions :math:`x`, shape ``batch + (G, R, F)``:
        ``G`` decay groups, ``F`` features sharing each group's decay.
    :param torch.Tensor rates: decay rates :math:`r_g > 0`, shape broadcastable to
        ``batch + (G,)``.
    :param int block_size: rows per block of the PyTorch scan (default 16, less for very large
        inputs). On the CPU, without ``block_size``, the compiled recursion
        (:mod:`~pyro_spikes.distributions.kernels`) computes the same states, O(1) per row, and
        its gradient by the reverse recursion (higher derivatives through the blocked scan).
    :param torch.Tensor initial: the states' left limits :math:`h_0` at the first row,
        ``batch + (G, F)`` (default zero): the history before the rows, e.g. carried from the
        previous chunk of a long sequence, decays into every row,
        :math:`e^{-r_g (t_i - t_0)} h_{0,g}`.
    :returns: :math:`h(t_i^-) = e^{-r_g (t_i - t_0)} h_{0,g} + \\sum_{j<i} e^{-r_g (t_i - t_j)}
        x_{g,j}` of shape ``batch + (G, R, F)``.
    """
    h = _scan(times, inputs, rates, block_size)
    if initial is None:
        return h
    since = (times - times[..., :1]).unsqueeze(-2) * rates.unsqueeze(-1)  # batch + (G, R)
    return h + torch.exp(-since).unsqueeze(-1) * initial.unsqueeze(-2)


def _scan(times, inputs, rates, block_size):
    """:func:`exp_decay_scan` without ``initial``: the compiled recursion or the blocked scan."""
    kernels._check_scan(times, inputs, rates)
    if (
        block_size is None
        and kernels.compiled_for(inputs)
        and times.dtype == rates.dtype == inputs.dtype
        and times.device == rates.device == inputs.device
    ):
        # Pyro's TraceGraph_ELBO tracks which sample sites a value depends on with
        # ProvenanceTensor; a custom autograd Function would drop the graph of such a tensor,
        # so it runs on the plain tensors and the provenance is put back on the result
        provenance = get_provenance((times, inputs, rates))
        args = detach_provenance((times, inputs, rates))
        if all(type(v) in (torch.Tensor, torch.nn.Parameter) for v in args):
            out = kernels.exp_decay_scan_compiled(*args, _blocked_scan)
            return track_provenance(out, provenance) if provenance else out
    return _blocked_scan(times, inputs, rates, block_size)


def _blocked_scan(times, inputs, rates, block_size=None):
    num_rows = times.shape[-1]
    # pyro's broadcast_shape: torch.broadcast_shapes costs ~0.2 ms a call
    batch_shape = torch.Size(broadcast_shape(times.shape[:-1], inputs.shape[:-3],
                                             rates.shape[:-1]))
    b = _block_size(batch_shape.numel(), inputs.shape[-3], num_rows, block_size)
    if num_rows <= b:
        return _dense(times, inputs, rates)
    nb = -(-num_rows // b)
    pad = nb * b - num_rows
    if pad:
        times = torch.cat([times, times[..., -1:].expand(times.shape[:-1] + (pad,))], -1)
        inputs = torch.cat([inputs, inputs.new_zeros(inputs.shape[:-2] + (pad, inputs.shape[-1]))],
                           -2)
    f = inputs.shape[-1]
    t = times.reshape(times.shape[:-1] + (nb, b))
    x = inputs.reshape(inputs.shape[:-2] + (nb, b, f))  # batch + (G, nb, b, F)
    r = rates.unsqueeze(-1).unsqueeze(-1)  # batch + (G, 1, 1)
    # within blocks
    h = _dense(t, x.transpose(-4, -3), rates.unsqueeze(-2)).transpose(-4, -3)
    # block totals at each block's last row (inclusive), carried across blocks
    t_end = t[..., -1]  # batch + (nb,)
    to_end = torch.exp(-r * (t_end.unsqueeze(-1) - t).unsqueeze(-3))  # batch + (G, nb, b)
    totals = (to_end.unsqueeze(-1) * x).sum(-2)  # batch + (G, nb, F)
    carry = _blocked_scan(t_end, totals, rates, block_size) + totals  # right after block ends
    carry = torch.cat([torch.zeros_like(carry[..., :1, :]), carry[..., :-1, :]], -2)
    start = torch.cat([t[..., :1, :1], t_end[..., :-1].unsqueeze(-1)], -2)  # previous block end
    gap = (t - start).unsqueeze(-3)  # batch + (1, nb, b)
    h = h + torch.exp(-r * gap).unsqueeze(-1) * carry.unsqueeze(-2)
    h = h.reshape(h.shape[:-3] + (nb * b, f))
    return h[..., :num_rows, :]
