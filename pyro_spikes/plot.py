"""
Plots of spike trains, intensities, goodness-of-fit and training curves.

Every function takes the library's ``events`` tensors (see :mod:`pyro_spikes.spikes`), draws
on a matplotlib :class:`~matplotlib.axes.Axes` (a new figure when ``ax`` is ``None``) and
returns that Axes. matplotlib is imported lazily, so ``import pyro_spikes`` works without it;
install it with ``pip install matplotlib``.
"""

import math

import torch

from pyro_spikes.diagnostics import ks_statistic, rescaled_intervals

__all__ = ["raster", "intensity_plot", "qq_plot", "loss_plot", "ks_band"]

#: Asymptotic 95% quantile of the Kolmogorov distribution: the KS band is
#: :math:`\pm 1.36 / \sqrt{n}`.
KS_95 = 1.36


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - exercised only without matplotlib
        raise ImportError(
            "pyro_spikes.plot needs matplotlib; install it with `pip install matplotlib`"
        ) from e
    return plt


def _axes(ax):
    if ax is None:
        _, ax = _pyplot().subplots()
    else:
        _pyplot()
    return ax


def _single_train(events, name="events"):
    """``events`` as a detached CPU float tensor of shape ``(capacity, 1 + D)``."""
    if not isinstance(events, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(events).__name__}")
    if events.dim() != 2 or events.shape[-1] < 2:
        raise ValueError(
            f"{name} must be one spike train of shape (capacity, 1 + D), got "
            f"{tuple(events.shape)}; index the batch first, e.g. events[0]"
        )
    return events.detach().cpu().double()


def _neuron_list(neurons, num_neurons):
    if neurons is None:
        return list(range(num_neurons))
    neurons = [int(d) for d in neurons]
    bad = [d for d in neurons if not 0 <= d < num_neurons]
    if bad:
        raise ValueError(f"neurons {bad} out of range for D={num_neurons}")
    return neurons


def _colors(colors, num, name="colors"):
    if colors is None:
        return [f"C{d % 10}" for d in range(num)]
    if isinstance(colors, str):
        return [colors] * num
    colors = list(colors)
    if len(colors) != num:
        raise ValueError(f"{name} must have one entry per neuron ({num}), got {len(colors)}")
    return colors


def raster(events, ax=None, neuron_names=None, colors=None, neurons=None, duration=None,
           linewidth=1.0):
    """
    Raster plot: one row per neuron, a vertical tick per spike.

    Soft marks (relaxed spike trains) are drawn with opacity equal to the mark mass
    :math:`m_{i,d}`, so a row with mark :math:`(0.3, 0.7)` gives a faint tick for neuron 0 and
    a darker one for neuron 1; exact spikes are opaque and padding rows invisible.

    :param torch.Tensor events: one spike train, shape ``(capacity, 1 + D)``.
    :param ax: matplotlib Axes to draw on (default: a new figure).
    :param list neuron_names: tick labels, one per plotted neuron.
    :param colors: one matplotlib colour, or one per plotted neuron.
    :param list neurons: indices of the neurons to plot (default: all), top to bottom.
    :param float duration: x-limit :math:`T` (default: the largest time in ``events``, which
        is :math:`T` when there is a padding row).
    :returns: the Axes, holding one :class:`~matplotlib.collections.LineCollection` per neuron.
    """
    ev = _single_train(events)
    ax = _axes(ax)  # raises the install hint if matplotlib is missing
    from matplotlib.colors import to_rgba
    num_neurons = ev.shape[-1] - 1
    neurons = _neuron_list(neurons, num_neurons)
    colors = _colors(colors, len(neurons))
    if neuron_names is not None and len(neuron_names) != len(neurons):
        raise ValueError(
            f"neuron_names must have one entry per plotted neuron ({len(neurons)}), "
            f"got {len(neuron_names)}"
        )
    times = ev[:, 0]
    for row, (d, color) in enumerate(zip(neurons, colors)):
        mass = ev[:, 1 + d]
        keep = mass > 0
        rgba = torch.tensor(to_rgba(color), dtype=torch.float64).expand(int(keep.sum()), 4).clone()
        rgba[:, 3] = mass[keep].clamp(max=1.0)
        y = len(neurons) - 1 - row
        ax.vlines(times[keep].numpy(), y - 0.4, y + 0.4, colors=rgba.numpy(),
                  linewidth=linewidth, label=None if neuron_names is None else neuron_names[row])
    labels = list(neuron_names) if neuron_names is not None else [str(d) for d in neurons]
    # label every row of a small raster; about ten evenly spaced rows of a large one
    step = 1 if len(neurons) <= 20 else -(-len(neurons) // 10)
    rows = list(range(0, len(neurons), step))[::-1]  # bottom to top
    ax.set_yticks([len(neurons) - 1 - r for r in rows])
    ax.set_yticklabels([labels[r] for r in rows])
    ax.set_ylim(-0.6, len(neurons) - 0.4)
    if duration is not None:
        t_max = float(duration)
    else:
        t_max = float(times.max()) if times.numel() else 1.0
    ax.set_xlim(0.0, t_max if t_max > 0 else 1.0)
    ax.set_xlabel("time")
    ax.set_ylabel("neuron")
    return ax


def _potential(process, events, t):
    """Membrane potential :math:`u_d(t^-)` of a process with exponential basis states."""
    if not hasattr(process, "basis_states") or not hasattr(process, "bias"):
        raise ValueError(
            f"potential=True needs a process with a membrane potential (e.g. "
            f"SpikingPointProcess), got {type(process).__name__}"
        )
    times, marks, _, query_pos = process._rows(events, query=t)
    h, _ = process.basis_states(times, marks)
    u = process.bias.unsqueeze(-2) + h.sum(-3)
    idx = query_pos.unsqueeze(-1).expand(query_pos.shape + (process.num_neurons,))
    return u.gather(-2, idx)


def intensity_plot(process, events, num_points=500, ax=None, neurons=None, potential=False,
                   colors=None, spikes=True):
    """
    Conditional intensity :math:`\\lambda_d(t^- \\mid \\mathcal H_t)` of one realisation on a
    grid of ``num_points`` times in :math:`[0, T]`, from ``process.intensity(events, t)``,
    with the spikes of each plotted neuron as ticks along the bottom of the axes.

    Between spikes a Hawkes intensity decays exponentially and jumps by
    :math:`\\alpha_{id}\\beta_{id}` at a spike of neuron :math:`d`; the grid points are left
    limits, so a finer grid shows the jumps more sharply.

    :param process: a :class:`~pyro_spikes.distributions.PointProcess` with empty batch shape
        (or one that broadcasts with a single train).
    :param torch.Tensor events: one spike train, shape ``(capacity, 1 + D)``.
    :param int num_points: grid size.
    :param list neurons: neurons to plot (default: all).
    :param bool potential: plot the membrane potential :math:`u_d(t)` instead of the intensity
        (processes with ``basis_states`` and ``bias``, i.e.
        :class:`~pyro_spikes.distributions.SpikingPointProcess`).
    :param bool spikes: draw the spike ticks.
    :returns: the Axes, with one line per plotted neuron.
    """
    ev = _single_train(events)
    num_points = int(num_points)
    if num_points < 2:
        raise ValueError(f"num_points must be at least 2, got {num_points}")
    if ev.shape[-1] - 1 != process.num_neurons:
        raise ValueError(
            f"events has {ev.shape[-1] - 1} neurons but the process has {process.num_neurons}"
        )
    ax = _axes(ax)
    neurons = _neuron_list(neurons, process.num_neurons)
    colors = _colors(colors, len(neurons))
    like = process._params_like()
    t = torch.linspace(0.0, process.duration, num_points, dtype=like.dtype, device=like.device)
    ev_p = events.detach().to(dtype=like.dtype, device=like.device)
    with torch.no_grad():
        if potential:
            y = _potential(process, ev_p, t)
        else:
            y = process.intensity(ev_p, t)
    if y.dim() != 2:
        raise ValueError(
            f"the process has batch_shape {tuple(process.batch_shape)}; intensity_plot needs a "
            "single process (index or slice its parameters)"
        )
    y = y.cpu().double().numpy()
    tn = t.cpu().double().numpy()
    for d, color in zip(neurons, colors):
        ax.plot(tn, y[:, d], color=color, label=f"neuron {d}")
    if spikes:
        from matplotlib.transforms import blended_transform_factory

        trans = blended_transform_factory(ax.transData, ax.transAxes)
        height = 0.06 / max(1, len(neurons))
        for row, (d, color) in enumerate(zip(neurons, colors)):
            mass = ev[:, 1 + d]
            keep = mass > 0
            lo = row * height
            ax.vlines(ev[keep, 0].numpy(), lo, lo + height * 0.9, colors=color,
                      transform=trans, linewidth=1.0)
    ax.set_xlim(0.0, process.duration)
    ax.set_xlabel("time")
    ax.set_ylabel("potential $u_d(t)$" if potential else r"intensity $\lambda_d(t)$")
    ax.legend(loc="upper right", fontsize="small")
    return ax


def ks_band(n, level=KS_95):
    """Half-width :math:`1.36/\\sqrt{n}` of the asymptotic 95% Kolmogorov–Smirnov band."""
    return level / math.sqrt(n)


def qq_plot(process, events, ax=None, kind="qq", per_neuron=False, color="C0"):
    """
    Time-rescaling goodness-of-fit plot (Brown, Barbieri, Ventura, Kass & Frank, 2002).

    The rescaled intervals :math:`z_k = \\Lambda_d(t_k) - \\Lambda_d(t_{k-1})` from
    :func:`pyro_spikes.diagnostics.rescaled_intervals` are i.i.d. Exp(1) under the model. With
    :math:`z_{(1)} \\le \\dots \\le z_{(n)}` sorted and :math:`b_k = (k - \\tfrac12)/n`:

    * ``kind="qq"``: :math:`z_{(k)}` against the Exp(1) quantiles :math:`-\\log(1 - b_k)`,
      with the 95% KS band :math:`F^{-1}(b_k \\pm 1.36/\\sqrt n)` mapped through the Exp(1)
      quantile function :math:`F^{-1}(p) = -\\log(1 - p)`;
    * ``kind="ks"``: the KS plot of Brown et al., :math:`u_{(k)} = 1 - e^{-z_{(k)}}` against
      :math:`b_k`, with the band :math:`b_k \\pm 1.36/\\sqrt n`.

    The first line of the Axes is the data, the second the diagonal and the next two the band.

    :param process: the fitted :class:`~pyro_spikes.distributions.PointProcess`.
    :param torch.Tensor events: spike trains, shape ``batch + (capacity, 1 + D)`` (intervals
        of all sequences and neurons are pooled unless ``per_neuron``).
    :param str kind: ``"qq"`` or ``"ks"``.
    :param bool per_neuron: one data line per neuron (bands for the smallest count).
    :returns: the Axes.
    """
    if kind not in ("qq", "ks"):
        raise ValueError(f"kind must be 'qq' or 'ks', got {kind!r}")
    with torch.no_grad():
        z = rescaled_intervals(process, events, per_neuron=per_neuron)
    groups = z if per_neuron else [z]
    groups = [g.detach().cpu().double().sort().values for g in groups]
    sizes = [g.numel() for g in groups]
    if min(sizes) == 0:
        raise ValueError("events has no spikes (for some neuron): nothing to plot")
    ax = _axes(ax)
    labels = [f"neuron {d}" for d in range(len(groups))] if per_neuron else ["data"]
    colors = _colors(None, len(groups)) if per_neuron else [color]
    for g, label, c in zip(groups, labels, colors):
        n = g.numel()
        b = (torch.arange(1, n + 1, dtype=torch.float64) - 0.5) / n
        if kind == "qq":
            x, y = -torch.log1p(-b), g
        else:
            x, y = b, -torch.expm1(-g)
        ks = ks_statistic(g)
        ax.plot(x.numpy(), y.numpy(), ".", color=c, markersize=3,
                label=f"{label} (n={n}, KS={ks:.3f})")
    n = min(sizes)
    b = (torch.arange(1, n + 1, dtype=torch.float64) - 0.5) / n
    eps = ks_band(n)
    if kind == "qq":
        x = -torch.log1p(-b)
        lo = -torch.log1p(-(b - eps).clamp(min=0.0))
        hi = -torch.log1p(-(b + eps).clamp(max=1.0))  # +inf beyond the last quantile
        hi = torch.where(torch.isfinite(hi), hi, torch.full_like(hi, float("nan")))
        ax.set_xlabel("Exp(1) quantile")
        ax.set_ylabel("rescaled interval quantile")
    else:
        x = b
        lo, hi = (b - eps).clamp(min=0.0), (b + eps).clamp(max=1.0)
        ax.set_xlabel("uniform quantile $b_k$")
        ax.set_ylabel("empirical CDF of $1 - e^{-z}$")
    top = float(x.max())
    ax.plot([0.0, top], [0.0, top], "k-", linewidth=0.8, label="ideal")
    ax.plot(x.numpy(), lo.numpy(), "k--", linewidth=0.8, label="95% KS band")
    ax.plot(x.numpy(), hi.numpy(), "k--", linewidth=0.8)
    ax.legend(loc="upper left", fontsize="small")
    ax.set_title("time-rescaling " + ("Q-Q" if kind == "qq" else "KS") + " plot")
    return ax


def loss_plot(losses, ax=None, smooth=None, log_scale=None):
    """
    Training curve.

    :param losses: a sequence of numbers (e.g. the ELBO losses returned by ``svi.step``).
    :param int smooth: also draw a trailing moving average over this many steps.
    :param bool log_scale: logarithmic y axis (default: when all losses are positive and they
        span more than two decades).
    :returns: the Axes (one line, two with ``smooth``).
    """
    y = torch.as_tensor([float(v) for v in losses], dtype=torch.float64)
    if y.numel() == 0:
        raise ValueError("losses is empty")
    if not bool(torch.isfinite(y).all()):
        raise ValueError("losses contains NaN or infinite values")
    ax = _axes(ax)
    steps = torch.arange(y.numel())
    ax.plot(steps.numpy(), y.numpy(), color="C0", alpha=0.5 if smooth else 1.0, label="loss")
    if smooth:
        k = int(smooth)
        if k < 1:
            raise ValueError(f"smooth must be a positive integer, got {smooth}")
        c = torch.cat([y.new_zeros(1), y.cumsum(0)])
        idx = torch.arange(1, y.numel() + 1)
        start = (idx - k).clamp(min=0)
        avg = (c[idx] - c[start]) / (idx - start)
        ax.plot(steps.numpy(), avg.numpy(), color="C1", label=f"moving average ({k})")
        ax.legend(loc="upper right", fontsize="small")
    if log_scale is None:
        log_scale = bool((y > 0).all()) and float(y.max() / y.min()) > 100.0
    if log_scale:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    return ax
