import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402

from pyro_spikes import pack_spikes  # noqa: E402
from pyro_spikes.diagnostics import rescaled_intervals  # noqa: E402
from pyro_spikes.distributions import (  # noqa: E402
    HawkesProcess,
    PoissonProcess,
    SpikingPointProcess,
)
from pyro_spikes.plot import intensity_plot, loss_plot, qq_plot, raster  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def hawkes():
    return HawkesProcess(torch.tensor([0.5, 0.3, 0.4]),
                         torch.tensor([[0.2, 0.1, 0.0], [0.0, 0.3, 0.1], [0.2, 0.0, 0.1]]),
                         1.5, duration=50.0)


def test_raster_rows_and_soft_mark_alpha():
    events = pack_spikes([[0.5, 2.0, 3.1], [1.0], []], duration=4.0, capacity=6)
    ax = raster(events, neuron_names=["a", "b", "c"])
    cols = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert len(cols) == 3
    # neuron 0 on top (y = 2): three ticks at its spike times
    segs = cols[0].get_segments()
    assert sorted(s[0, 0] for s in segs) == pytest.approx([0.5, 2.0, 3.1])
    assert all(s[0, 1] == pytest.approx(1.6) and s[1, 1] == pytest.approx(2.4) for s in segs)
    assert len(cols[1].get_segments()) == 1 and len(cols[2].get_segments()) == 0
    assert [t.get_text() for t in ax.get_yticklabels()] == ["c", "b", "a"]
    # a soft mark: one row, mass 0.3 for neuron 0 and 0.6 for neuron 1
    soft = torch.tensor([[1.0, 0.3, 0.6], [2.0, 1.0, 0.0], [4.0, 0.0, 0.0]])
    ax = raster(soft, colors=["red", "blue"])
    c0, c1 = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert c0.get_colors()[:, 3].tolist() == pytest.approx([0.3, 1.0])
    assert c0.get_colors()[1, :3].tolist() == pytest.approx([1.0, 0.0, 0.0])
    assert c1.get_colors()[:, 3].tolist() == pytest.approx([0.6])
    with pytest.raises(ValueError, match="events"):
        raster(events.expand(2, -1, -1))
    with pytest.raises(ValueError, match="neuron_names"):
        raster(events, neuron_names=["a"])


def test_intensity_plot_lines_match_process_intensity():
    torch.manual_seed(0)
    p = hawkes()
    events = p.sample()
    ax = intensity_plot(p, events, num_points=200)
    assert len(ax.lines) == 3
    t = torch.linspace(0, 50.0, 200)
    lam = p.intensity(events, t)
    for d in range(3):
        x, y = ax.lines[d].get_data()
        assert np.allclose(x, t.numpy())
        assert np.allclose(y, lam[:, d].numpy(), rtol=1e-5)
    ax = intensity_plot(p, events, neurons=[2], num_points=50, spikes=False)
    assert len(ax.lines) == 1 and len(ax.collections) == 0
    with pytest.raises(ValueError, match="potential"):
        intensity_plot(p, events, potential=True)


def test_intensity_plot_potential_is_logit_of_rate():
    torch.manual_seed(1)
    a = 4.0
    p = SpikingPointProcess(torch.tensor([-1.0, 0.5]), torch.tensor([[[0.5, -1.0], [1.0, 0.0]]]),
                            torch.tensor([1.0]), duration=10.0, upper_bound=a)
    events = p.sample()
    ax = intensity_plot(p, events, num_points=100, potential=True)
    assert len(ax.lines) == 2
    t = torch.linspace(0, 10.0, 100)
    lam = p.intensity(events, t)
    u = torch.logit(lam / a)
    for d in range(2):
        assert np.allclose(ax.lines[d].get_ydata(), u[:, d].numpy(), atol=1e-4)


def test_qq_plot_data_are_sorted_rescaled_intervals():
    torch.manual_seed(2)
    p = hawkes()
    events = p.sample((3,))
    ax = qq_plot(p, events)
    assert len(ax.lines) == 4  # data, diagonal, two band lines
    z = np.sort(rescaled_intervals(p, events).double().numpy())
    n = z.size
    q = -np.log1p(-(np.arange(1, n + 1) - 0.5) / n)
    x, y = ax.lines[0].get_data()
    assert np.allclose(y, z) and np.allclose(x, q)
    # the KS band has half-width 1.36/sqrt(n) in probability
    _, lo = ax.lines[2].get_data()
    b = (np.arange(1, n + 1) - 0.5) / n
    assert np.allclose(1 - np.exp(-lo), np.clip(b - 1.36 / np.sqrt(n), 0, None))
    # the model that generated the data passes: most points inside the band
    _, hi = ax.lines[3].get_data()
    inside = (z >= lo - 1e-12) & ((z <= hi) | np.isnan(hi))
    assert inside.mean() > 0.95
    # KS form
    ax = qq_plot(p, events, kind="ks")
    x, y = ax.lines[0].get_data()
    assert np.allclose(x, b) and np.allclose(y, 1 - np.exp(-z))
    # per neuron: one data line per neuron
    ax = qq_plot(p, events, per_neuron=True)
    assert len(ax.lines) == 3 + 3


def test_qq_plot_detects_misfit():
    torch.manual_seed(3)
    events = PoissonProcess(torch.tensor([2.0]), 100.0).sample()
    wrong = PoissonProcess(torch.tensor([1.0]), 100.0, capacity=events.shape[-2])
    ax = qq_plot(wrong, events)
    z = ax.lines[0].get_ydata()
    _, lo = ax.lines[2].get_data()
    _, hi = ax.lines[3].get_data()
    outside = (z < lo) | (z > np.nan_to_num(hi, nan=np.inf))
    assert outside.mean() > 0.5  # intervals rescaled by half the rate are ~Exp(2)
    with pytest.raises(ValueError, match="kind"):
        qq_plot(wrong, events, kind="pp")


def test_loss_plot():
    losses = [10.0, 8.0, 6.0, 7.0, 5.0]
    ax = loss_plot(losses)
    assert len(ax.lines) == 1
    assert ax.lines[0].get_ydata().tolist() == losses
    ax = loss_plot(losses, smooth=2)
    assert len(ax.lines) == 2
    assert ax.lines[1].get_ydata().tolist() == pytest.approx([10.0, 9.0, 7.0, 6.5, 6.0])
    fig, given = plt.subplots()
    assert loss_plot(torch.tensor(losses), ax=given) is given
    with pytest.raises(ValueError, match="losses"):
        loss_plot([1.0, float("nan")])
