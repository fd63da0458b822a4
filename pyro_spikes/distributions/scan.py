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
overflows), and a carried state links the blocks. The Python loop runs over blocks only.
"""

import torch

__all__ = ["exp_decay_scan"]

# Upper bound on the number of entries of one block's decay matrices (all batch elements).
_BLOCK_BUDGET = 1 << 22


# Work per row is ~ b (batch G (1 + F / 64)) element-ops, overhead per block is fixed: the
# block size minimising their sum is ~ sqrt(_BLOCK_WORK / (batch G (1 + F / 64))), measured
# on CPU for batch G from 1 to 200 and F from 1 to 256.
_BLOCK_WORK = 1 << 15


def _block_size(batch_numel, num_groups, num_rows, block_size=None, num_features=1):
    if block_size is not None:
        return max(1, min(int(block_size), num_rows))
    size = max(1, batch_numel * num_groups)
    b = min(_BLOCK_BUDGET / size, _BLOCK_WORK / (size * (1.0 + num_features / 64.0))) ** 0.5
    return max(8, min(int(b), 128, num_rows))


def exp_decay_scan(times, inputs, rates, block_size=None):
    """
    Left-limit states of exponentially decaying traces at every row.

    :param torch.Tensor times: sorted row times, shape ``batch + (R,)``.
    :param torch.Tensor inputs: row contributions :math:`x`, shape ``batch + (G, R, F)``:
        ``G`` decay groups, ``F`` features sharing each group's decay.
    :param torch.Tensor rates: decay rates :math:`r_g > 0`, shape broadcastable to
        ``batch + (G,)``.
    :param int block_size: rows per parallel block (default: chosen from a memory budget).
    :returns: :math:`h(t_i^-) = \\sum_{j<i} e^{-r_g (t_i - t_j)} x_{g,j}` of shape
        ``batch + (G, R, F)``.
    """
    num_rows = times.shape[-1]
    num_groups = inputs.shape[-3]
    batch_shape = torch.broadcast_shapes(times.shape[:-1], inputs.shape[:-3], rates.shape[:-1])
    b = _block_size(batch_shape.numel(), num_groups, num_rows, block_size, inputs.shape[-1])
    r = rates.unsqueeze(-1).unsqueeze(-1)  # batch + (G, 1, 1)
    strict_lower = torch.ones(b, b, dtype=torch.bool, device=times.device).tril(-1)
    outs = []
    carry = None
    t_prev = None
    for start in range(0, num_rows, b):
        stop = min(start + b, num_rows)
        n = stop - start
        t = times[..., start:stop]
        x = inputs[..., start:stop, :]
        diff = (t.unsqueeze(-1) - t.unsqueeze(-2)).clamp(min=0).unsqueeze(-3)  # batch+(1,n,n)
        decay = torch.exp(-r * diff) * strict_lower[:n, :n]
        h = torch.matmul(decay, x)
        if carry is not None:
            gap = (t - t_prev.unsqueeze(-1)).unsqueeze(-2).unsqueeze(-1)  # batch+(1,n,1)
            h = h + torch.exp(-r * gap) * carry.unsqueeze(-2)
        outs.append(h)
        carry = h[..., -1, :] + x[..., -1, :]
        t_prev = t[..., -1]
    return torch.cat(outs, dim=-2)
