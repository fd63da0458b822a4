"""
Counter-based seeding of the random streams of data-parallel SVI.

Every optimisation step draws its noise from a stream whose seed is a hash of the run's seed,
the step and either the rank (each worker's own noise) or the sequence (each sequence's own
noise, independent of which worker holds it). The noise of a step is then a function of the
step counter, which a checkpoint stores, so a resumed run draws the same noise as the
uninterrupted one, and the global random state of the program is left as it was.
"""

from contextlib import contextmanager

import torch

__all__ = ["mix_seed", "seeded"]

_MASK = (1 << 64) - 1


def _splitmix64(x):
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def mix_seed(*values):
    """
    A seed in :math:`[0, 2^{63})` that hashes the integers ``values`` in order (SplitMix64
    finaliser applied after each value; Steele et al., 2014, "Fast splittable pseudorandom
    number generators"), so that nearby tuples such as ``(seed, step, 0)`` and
    ``(seed, step, 1)`` give unrelated streams.
    """
    h = 0
    for v in values:
        if isinstance(v, torch.Tensor):
            v = v.item()
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"mix_seed takes integers, got {type(v).__name__}")
        h = _splitmix64(h ^ (v & _MASK))
    return h >> 1


@contextmanager
def seeded(seed, device="cpu"):
    """
    Run a block with torch's generator of ``device`` (and the CPU's) seeded by ``seed``,
    restoring their states afterwards (:func:`torch.random.fork_rng`).
    """
    device = torch.device(device)
    if device.type == "cpu":
        devices, device_type = [], "cuda"
    else:
        index = device.index
        if index is None and device.type == "cuda":
            index = torch.cuda.current_device()
        devices, device_type = [0 if index is None else index], device.type
    with torch.random.fork_rng(devices=devices, device_type=device_type):
        torch.manual_seed(int(seed))  # seeds the CPU and every accelerator generator
        yield
