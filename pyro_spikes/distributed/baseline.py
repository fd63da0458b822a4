"""
A per-sequence decaying-average baseline for score-function (REINFORCE) gradients that stays
identical on every worker of data-parallel SVI.
"""

import torch
import torch.distributed as dist

__all__ = ["SequenceBaseline"]


def _world_size():
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _all_gather_rows(index, cost):
    """Concatenate ``(index, cost)`` of every rank (minibatches may differ in length)."""
    world = _world_size()
    if world == 1:
        return index, cost
    n = torch.tensor([index.numel()], device=index.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    longest = int(max(s.item() for s in sizes))
    pad_index = index.new_full((longest,), -1)
    pad_index[: index.numel()] = index
    pad_cost = cost.new_zeros(longest)
    pad_cost[: cost.numel()] = cost
    indices = [torch.empty_like(pad_index) for _ in range(world)]
    costs = [torch.empty_like(pad_cost) for _ in range(world)]
    dist.all_gather(indices, pad_index)
    dist.all_gather(costs, pad_cost)
    index, cost = torch.cat(indices), torch.cat(costs)
    keep = index >= 0
    return index[keep], cost[keep]


class SequenceBaseline(torch.nn.Module):
    """
    Decaying average of each sequence's downstream cost,
    :math:`b_i \\leftarrow \\beta\\, b_i + (1 - \\beta)\\, c_i` at every visit of sequence
    :math:`i` (:math:`b_i = c_i` at the first), used as the score-function baseline of the
    next visit.

    The baseline of a step depends only on past steps, never on the current sample, so the
    gradient stays unbiased (Williams, 1992; Mnih & Gregor, 2014), and tracking each sequence
    separately, by its index in the data set, fits sequences of very different likelihoods
    (long and short recordings, busy and quiet neurons).

    Under DDP, Pyro's own ``use_decaying_avg_baseline`` is a poor fit: it keeps one average per
    *position in the minibatch* in each process's param store, so with shuffled minibatches it
    averages unrelated sequences, and every worker keeps a different average (the workers'
    gradients are then computed with different baselines, and the run depends on the number of
    workers). Here the statistic is keyed by sequence and, after every step, the new costs
    of all workers are all-gathered (one ``all_gather`` of the minibatch's indices and costs)
    and applied on every worker, so every worker holds the same baseline: the one a single
    process would hold after the same global batches. The averages are buffers of the module
    (float64), saved in checkpoints.

    :param int num_sequences: :math:`N`, sequences in the data set.
    :param float beta: :math:`\\beta \\in [0, 1)`.
    """

    def __init__(self, num_sequences, beta=0.9):
        super().__init__()
        if isinstance(num_sequences, bool) or not isinstance(num_sequences, int) \
                or num_sequences < 1:
            raise ValueError(f"num_sequences must be a positive integer, got {num_sequences!r}")
        if not 0.0 <= float(beta) < 1.0:
            raise ValueError(f"beta must lie in [0, 1), got {beta!r}")
        self.beta = float(beta)
        self.register_buffer("average", torch.zeros(num_sequences, dtype=torch.float64))
        self.register_buffer("visits", torch.zeros(num_sequences, dtype=torch.float64))

    def _check_index(self, index):
        if not isinstance(index, torch.Tensor) or index.dim() != 1 \
                or index.dtype.is_floating_point:
            raise ValueError("index must be a 1-d integer tensor")
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= self.average.numel()):
            raise ValueError(f"index must lie in [0, {self.average.numel()})")

    def forward(self, index):
        """The baselines :math:`b_i` of the sequences ``index`` (0 before a first visit)."""
        self._check_index(index)
        return self.average[index.to(self.average.device)]

    @torch.no_grad()
    def update(self, index, cost):
        """
        Fold the costs ``cost`` (unscaled, one per sequence of ``index``) of this step into the
        averages, after gathering every worker's ``(index, cost)`` when
        :mod:`torch.distributed` is initialised (a collective: call it on every rank).
        """
        self._check_index(index)
        cost = torch.as_tensor(cost).to(device=self.average.device, dtype=torch.float64)
        if cost.shape != index.shape:
            raise ValueError(f"cost must have shape {tuple(index.shape)}, got "
                             f"{tuple(cost.shape)}")
        if not torch.isfinite(cost).all():
            raise ValueError("cost must be finite")
        index, cost = _all_gather_rows(index.to(self.average.device), cost)
        old = self.average[index]
        seen = self.visits[index] > 0
        self.average[index] = torch.where(seen, self.beta * old + (1 - self.beta) * cost, cost)
        self.visits[index] += 1
