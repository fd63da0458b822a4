"""Interop with Neo, pynapple, NWB and dicts (issue 12, item 6), on real objects."""

from datetime import datetime, timezone

import numpy as np
import pytest
import torch

from extras import need
from pyro_spikes import io as psio
from pyro_spikes.distributions import SpikingPointProcess
from pyro_spikes.spikes import pack_spikes

TRAINS = {"a": [0.25, 1.5, 2.0], "b": [], "c": [0.1, 2.9]}


def _check(rec, t_start=1.0, duration=3.0):
    want = pack_spikes([np.array(v) for v in TRAINS.values()], duration, dtype=torch.float64)
    assert rec.t_start == pytest.approx(t_start) and rec.duration == pytest.approx(duration)
    assert torch.allclose(rec.events, want, atol=1e-12)


def _absolute(t_start=1.0):
    return {k: np.array(v, dtype=float) + t_start for k, v in TRAINS.items()}


def test_dict_round_trip_and_errors():
    rec = psio.from_dict(_absolute(), t_start=1.0, t_stop=4.0, dtype=torch.float64)
    _check(rec)
    assert rec.names == ["a", "b", "c"]
    back = psio.to_dict(rec.events, t_start=rec.t_start, names=rec.names)
    for k, v in _absolute().items():
        np.testing.assert_allclose(back[k], v, atol=1e-12)
    with pytest.raises(ValueError, match="unit 'a' has spike times outside"):
        psio.from_dict(_absolute(), t_start=1.5, t_stop=4.0)
    with pytest.raises(ValueError, match="t_start < t_stop"):
        psio.from_dict(_absolute(), t_start=4.0, t_stop=1.0)
    with pytest.raises(TypeError, match="dict"):
        psio.from_dict([[0.1]], t_stop=1.0)


def test_neo_round_trip_with_units():
    neo = need("neo")
    pq = need("quantities")
    trains = [neo.SpikeTrain(v * 1000.0, units="ms", t_start=1000.0 * pq.ms,
                             t_stop=4000.0 * pq.ms, name=k) for k, v in _absolute().items()]
    rec = psio.from_neo(trains, dtype=torch.float64)  # rescaled to seconds
    _check(rec)
    assert rec.names == ["a", "b", "c"]
    out = psio.to_neo(rec.events, rec.duration, t_start=rec.t_start, names=rec.names)
    assert all(isinstance(s, neo.SpikeTrain) for s in out)
    for s, (k, v) in zip(out, _absolute().items()):
        assert s.name == k and float(s.t_start) == 1.0 and float(s.t_stop) == 4.0
        np.testing.assert_allclose(s.rescale("s").magnitude, v, atol=1e-12)
    ms = psio.from_neo(trains, units="ms", dtype=torch.float64)
    assert ms.duration == pytest.approx(3000.0)
    bad = trains[:2] + [neo.SpikeTrain([1.5] * pq.s, t_start=0 * pq.s, t_stop=4 * pq.s)]
    with pytest.raises(ValueError, match="share t_start and t_stop"):
        psio.from_neo(bad)


def test_pynapple_round_trip():
    nap = need("pynapple")
    group = nap.TsGroup({i: nap.Ts(t=v) for i, v in enumerate(_absolute().values())},
                        time_support=nap.IntervalSet(start=1.0, end=4.0))
    rec = psio.from_pynapple(group, dtype=torch.float64)
    _check(rec)
    out = psio.to_pynapple(rec.events, rec.duration, t_start=rec.t_start, names=rec.names)
    assert isinstance(out, nap.TsGroup) and list(out.keys()) == [0, 1, 2]
    assert float(out.time_support.start[0]) == 1.0 and float(out.time_support.end[0]) == 4.0
    for k, v in enumerate(_absolute().values()):
        np.testing.assert_allclose(out[k].t, v, atol=1e-12)
    # an epoch restricts the group (as TsGroup.restrict): the window [2, 3]
    part = psio.from_pynapple(group, epoch=nap.IntervalSet(start=2.0, end=3.0),
                              dtype=torch.float64)
    assert part.duration == pytest.approx(1.0)
    assert part.events[:, 0].tolist()[:2] == pytest.approx([0.5, 1.0])
    two = nap.IntervalSet(start=[1.0, 3.0], end=[2.0, 4.0])
    with pytest.raises(ValueError, match="one interval"):
        psio.from_pynapple(group, epoch=two)


def test_nwb_file_round_trip(tmp_path):
    pynwb = need("pynwb")
    rec = psio.from_dict(_absolute(), t_start=1.0, t_stop=4.0, dtype=torch.float64)
    nwb = pynwb.NWBFile(session_description="pyro_spikes io test", identifier="io-test",
                        session_start_time=datetime(2024, 1, 1, tzinfo=timezone.utc))
    psio.to_nwb(rec.events, nwb, rec.duration, t_start=rec.t_start)
    path = tmp_path / "units.nwb"
    with pynwb.NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    with pynwb.NWBHDF5IO(str(path), "r") as io:
        read = io.read()
        back = psio.from_nwb(read, dtype=torch.float64)  # obs_intervals as the window
        _check(back)
        assert back.names == [0, 1, 2]
        sub = psio.from_nwb(read.units, interval=(1.0, 4.0), dtype=torch.float64)
        _check(sub)
        with pytest.raises(ValueError, match="outside the window"):
            psio.from_nwb(read, interval=(2.0, 4.0))
    # the read-back recording is usable as a process value
    p = SpikingPointProcess(torch.zeros(3, dtype=torch.float64),
                            torch.zeros(1, 3, 3, dtype=torch.float64),
                            torch.ones(1, dtype=torch.float64), back.duration,
                            capacity=back.events.shape[0])
    assert torch.isfinite(p.log_prob(back.events))


def test_nwb_mixed_obs_intervals_need_an_interval():
    pynwb = need("pynwb")
    nwb = pynwb.NWBFile(session_description="x", identifier="y",
                        session_start_time=datetime(2024, 1, 1, tzinfo=timezone.utc))
    nwb.add_unit(spike_times=[0.5], obs_intervals=[[0.0, 1.0]])
    nwb.add_unit(spike_times=[1.5], obs_intervals=[[0.0, 2.0]])
    with pytest.raises(ValueError, match="share one obs_interval"):
        psio.from_nwb(nwb)
    rec = psio.from_nwb(nwb, interval=(0.0, 2.0), dtype=torch.float64)
    assert rec.events[:, 0].tolist() == [0.5, 1.5]
