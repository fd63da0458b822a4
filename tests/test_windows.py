"""Time windows of one long recording (issue 12, item 4)."""

import itertools

import pyro
import pytest
import torch
from pyro import poutine

from pyro_spikes.distributions import FilteredStimulus, SpikingPointProcess
from pyro_spikes.windows import split_windows

DT = torch.float64
T, LENGTH = 20.0, 5.0
STARTS = torch.tensor([0.0, 5.0, 10.0, 15.0], dtype=DT)


def _recording():
    g = torch.Generator().manual_seed(0)
    d = 3
    bias = torch.randn(d, generator=g, dtype=DT) * 0.3 - 0.5
    weight = torch.randn(2, d, d, generator=g, dtype=DT) * 0.7
    tau = torch.tensor([1.0, 2.5], dtype=DT)  # grid spacing 1: window edges are grid rows
    times = torch.arange(-2.0, T, 0.5, dtype=DT)
    values = torch.randn(times.shape[0], 1, generator=g, dtype=DT)
    stim = FilteredStimulus(values, times, torch.randn(2, d, 1, generator=g, dtype=DT),
                            torch.tensor([0.3, 1.7], dtype=DT))
    torch.manual_seed(1)
    full = SpikingPointProcess(bias, weight, tau, T, upper_bound=4.0, stimulus=stim)
    events = full.sample()
    return bias, weight, tau, stim, full, events


def _windowed(bias, weight, tau, stim, windows, history, starts):
    return SpikingPointProcess(bias, weight, tau, LENGTH, upper_bound=4.0, history=history,
                               stimulus=stim.shifted(starts), capacity=windows.shape[-2])


def test_windowed_log_likelihoods_sum_to_the_full_one():
    bias, weight, tau, stim, full, events = _recording()
    windows, history = split_windows(events, T, STARTS, LENGTH)
    assert int((windows[..., 1:] != 0).sum()) == int((events[..., 1:] != 0).sum())
    per_window = _windowed(bias, weight, tau, stim, windows, history, STARTS).log_prob(windows)
    want = full.log_prob(events)
    assert per_window.shape == (4,)
    assert abs(float(per_window.sum() - want)) < 1e-10 * max(1.0, abs(float(want)))
    # without the history (fresh traces in every window) the sum is wrong
    fresh = SpikingPointProcess(bias, weight, tau, LENGTH, upper_bound=4.0,
                                stimulus=stim.shifted(STARTS), capacity=windows.shape[-2])
    assert abs(float(fresh.log_prob(windows).sum() - want)) > 1e-3
    # a history horizon of 40 tau_max changes nothing at float64 resolution
    _, short = split_windows(events, T, STARTS, LENGTH, horizon=40 * 2.5)
    assert torch.allclose(_windowed(bias, weight, tau, stim, windows, short, STARTS)
                          .log_prob(windows), per_window, rtol=0, atol=1e-12)


def test_windowed_gradients_sum_to_the_full_one():
    bias, weight, tau, stim, full, events = _recording()
    windows, history = split_windows(events, T, STARTS, LENGTH)
    w = weight.clone().requires_grad_()
    sw = stim.weight.clone().requires_grad_()
    st = stim.with_params(weight=sw)
    g_win = torch.autograd.grad(_windowed(bias, w, tau, st, windows, history, STARTS)
                                .log_prob(windows).sum(), (w, sw))
    g_full = torch.autograd.grad(SpikingPointProcess(bias, w, tau, T, upper_bound=4.0,
                                                     stimulus=st).log_prob(events), (w, sw))
    for a, b in zip(g_win, g_full):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-10)


def test_plate_subsampling_scales_the_log_likelihood():
    bias, weight, tau, stim, full, events = _recording()
    windows, history = split_windows(events, T, STARTS, LENGTH)
    per_window = _windowed(bias, weight, tau, stim, windows, history, STARTS).log_prob(windows)

    def model(idx):
        with pyro.plate("windows", len(STARTS), subsample=idx) as i:
            pyro.sample("spikes", _windowed(bias, weight, tau, stim, windows[i], history[i],
                                            STARTS[i]), obs=windows[i])

    estimates = []
    for pair in itertools.combinations(range(4), 2):
        idx = torch.tensor(pair)
        tr = poutine.trace(model).get_trace(idx)
        got = tr.log_prob_sum()
        assert torch.allclose(got, 2.0 * per_window[idx].sum(), rtol=1e-12)
        estimates.append(got)
    # the subsampled estimate is unbiased: its mean over all subsamples is the full likelihood
    want = full.log_prob(events)
    assert abs(float(torch.stack(estimates).mean() - want)) < 1e-9 * abs(float(want))


def test_window_contents_and_errors():
    events = torch.tensor([[0.5, 1, 0], [1.0, 0, 1], [2.0, 1, 0], [2.0, 0, 0]], dtype=DT)
    windows, history = split_windows(events, 2.0, [0.0, 1.0], 1.0)
    # [0, 1): the spike at 0.5; [1, 2]: the spikes at 1.0 and at T = 2.0 (end of recording)
    assert windows[0, 0].tolist() == [0.5, 1, 0] and windows[0, 1].tolist() == [1.0, 0, 0]
    assert windows[1, :, 0].tolist() == [0.0, 1.0]
    assert history[1, 0].tolist() == [-0.5, 1, 0]
    assert history[0, 0].tolist() == [0.0, 0, 0]  # no history: one padding row
    with pytest.raises(ValueError, match=r"starts\[1\].*outside the recording"):
        split_windows(events, 2.0, [0.0, 1.5], 1.0)
    with pytest.raises(ValueError, match=r"starts\[0\]"):
        split_windows(events, 2.0, [-0.1], 1.0)
    with pytest.raises(ValueError, match="length"):
        split_windows(events, 2.0, [0.0], 0.0)
    with pytest.raises(ValueError, match="events must be one recording"):
        split_windows(events[None], 2.0, [0.0], 1.0)
    with pytest.raises(ValueError, match="^events spike times must be sorted"):
        split_windows(events.flip(0), 2.0, [0.0], 1.0)


def test_sampling_with_history_counts_match_compensator():
    # strong self-excitation from history spikes just before the window: thinning must add
    # their share to the potentials (E N(T) = E Lambda(T), z-score < 4), and it matters
    bias = torch.tensor([-2.0, -1.0], dtype=DT)
    weight = torch.tensor([[[3.0, 0.0], [2.0, -1.0]]], dtype=DT)
    tau = torch.tensor([0.5], dtype=DT)
    history = torch.tensor([[-0.3, 1.0, 0.0], [-0.1, 1.0, 0.0], [-0.05, 0.0, 1.0]], dtype=DT)
    p = SpikingPointProcess(bias, weight, tau, 1.5, upper_bound=5.0, history=history)
    torch.manual_seed(0)
    events = p.sample((400,))
    counts = (events[..., 1:] == 1).sum(-2).to(DT)  # (400, 2)
    diff = counts - p.compensator(events)[..., -1, :]
    z = diff.mean(0) / (diff.std(0) / diff.shape[0] ** 0.5)
    assert float(z.abs().max()) < 4, z
    fresh = SpikingPointProcess(bias, weight, tau, 1.5, upper_bound=5.0)
    torch.manual_seed(0)
    assert float(counts[:, 0].mean()) > 1.3 * float((fresh.sample((400,))[..., 1] == 1)
                                                    .sum(-1).to(DT).mean())


def test_window_edges_exactly():
    # a spike exactly at a start is in that window (time 0), not in its history; a history
    # spike exactly `horizon` before the start is dropped, one just inside kept
    events = torch.tensor([[1.0, 1, 0], [2.0, 0, 1], [2.5, 1, 0], [4.0, 0, 0]], dtype=DT)
    windows, history = split_windows(events, 4.0, [2.0, 3.0], 0.5, horizon=1.0)
    assert windows[0].tolist() == [[0.0, 0, 1]]  # mark 1 survives a length < 1
    assert windows[1].tolist() == [[0.5, 0, 0]]  # no spike: padding
    assert history[0].tolist() == [[0.0, 0, 0]]  # 1.0 is exactly 1.0 before 2.0
    assert history[1].tolist() == [[-0.5, 1, 0]]  # 2.0 is exactly 1.0 before 3.0
    _, history = split_windows(events, 4.0, [2.0], 0.5, horizon=1.5)
    assert history[0].tolist() == [[-1.0, 1, 0]]
    _, history = split_windows(events, 4.0, [2.0], 0.5, horizon=0.25)  # a horizon below 1
    assert history[0].tolist() == [[0.0, 0, 0]]
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="horizon"):
            split_windows(events, 4.0, [2.0], 0.5, horizon=bad)


def test_windows_of_a_recording_without_spikes():
    events = torch.tensor([[3.0, 0, 0, 0]], dtype=DT)
    windows, history = split_windows(events, 3.0, [0.0, 1.5], 0.7)
    assert windows.shape == history.shape == (2, 1, 4)
    assert windows[..., 0].tolist() == [[0.7], [0.7]] and windows[..., 1:].abs().sum() == 0
    assert history.abs().sum() == 0 and history.dtype == DT


def test_window_starts_in_the_recordings_dtype():
    # starts given as Python numbers are taken in float64 with the events (0.1 is not a
    # float32 number), and the last window may end exactly at T although T - t0 rounds past
    # the length: its spike at T is kept at time `length` exactly
    T = 8.99
    events = torch.tensor([[0.7, 1, 0], [T, 0, 1]], dtype=DT)
    assert T - 6.59 > 2.4 and 6.59 + 2.4 <= T
    windows, _ = split_windows(events, T, [0.1, 6.59], 2.4)
    assert windows[0, 0, 0].item() == 0.7 - 0.1
    assert windows[1, 0].tolist() == [2.4, 0, 1]
    for bad in ([], [[0.0]]):
        with pytest.raises(ValueError, match="starts must be a non-empty 1-D"):
            split_windows(events, T, bad, 1.0)
