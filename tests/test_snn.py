"""Tests of the SNN model/guide under SVI, Kajino's synthetic set-up and the estimators."""

import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam

from pyro_spikes.distributions import RelaxedPointProcess, SpikingPointProcess
from pyro_spikes.models import SNN, temperature_schedule
from pyro_spikes.models.paper import kajino_ground_truth
from pyro_spikes.models.training import ESTIMATORS, elbo_gradients, train

torch.set_num_threads(1)

T = 20.0


@pytest.fixture(scope="module")
def data():
    """1 observed + 2 hidden neurons, T = 20: 10 training and 10 test sequences."""
    pyro.clear_param_store()
    truth = kajino_ground_truth(0, num_observed=1, num_hidden=2, duration=T)
    torch.manual_seed(0)
    train_obs, _ = truth.simulate(10)
    test_obs, _ = truth.simulate(10)
    return train_obs, test_obs


# ---------------------------------------------------------------- ground truth
def test_kajino_ground_truth_ranges_and_seed():
    snn = kajino_ground_truth(3)
    b, w = snn.bias.detach(), snn.weight.detach()
    assert b.shape == (6,) and w.shape == (2, 6, 6)
    assert snn.num_observed == 2 and snn.num_hidden == 4
    assert snn.duration == 50.0 and float(snn.upper_bound) == 5.0
    assert bool(((b >= -1) & (b <= 1)).all())
    assert bool(((w >= -5) & (w <= 5)).all())
    diag = torch.diagonal(w, dim1=-2, dim2=-1)
    assert bool(((diag >= -5) & (diag <= -0.1)).all())
    off = w[:, ~torch.eye(6, dtype=torch.bool)]
    assert float(off.max()) > 0  # off-diagonal weights are not restricted to inhibition
    again = kajino_ground_truth(3)
    assert torch.equal(again.weight.detach(), w) and torch.equal(again.bias.detach(), b)
    other = kajino_ground_truth(4)
    assert not torch.equal(other.weight.detach(), w)


def test_kajino_ground_truth_values_reach_pyro_params():
    """The set values are what the Pyro programs see (the param store is filled from them)."""
    pyro.clear_param_store()
    snn = kajino_ground_truth(1, num_observed=1, num_hidden=1, duration=5.0)
    expected = snn.weight.detach().clone()
    model, guide = snn.model, snn.guide
    obs = torch.tensor([[[1.0, 1.0], [5.0, 0.0]]])
    tr = poutine.trace(model).get_trace(obs, relaxed=False)
    assert torch.equal(tr.nodes["truth.weight"]["value"].detach(), expected)
    assert torch.equal(pyro.param("truth.weight").detach(), expected)


def test_kajino_ground_truth_bad_range():
    with pytest.raises(ValueError, match="self_weight_range"):
        kajino_ground_truth(0, self_weight_range=(1.0, -1.0))


# ---------------------------------------------------------------- shapes and validation
def test_simulate_shapes():
    torch.manual_seed(0)
    snn = SNN(2, 3, 10.0)
    observed, hidden = snn.simulate(4)
    assert observed.dim() == 3 and observed.shape[0] == 4 and observed.shape[-1] == 3
    assert hidden.shape[0] == 4 and hidden.shape[-1] == 4
    # observed is cut to the largest observed spike count, never truncating a spike
    counts = (observed[..., 1:].sum(-1) > 0).sum(-1)
    assert int(counts.max()) == observed.shape[1] or observed.shape[1] == 1
    assert bool((observed[..., 0] <= 10.0).all()) and bool((hidden[..., 0] <= 10.0).all())


@pytest.mark.parametrize("relaxed", [True, False])
def test_model_guide_trace_shapes(relaxed):
    torch.manual_seed(0)
    snn = SNN(1, 2, 5.0, upper_bound=2.0)
    observed, _ = snn.simulate(3)
    model, guide = snn.model, snn.guide
    guide_tr = poutine.trace(guide).get_trace(observed, relaxed=relaxed)
    model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(
        observed, relaxed=relaxed)
    g, m = guide_tr.nodes["hidden"], model_tr.nodes["hidden"]
    assert g["fn"].event_shape == m["fn"].event_shape
    assert g["fn"].batch_shape == m["fn"].batch_shape == (3,)
    assert g["value"].shape == (3,) + tuple(g["fn"].event_shape)
    assert g["value"].shape[-1] == 1 + 2
    kind = RelaxedPointProcess if relaxed else SpikingPointProcess
    assert isinstance(g["fn"], kind) and isinstance(m["fn"], kind)
    assert not m["is_observed"] and not g["is_observed"]
    obs_site = model_tr.nodes["observed"]
    assert obs_site["is_observed"] and torch.equal(obs_site["value"], observed)
    assert obs_site["fn"].batch_shape == (3,)
    assert {"bias", "weight"} <= set(n for n, s in model_tr.nodes.items() if s["type"] == "param")
    log_w = model_tr.log_prob_sum() - guide_tr.log_prob_sum()
    assert torch.isfinite(log_w)


def test_snn_argument_validation():
    with pytest.raises(ValueError, match="num_observed"):
        SNN(0, 2, 10.0)
    with pytest.raises(ValueError, match="num_observed"):
        SNN(1, -1, 10.0)
    with pytest.raises(ValueError, match="guide_type"):
        SNN(1, 1, 10.0, guide_type="amortised")
    snn = SNN(2, 1, 10.0)
    with pytest.raises(ValueError, match="observed"):
        snn.model(torch.zeros(4, 3))  # missing sequence dimension
    with pytest.raises(ValueError, match="neurons"):
        snn.model(torch.zeros(2, 4, 2))  # 1 neuron instead of 2
    with pytest.raises(ValueError, match="observed"):
        snn.log_marginal(torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="estimator"):
        train(snn, torch.zeros(1, 1, 3), "score", 1)
    with pytest.raises(ValueError, match="num_repeats"):
        elbo_gradients(snn, torch.zeros(1, 1, 3), "pathwise", 0)
    # one repeat is enough; the default temperature is 0.3 (the same draws give the same
    # gradient, and another temperature another one)
    obs = torch.tensor([[[1.0, 1.0, 0.0], [10.0, 0.0, 0.0]]])
    grads = {}
    for kwargs in ({}, {"temperature": 0.3}, {"temperature": 1.3}):
        torch.manual_seed(0)
        grads[str(kwargs)] = elbo_gradients(snn, obs, "pathwise", 1, **kwargs)
    assert all(g.shape[0] == 1 for g in grads["{}"].values())
    for name, g in grads["{}"].items():
        assert torch.equal(g, grads["{'temperature': 0.3}"][name])
    assert any(not torch.equal(g, grads["{'temperature': 1.3}"][n])
               for n, g in grads["{}"].items())


# ---------------------------------------------------------------- learning
def _held_out(snn, test_obs, num_samples=30):
    torch.manual_seed(123)
    return float(snn.log_marginal(test_obs, num_samples).mean())


@pytest.mark.parametrize("estimator", ["pathwise", "reinforce_baseline"])
def test_svi_decreases_loss_and_improves_held_out_likelihood(data, estimator):
    """
    From the default initialisation (all biases 0, i.e. rates a/2) the fit must lower the
    loss (mean of the last 10 steps at least 20% below the mean of the first 10) and raise
    the held-out log-likelihood per sequence by at least 1 nat (the ground truth's is far
    above the initial one: about -2 vs -8 with this seed).
    """
    train_obs, test_obs = data
    pyro.clear_param_store()
    pyro.set_rng_seed(1)
    snn = SNN(1, 2, T)
    before = _held_out(snn, test_obs)
    losses = train(snn, train_obs, estimator, 40, lr=0.05)
    after = _held_out(snn, test_obs)
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert all(torch.isfinite(torch.tensor(losses)))
    assert last < 0.8 * first, (first, last)
    assert after > before + 1.0, (before, after)


def test_svi_plain_reinforce_runs_and_trains(data):
    train_obs, _ = data
    pyro.clear_param_store()
    pyro.set_rng_seed(2)
    snn = SNN(1, 2, T)
    bias0 = snn.bias.detach().clone()
    losses = train(snn, train_obs, "reinforce", 15, lr=0.05)
    assert len(losses) == 15 and all(torch.isfinite(torch.tensor(losses)))
    # every parameter moved (lr 0.05 for 15 Adam steps moves each by up to 0.75)
    assert bool((snn.bias.detach() - bias0).abs().min() > 1e-3)
    assert sum(losses[-5:]) < sum(losses[:5])


def test_pathwise_gradient_has_smaller_variance(data):
    """Kajino's Table 1 in miniature: path-wise gradients vary far less than REINFORCE's."""
    train_obs, _ = data
    pyro.clear_param_store()
    pyro.set_rng_seed(3)
    snn = SNN(1, 2, T)
    std = {}
    for est in ("pathwise", "reinforce"):
        grads = elbo_gradients(snn, train_obs[:5], est, 8)
        assert grads["bias"].shape == (8, 3) and grads["weight"].shape == (8, 2, 3, 3)
        assert all(bool(torch.isfinite(g).all()) for g in grads.values())
        std[est] = torch.cat([g.std(0).reshape(-1) for g in grads.values()]).mean()
    assert std["pathwise"] < 0.5 * std["reinforce"], std


def test_estimator_table():
    assert set(ESTIMATORS) == {"pathwise", "reinforce", "reinforce_baseline"}
    assert ESTIMATORS["pathwise"][1]["relaxed"] is True
    assert ESTIMATORS["reinforce"][1]["relaxed"] is False


def test_simulate_on_another_window():
    snn = SNN(2, 1, duration=5.0, init_scale=1.0)
    observed, hidden = snn.simulate(3, 12.0)
    assert observed.shape[0] == 3 and observed.shape[-1] == 3 and hidden.shape[-1] == 2
    assert float(observed[..., 0].max()) <= 12.0
    assert float(observed[..., 0][observed[..., 1:].sum(-1) > 0].max()) > 5.0


def test_log_marginal_known_answer_and_effective_sample_size(float64_default):
    # With no hidden -> observed weights the observed neurons ignore the hidden ones, so every
    # importance weight equals p(J_O) of the observed sub-network alone: the estimate is exact
    # and the effective sample size is S. With coupling the ESS drops below S (>= 1).
    pyro.set_rng_seed(0)
    snn = SNN(2, 2, duration=10.0, upper_bound=3.0, init_scale=1.0)
    obs, _ = snn.simulate(3)
    with torch.no_grad():
        snn.weight[:, :2, 2:] = 0.0
    alone = SpikingPointProcess(snn.bias[:2], snn.weight[:, :2, :2], snn.time_constants,
                                10.0, snn.upper_bound, capacity=obs.shape[-2])
    est, ess = snn.log_marginal(obs, num_samples=12, batch_size=5, return_ess=True)
    assert est.shape == ess.shape == (3,)
    assert torch.allclose(est, alone.log_prob(obs), rtol=1e-10)
    assert torch.allclose(ess, torch.full_like(ess, 12.0), rtol=1e-8)
    with torch.no_grad():
        snn.weight[:, :2, 2:] = 3.0
    est, ess = snn.log_marginal(obs, num_samples=12, batch_size=5, return_ess=True)
    assert bool(torch.isfinite(est).all())
    assert bool(((ess >= 1 - 1e-9) & (ess < 12)).all())
    # a separate guide with the model's own parameters is the same proposal: the weights with
    # the explicit log p_H - log q terms equal those of the prior guide (where they are skipped)
    separate = SNN(2, 2, duration=10.0, upper_bound=3.0, guide_type="separate", name="sep")
    with torch.no_grad():
        for name in ("bias", "weight"):
            getattr(separate, name).copy_(getattr(snn, name))
            getattr(separate, "guide_" + name).copy_(getattr(snn, name))
    torch.manual_seed(7)
    prior_est = snn.log_marginal(obs, num_samples=6)
    torch.manual_seed(7)
    assert torch.allclose(separate.log_marginal(obs, num_samples=6), prior_est, rtol=1e-9)
    with pytest.raises(ValueError, match="batch_size"):
        snn.log_marginal(obs, num_samples=4, batch_size=0)


def test_cancel_hidden_keeps_elbo_and_gradient(float64_default):
    # with the prior guide, log p_H - log q = 0 for every sample: masking both hidden sites
    # gives the same loss and the same path-wise gradient on the same sample
    pyro.set_rng_seed(0)
    snn = SNN(2, 2, duration=8.0, upper_bound=3.0, init_scale=1.0)
    obs, _ = snn.simulate(3)
    results = []
    for cancel in (False, True):
        pyro.set_rng_seed(5)
        loss = Trace_ELBO().differentiable_loss(snn.model, snn.guide, obs, relaxed=True,
                                                temperature=0.5, cancel_hidden=cancel)
        grads = torch.autograd.grad(loss, list(snn.parameters()))
        results.append((loss, torch.cat([g.reshape(-1) for g in grads])))
    (loss0, g0), (loss1, g1) = results
    assert g0.abs().max() > 0.1
    assert torch.allclose(loss0, loss1, rtol=1e-9)
    assert torch.allclose(g0, g1, rtol=1e-7, atol=1e-9)
    # a masked site computes no density: its trace log_prob is zero
    pyro.set_rng_seed(5)
    tr = poutine.trace(snn.guide).get_trace(obs, cancel_hidden=True)
    tr.compute_log_prob()
    assert float(tr.nodes["hidden"]["log_prob"].abs().sum()) == 0.0
    with pytest.raises(ValueError, match="cancel_hidden"):
        snn.model(obs, relaxed=False, cancel_hidden=True)
    separate = SNN(2, 2, duration=8.0, guide_type="separate", name="sep")
    with pytest.raises(ValueError, match="guide_type='prior'"):
        separate.guide(obs, cancel_hidden=True)


def test_errors_name_the_snn_arguments():
    """Bad observed data is reported as `observed` (not the process's `context`) and a capacity
    overflow names `hidden_capacity`."""
    snn = SNN(1, 1, 5.0)
    unsorted = torch.tensor([[[2.0, 1.0], [1.0, 1.0]]])
    with pytest.raises(ValueError, match="observed"):
        snn.hidden_process(unsorted)
    small = SNN(1, 1, 5.0, hidden_capacity=1, upper_bound=20.0)
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="hidden_capacity"):
        small.hidden_process(torch.tensor([[[1.0, 1.0]]])).sample()


def test_simulate_and_log_marginal_read_the_param_store(tmp_path):
    """After pyro.get_param_store().load(...), simulate and log_marginal use the loaded values,
    not the module's fresh random ones (as model and guide do)."""
    pyro.clear_param_store()
    truth = kajino_ground_truth(0, num_observed=1, num_hidden=1, duration=5.0)
    torch.manual_seed(0)
    obs, _ = truth.simulate(2)
    torch.manual_seed(1)
    expected = truth.log_marginal(obs, 32)
    pyro.get_param_store().save(str(tmp_path / "params.pt"))
    pyro.clear_param_store()
    other = kajino_ground_truth(7, num_observed=1, num_hidden=1, duration=5.0)
    pyro.get_param_store().load(str(tmp_path / "params.pt"))
    torch.manual_seed(1)
    assert torch.equal(other.log_marginal(obs, 32), expected)
    torch.manual_seed(0)
    again, _ = other.simulate(2)
    assert torch.equal(again, obs)


def test_temperature_schedule_is_geometric_from_start_to_end():
    assert temperature_schedule(0, 5, 2.0, 0.5) == 2.0
    assert temperature_schedule(4, 5, 2.0, 0.5) == pytest.approx(0.5, rel=1e-15)
    assert temperature_schedule(2, 5, 2.0, 0.5) == pytest.approx(1.0, rel=1e-15)  # geometric mean
    assert temperature_schedule(1, 5, 2.0, 0.5) == pytest.approx(2.0 * 0.25 ** 0.25, rel=1e-15)
    assert temperature_schedule(0, 2, 2.0, 0.5) == 2.0  # two steps: start, then end
    assert temperature_schedule(1, 2, 2.0, 0.5) == pytest.approx(0.5, rel=1e-15)
    # held at the ends outside [0, S - 1]; one step is the end
    assert temperature_schedule(-3, 5, 2.0, 0.5) == 2.0
    assert temperature_schedule(9, 5, 2.0, 0.5) == pytest.approx(0.5, rel=1e-15)
    assert temperature_schedule(0, 1, 2.0, 0.5) == 0.5
    assert temperature_schedule(0, 3) == 1.0 and temperature_schedule(2, 3) == pytest.approx(0.3)
