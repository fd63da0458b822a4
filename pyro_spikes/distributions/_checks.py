"""
Input checks shared by the public entry points (see the "Guarantees" page of the docs).

Each helper raises :class:`ValueError` (or :class:`TypeError`) whose message starts with the
name of the offending argument, so that every process reports bad input the same way, whether
or not ``validate_args`` is on. The checks that guard memory and termination
(:func:`check_allocation`, :func:`max_candidates`, :func:`check_sampling_params`) run always:
they cost one reduction per call, against the sampling loop they protect.
"""

import math
import os

import torch

__all__ = [
    "check_allocation",
    "check_num_neurons",
    "check_finite",
    "check_same_dtype",
    "check_sampling_params",
    "max_candidates",
    "memory_limit",
    "reduce_or",
]


def check_num_neurons(name, shape, dim=-1):
    """The number of neurons ``shape[dim]`` of the argument ``name``, which must be >= 1."""
    if len(shape) < -dim:
        raise ValueError(f"{name} must have at least {-dim} dimensions, got shape {tuple(shape)}")
    d = shape[dim]
    if d < 1:
        raise ValueError(f"{name} must describe at least one neuron (D >= 1), got shape "
                         f"{tuple(shape)}")
    return d


def reduce_or(x, how, default):
    """``float(x.max())`` (``how="max"``) or ``x.min()`` of a tensor, ``default`` if it is empty
    (torch refuses to reduce an empty tensor: a batch of size zero is legal)."""
    if not x.numel():
        return float(default)
    return float(x.max() if how == "max" else x.min())


def memory_limit(device=None):
    """
    Bytes that one allocation on ``device`` can never exceed: the device's total memory (GPU),
    or the machine's physical memory (CPU). A request above it is refused up front instead of
    failing inside the allocator (or swapping for minutes).
    """
    device = torch.device("cpu" if device is None else device)
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_properties(device).total_memory
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return 1 << 40


def check_allocation(name, numel, dtype, device=None, what="the result"):
    """
    Raise a :class:`ValueError` naming ``name`` when ``numel`` entries of ``dtype`` (on
    ``device``) cannot fit in memory; ``what`` says what would have been allocated.
    """
    numel = float(numel)
    itemsize = torch.empty((), dtype=dtype).element_size()
    need = numel * itemsize
    if not math.isfinite(need) or need > memory_limit(device):
        raise ValueError(
            f"{name}: {what} would need {numel:.3g} entries ({need / 2**30:.3g} GiB), more than "
            f"the memory of the device ({memory_limit(device) / 2**30:.3g} GiB)"
        )


def check_finite(name, x):
    """Raise a :class:`ValueError` naming ``name`` if the tensor ``x`` has NaN or inf entries."""
    if isinstance(x, torch.Tensor) and x.numel() and x.is_floating_point():
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} must be finite, got NaN or infinite entries")
    return x


def check_same_dtype(**tensors):
    """
    Raise a :class:`TypeError` when the named floating-point tensors do not share one dtype
    and device (torch would otherwise fail deep inside a matrix product, naming neither).
    """
    ref_name, ref = None, None
    for name, x in tensors.items():
        if not isinstance(x, torch.Tensor):
            continue
        if not (x.is_floating_point() or x.is_complex()):
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
        if ref is None:
            ref_name, ref = name, x
        elif x.dtype != ref.dtype or x.device != ref.device:
            raise TypeError(
                f"{name} has dtype {x.dtype} on {x.device} but {ref_name} has {ref.dtype} on "
                f"{ref.device}: pass all parameters with one dtype and device"
            )


def check_sampling_params(**tensors):
    """
    The parameters a sampling loop runs on, checked whatever ``validate_args`` says: each
    ``name=(tensor, kind)`` with kind ``"finite"``, ``"nonnegative"`` or ``"positive"`` (finite
    in every case). Invalid values would otherwise make the loop run forever (a negative decay
    or an infinite rate never lets time pass) or allocate without bound.
    """
    for name, (x, kind) in tensors.items():
        x = x.detach()
        if not x.numel():
            continue
        if kind == "finite":
            ok = torch.isfinite(x).all()
        elif kind == "nonnegative":
            ok = (torch.isfinite(x) & (x >= 0)).all()
        elif kind == "positive":
            ok = (torch.isfinite(x) & (x > 0)).all()
        else:  # pragma: no cover - programming error
            raise AssertionError(kind)
        if not bool(ok):
            raise ValueError(f"{name} must be {'' if kind == 'finite' else kind + ' and '}"
                             "finite to sample")


def max_candidates(capacity):
    """
    Hard bound on the candidates per sequence of a thinning loop whose candidate count is not
    fixed in advance (Ogata's thinning of a Hawkes process): generous for any valid process
    (every candidate is accepted with probability bounded away from zero except right after
    large jumps, whose decay costs O(log) candidates each), so reaching it means the parameters
    are invalid (e.g. a negative decay with ``validate_args=False``) and the loop is stopped.
    """
    return 64 * (int(capacity) + 16)
