"""Each noise-level strategy against independently computed values (REFERENCE.md §2)."""

import math

import numpy as np
import pytest
import torch

from diffusion.strategies import STRATEGIES, build_strategy
from diffusion.strategies.base import edm_weight
from diffusion.ddpm_schedule import DDPMSchedule
from diffusion.strategies.speed import meaningful_steps


def ddpm_sigmas_by_loop():
    """σ_t from the DDPM definition, computed with a plain Python loop."""
    out, prod = [], 1.0
    for i in range(1000):
        beta = 1e-4 + (0.02 - 1e-4) * i / 999
        prod *= 1 - beta
        out.append(math.sqrt((1 - prod) / prod))
    return np.array(out)


def test_ddpm_sigma_mapping_and_inverse():
    s = DDPMSchedule()
    assert np.allclose(s.sigmas, ddpm_sigmas_by_loop(), rtol=1e-10)
    assert s.sigmas[0] == pytest.approx(math.sqrt(1e-4 / (1 - 1e-4)))
    t = torch.arange(1000)
    assert torch.equal(s.timestep(s.sigma(t)), t)


def test_speed_reflection_point_and_tau_sigma():
    s = DDPMSchedule()
    assert meaningful_steps(s) == 642
    strat = build_strategy("speed", {"tau": 700}, 0.5)
    assert strat.tau_sigma == pytest.approx(11.94, abs=0.01)  # σ_699: the last step below τ
    assert build_strategy("speed_edm", {"tau": 700}, 0.5).tau_sigma == strat.tau_sigma


def test_speed_weights_range():
    strat = build_strategy("speed", {}, 0.5)
    w = strat.eps_weights.numpy()
    assert w[:700].min() >= 0.4 - 1e-6 and w[:700].max() <= 0.6 + 1e-6
    assert w[:700].max() == pytest.approx(0.6, abs=1e-6)  # the steepest change of 1 − ᾱ is below τ
    assert w[:700].min() == pytest.approx(0.4072, abs=1e-3)  # min g lies at t = 999 (rescaled over all T)
    assert np.all(w[700:] == 1.0)
    # x0-space weight = w_t / σ_t²
    sig = strat.schedule.sigma(torch.tensor([10, 800]))
    assert torch.allclose(strat.loss_weight(sig), torch.tensor([w[10], 1.0]) / sig**2)


def test_speed_dual_sampling_marginal():
    """Marginal of the dual scheme: half from p(t) ∝ k·[t<τ] + [t≥τ], half the reflected copies."""
    strat = build_strategy("speed", {"k": 5.0, "tau": 700}, 0.5)
    torch.manual_seed(0)
    t = torch.cat([strat.sample_timesteps(1000, "cpu") for _ in range(400)])  # 400k draws
    p = np.where(np.arange(1000) < 700, 5.0, 1.0)
    p /= p.sum()
    ms = 642
    reflected = np.zeros(1000)
    for s in range(1000):
        reflected[ms - s if s < ms else s - ms] += p[s]
    # each call: 501 originals then the first 499 reflections
    expected = (501 * p + 499 * reflected) / 1000
    hist = np.bincount(t.numpy(), minlength=1000) / len(t)
    # Compare in 20 coarse groups with a chi-square test at a fixed seed.
    obs, exp = hist.reshape(20, 50).sum(1) * len(t), expected.reshape(20, 50).sum(1) * len(t)
    chi2 = ((obs - exp) ** 2 / exp).sum()
    assert chi2 < 43.8  # 99.9% quantile of chi2 with 19 dof


def test_min_snr_weights():
    hard = build_strategy("min_snr", {"gamma": 5.0}, 0.5)
    soft = build_strategy("min_snr", {"gamma": 5.0, "soft": True}, 0.5)
    sigma = torch.tensor([0.1, 0.5, 1.0, 3.0])
    assert torch.allclose(hard.loss_weight(sigma), torch.tensor([5.0, 4.0, 1.0, 1 / 9]))
    assert torch.allclose(soft.loss_weight(sigma), 1 / (sigma**2 + 0.2))
    ddpm = build_strategy("min_snr", {"sampling": "ddpm_uniform"}, 0.5)
    assert set(ddpm.sample_sigma(500, "cpu").tolist()) <= set(DDPMSchedule().sigma(torch.arange(1000)).tolist())


def test_logit_normal_equals_edm_lognormal():
    ln = build_strategy("logit_normal", {"m": -1.2, "s": 1.2}, 0.5)
    edm = build_strategy("edm", {"p_mean": -1.2, "p_std": 1.2}, 0.5)
    torch.manual_seed(5)
    a = ln.sample_sigma(100_000, "cpu")
    torch.manual_seed(5)
    b = edm.sample_sigma(100_000, "cpu")
    assert torch.allclose(a.log(), b.log(), atol=1e-4)
    sigma = torch.tensor([0.5, 2.0])
    assert torch.allclose(ln.loss_weight(sigma), (1 + sigma) ** 2 / sigma**2)


def test_laplace_log_snr_quantiles():
    s = build_strategy("laplace", {"mu": 0.0, "b": 0.5}, 0.5)
    torch.manual_seed(0)
    log_snr = -2 * s.sample_sigma(200_000, "cpu").double().log()
    assert abs(log_snr.median().item()) < 0.01
    assert (log_snr.abs() > 0.5 * math.log(10)).double().mean().item() == pytest.approx(0.1, abs=0.005)


def test_p2_and_ddpm_uniform_weights():
    p2 = build_strategy("p2", {}, 0.5)
    u = build_strategy("ddpm_uniform", {}, 0.5)
    sig = DDPMSchedule().sigma(torch.tensor([0, 500, 999]))
    snr = 1 / sig**2
    assert torch.allclose(p2.loss_weight(sig), snr / (1 + snr), rtol=1e-5)
    assert torch.allclose(u.loss_weight(sig), snr, rtol=1e-5)


def test_speed_edm_variant():
    s = build_strategy("speed_edm", {"k": 5.0}, 0.5)
    torch.manual_seed(0)
    sig = s.sample_sigma(200_000, "cpu")
    tau_sigma = s.tau_sigma
    normal = torch.distributions.Normal(-1.2, 1.2)
    tail = 1 - normal.cdf(torch.tensor(math.log(tau_sigma))).item()
    assert (sig >= tau_sigma).double().mean().item() == pytest.approx(tail / (5 * (1 - tail) + tail), rel=0.2)
    assert torch.allclose(s.loss_weight(torch.tensor([20.0])), edm_weight(torch.tensor([20.0]), 0.5))


# ----------------------------------------------------------------------------
# Adaptive strategies.

ADAPTIVE = ["adaptive_weight", "importance", "learning_progress", "excess_loss"]


def build_adaptive(name: str, params: dict | None = None):
    """An adaptive strategy ready to train; excess_loss gets a J*(σ) table, here J* = 0.3·σ²/(0.3 + σ²)
    (Gaussian data of variance 0.3), which the trainer would estimate from the data."""
    strategy = build_strategy(name, params or {}, 0.5)
    if getattr(strategy, "needs_optimal_loss", False):
        sigma = strategy.bins.centers.exp()
        strategy.set_optimal_loss(sigma, 0.3 * sigma**2 / (0.3 + sigma**2))
    return strategy


def feed(strategy, steps, seed, batch=256):
    """Drive a strategy with synthetic losses that fall over time and depend on σ."""
    gen = torch.Generator().manual_seed(seed)
    for step in range(steps):
        torch.manual_seed(seed * 1000 + step)
        sigma = strategy.sample_sigma(batch, "cpu")
        loss = (1 + sigma.log().square()) * (1 + 5 / (step + 1)) * (1 + 0.1 * torch.rand(batch, generator=gen))
        strategy.update(sigma, loss.float())


@pytest.mark.parametrize("name", ADAPTIVE)
def test_adaptive_is_deterministic_and_learns(name):
    a, b = build_adaptive(name), build_adaptive(name)
    feed(a, 30, seed=1)
    feed(b, 30, seed=1)
    for key, stat in a.state_dict().items():
        assert torch.equal(stat["value"], b.state_dict()[key]["value"])
    assert not torch.allclose(a.bin_probs(), a.bins.base_mass) or name == "adaptive_weight"
    sigma = torch.tensor([0.01, 0.3, 5.0])
    w = a.loss_weight(sigma)
    assert torch.all(w > 0) and torch.all(torch.isfinite(w))


@pytest.mark.parametrize("name", ADAPTIVE)
def test_adaptive_identical_across_simulated_ranks(name):
    """Two ranks see different local batches; both update from the gathered batch and stay identical."""
    ranks = [build_adaptive(name) for _ in range(2)]
    for step in range(20):
        local = []
        for r in range(2):
            torch.manual_seed(100 * step + r)
            sigma = ranks[r].sample_sigma(64, "cpu")
            local.append((sigma, sigma.log().square() + 1.0 / (step + 1)))
        gathered_sigma = torch.cat([s for s, _ in local])
        gathered_loss = torch.cat([l for _, l in local])
        for strat in ranks:
            strat.update(gathered_sigma, gathered_loss)
    s0, s1 = ranks[0].state_dict(), ranks[1].state_dict()
    assert all(torch.equal(s0[k]["value"], s1[k]["value"]) for k in s0)
    assert torch.equal(ranks[0].bin_probs(), ranks[1].bin_probs())


@pytest.mark.parametrize("name", ADAPTIVE)
def test_adaptive_exact_resume(name):
    full = build_adaptive(name)
    feed(full, 40, seed=3)
    half = build_adaptive(name)
    feed(half, 20, seed=3)
    resumed = build_strategy(name, {}, 0.5)  # J* comes back from the checkpointed state, not re-estimated
    resumed.load_state_dict({k: {kk: vv.clone() for kk, vv in v.items()} for k, v in half.state_dict().items()})
    # continue the same stream of steps 20..39
    gen = torch.Generator().manual_seed(3)
    for step in range(40):
        torch.manual_seed(3 * 1000 + step)
        sigma = resumed.sample_sigma(256, "cpu") if step >= 20 else None
        noise = torch.rand(256, generator=gen)
        if step >= 20:
            loss = (1 + sigma.log().square()) * (1 + 5 / (step + 1)) * (1 + 0.1 * noise)
            resumed.update(sigma, loss.float())
    assert all(torch.equal(full.state_dict()[k]["value"], resumed.state_dict()[k]["value"]) for k in full.state_dict())


def test_importance_sampling_keeps_objective():
    """E_q[w·ℓ] with IS weights equals E_p[λ·ℓ] for any per-bin q: check by exact summation over bins."""
    s = build_strategy("importance", {"min_count": 1}, 0.5)
    feed(s, 30, seed=0)
    q, p = s.bin_probs(), s.bins.base_mass
    assert not torch.allclose(q, p)
    per_bin_value = torch.rand(len(p), dtype=torch.float64)
    ratio = p / q
    assert torch.allclose((q * ratio * per_bin_value).sum(), (p * per_bin_value).sum())
    # and the sampler really draws from q
    torch.manual_seed(0)
    hist = torch.bincount(s.bins.index(s.sample_sigma(200_000, "cpu")), minlength=len(p)).double() / 200_000
    assert torch.allclose(hist, q, atol=0.004)


def test_adaptive_weight_equalises_bins():
    """After learning, λ(σ)/E[λℓ|σ]: weighted losses of the synthetic model are ~equal across σ."""
    s = build_strategy("adaptive_weight", {"beta": 0.9}, 0.5)
    for step in range(200):
        torch.manual_seed(step)
        sigma = s.sample_sigma(512, "cpu")
        s.update(sigma, (2.0 + sigma) / edm_weight(sigma, 0.5))  # weighted loss λℓ = 2 + σ
    sigma = torch.tensor([0.05, 0.3, 1.0, 3.0])
    weighted = s.loss_weight(sigma) * (2.0 + sigma) / edm_weight(sigma, 0.5)
    assert weighted.max() / weighted.min() < 1.3


@pytest.mark.parametrize("name", ADAPTIVE)
def test_adaptive_strategies_adapt_from_min_snr_weighting(name):
    """min_snr_gamma swaps the fixed weighting an adaptive strategy starts from (and learns with) for Min-SNR-γ's
    min(1/σ², γ); with nothing learned yet its weight is exactly MinSNR's; a non-positive γ is refused."""
    sigma = torch.tensor([0.01, 0.3, 0.45, 1.0, 5.0])
    adaptive = build_adaptive(name, {"min_snr_gamma": 5.0})
    fixed = build_strategy("min_snr", {"gamma": 5.0}, 0.5)
    assert torch.allclose(adaptive.loss_weight(sigma), fixed.loss_weight(sigma))
    assert torch.allclose(adaptive.loss_weight(sigma), torch.tensor([5.0, 5.0, 1 / 0.45**2, 1.0, 0.04]))
    with pytest.raises(ValueError, match="min_snr_gamma"):
        build_strategy(name, {"min_snr_gamma": 0}, 0.5)


def test_every_strategy_builds_and_samples():
    for name in STRATEGIES:
        s = build_adaptive(name)
        sigma = s.sample_sigma(64, "cpu")
        assert sigma.shape == (64,) and torch.all(sigma > 0)
        w = s.loss_weight(sigma)
        assert w.shape == (64,) and torch.all(w > 0) and torch.all(torch.isfinite(w))


def test_learning_progress_leaves_p_alone_when_nothing_is_learned():
    """A stationary loss (no progress anywhere) must not move the proposal: shrinking progress by its standard
    error keeps q at the base density (the unshrunk signal drifted to a total-variation distance of ~0.28)."""
    s = build_strategy("learning_progress", {}, 0.5)
    gen = torch.Generator().manual_seed(0)
    for step in range(2000):
        sigma = s.sample_sigma(256, "cpu", gen)
        loss = (1 + sigma.log().square()) * (1 + 0.3 * torch.randn(256, generator=gen))  # noisy but stationary
        s.update(sigma, loss.float())
    tv = 0.5 * (s.bin_probs() - s.bins.base_mass).abs().sum()
    assert tv < 0.03
    unshrunk = build_strategy("learning_progress", {"shrink_z": 0.0}, 0.5)
    unshrunk.load_state_dict(s.state_dict())
    assert 0.5 * (unshrunk.bin_probs() - unshrunk.bins.base_mass).abs().sum() > 0.1  # the bug it mends


def test_learning_progress_follows_real_progress():
    s = build_strategy("learning_progress", {"min_count": 16}, 0.5)
    gen = torch.Generator().manual_seed(1)
    for step in range(400):
        sigma = s.sample_sigma(256, "cpu", gen)
        # only σ in [0.5, 2] improves over time
        falling = ((sigma > 0.5) & (sigma < 2)).float() * 5 / (1 + step / 20)
        s.update(sigma, (1 + falling) * (1 + 0.05 * torch.randn(256, generator=gen)))
    q, p = s.bin_probs(), s.bins.base_mass
    mid = (s.bins.centers.exp() > 0.6) & (s.bins.centers.exp() < 1.8)
    assert (q[mid] / p[mid]).min() > 1.2 and (q[~mid] / p[~mid]).max() <= 1.0 + 1e-9


@pytest.mark.parametrize("min_snr_gamma", [None, 5.0])
@pytest.mark.parametrize("name", ["importance", "learning_progress", "excess_loss"])
def test_proposal_weights_keep_the_full_maskdit_objective(name, min_snr_gamma):
    """E_q[p/q·(λℓ + w·MAE)] = E_p[λℓ + w·MAE] for the whole MaskDiT loss, λ EDM's or Min-SNR-5's: the importance
    ratio multiplies the MAE term too. Checked by exact summation over σ bins with the real loss on a tiny model."""
    from diffusion.loss import MaskDiTLoss
    from diffusion.step_draws import Draws
    from diffusion.network import build_network
    from training.config import ModelConfig

    s = build_adaptive(name, {"min_count": 1, "min_snr_gamma": min_snr_gamma})
    feed(s, 40, seed=0)
    q, p = s.bin_probs(), s.bins.base_mass
    assert not torch.allclose(q, p)
    torch.manual_seed(0)
    net = build_network(ModelConfig(arch="S", patch_size=4, depth=1, width=16, heads=2, resolution=8,
                                    in_channels=1, num_classes=0, decoder_depth=1, decoder_width=16,
                                    decoder_heads=2))
    with torch.no_grad():
        for prm in net.parameters():
            prm.add_(0.05 * torch.randn_like(prm))
    sigma = s.bins.centers.exp().float()  # one σ per bin: the loss of bin b at its centre
    b = len(sigma)
    draws = Draws(sigma, torch.randn(1, 1, 8, 8).expand(b, -1, -1, -1), torch.rand(1, 4).expand(b, -1),
                  torch.zeros(b, dtype=torch.bool))
    images = torch.randn(1, 1, 8, 8).expand(b, -1, -1, -1)
    terms = MaskDiTLoss(4, 4, 0.1)(net, images, None, s, 0.5, draws)
    assert torch.all(terms.mae > 0)
    base = edm_weight(sigma, 0.5) if min_snr_gamma is None else (1 / sigma**2).clamp(max=min_snr_gamma)
    unweighted = base * terms.raw_denoise + 0.1 * terms.mae / (p / q).float()
    assert torch.allclose((q * terms.total.double()).sum(), (p * unweighted.double()).sum(), rtol=1e-5)


@pytest.mark.parametrize("min_snr_gamma", [None, 5.0])
def test_excess_loss_samples_in_proportion_to_the_reducible_loss(min_snr_gamma):
    """q(b) ∝ p(b)·E[λ(ℓ − J*) | b] (floor-mixed), λ EDM's or Min-SNR-5's: bins whose loss sits at J* get only
    the floor share."""
    s = build_adaptive("excess_loss", {"min_count": 1, "beta": 0.5, "floor": 0.2, "min_snr_gamma": min_snr_gamma})
    j_star = lambda sig: 0.3 * sig**2 / (0.3 + sig**2)  # noqa: E731 - the table build_adaptive set
    gen = torch.Generator().manual_seed(0)
    for _ in range(300):
        sigma = s.sample_sigma(512, "cpu", gen)
        excess = torch.where(sigma < 1, 0.2 * sigma**2, torch.zeros_like(sigma))  # reducible only below σ = 1
        s.update(sigma, (j_star(sigma.double()) + excess).float())
    q, p = s.bin_probs(), s.bins.base_mass
    sig = s.bins.centers.exp()
    high = sig > 1.5
    assert torch.allclose(q[high], 0.2 * p[high], rtol=0.05)  # only the floor
    weight = edm_weight(sig, 0.5) if min_snr_gamma is None else (1 / sig**2).clamp(max=min_snr_gamma)
    expected = p * weight * torch.where(sig < 1, 0.2 * sig**2, 0 * sig)
    expected = 0.8 * expected / expected.sum() + 0.2 * p
    low = (sig < 0.8) & (p > 1e-3)  # well-sampled bins (the open-ended tail bin averages over a wide σ range)
    assert torch.allclose(q[low], expected[low], rtol=0.15)
    torch.manual_seed(0)
    hist = torch.bincount(s.bins.index(s.sample_sigma(200_000, "cpu")), minlength=len(p)).double() / 200_000
    assert torch.allclose(hist, q, atol=0.004)


def test_optimal_loss_estimator_matches_the_gaussian_closed_form():
    """Gaussian data N(0, s²I): J*(σ) = s²σ²/(s² + σ²) per element. The exact empirical estimator and the
    L-candidate subset estimator both find it (d = 2, N = 20 000, where the empirical set is near Gaussian)."""
    from diffusion.optimal_loss import optimal_loss_table

    data = 0.8 * torch.randn(20_000, 2, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.3, 1.0, 3.0])
    closed = 0.64 * sigma.double()**2 / (0.64 + sigma.double()**2)
    exact = optimal_loss_table(data, sigma, num_queries=3000, num_candidates=10**9)
    subset = optimal_loss_table(data, sigma, num_queries=3000, num_candidates=2000, seed=1)
    assert torch.allclose(exact, closed, rtol=0.06)
    assert torch.allclose(subset, closed, rtol=0.08)


def test_optimal_loss_is_cached_and_reused(tmp_path):
    from diffusion.optimal_loss import load_or_estimate

    calls = []

    def data():
        calls.append(1)
        return torch.randn(500, 3, generator=torch.Generator().manual_seed(0))

    sigma = torch.tensor([0.1, 1.0])
    a = load_or_estimate(tmp_path / "j.json", data, sigma, 64, 100)
    b = load_or_estimate(tmp_path / "j.json", data, sigma, 64, 100)
    c = load_or_estimate(tmp_path / "j.json", data, sigma, 64, 200)  # other settings: estimated again
    assert torch.equal(a, b) and len(calls) == 2 and c.shape == (2,)


BAD_STRATEGY_PARAMS = [
    ("min_snr", "gamma=-5", "diffusion.strategy.params.gamma: -5 is not > 0"),  # trained silently on a negative loss
    ("min_snr", "gamma=abc", "diffusion.strategy.params.gamma: 'abc' must be a number"),
    ("min_snr", "gamma=[1,2]", "diffusion.strategy.params.gamma: [1, 2] must be a number, not a list"),
    ("min_snr", "sampling=uniform", "diffusion.strategy.params.sampling: 'uniform' is not one of edm | ddpm_uniform"),
    ("speed", "tau=700.5", "diffusion.strategy.params.tau: 700.5 must be an integer"),
    ("speed", "lam=5", "diffusion.strategy.params.lam: 5 is not in [0, 1]"),  # negative change-aware weights
    ("importance", "floor=0", "diffusion.strategy.params.floor: 0 is not in (0, 1]"),
    ("importance", "flor=0.2", "diffusion.strategy.params.flor: not a parameter of importance (its parameters: p_mean"),
    ("learning_progress", "keep_objective=1", "diffusion.strategy.params.keep_objective: 1 must be true or false"),
    ("excess_loss", "beta=1", "diffusion.strategy.params.beta: 1 is not in [0, 1)"),
    ("edm", "sigma_data=1", "diffusion.strategy.params.sigma_data: is set from model.sigma_data, not here"),
    ("edmm", "p_std=1", "diffusion.strategy.name: unknown strategy 'edmm'; choose from adaptive_weight | "),
]


@pytest.mark.parametrize("name,param,message", BAD_STRATEGY_PARAMS, ids=[f"{n}-{p}" for n, p, _ in BAD_STRATEGY_PARAMS])
def test_strategy_params_are_typed_and_range_checked(name, param, message):
    from training.config import ConfigError, load_config

    with pytest.raises(ConfigError) as err:
        load_config("configs/train/fashion-mnist.yaml", [f"diffusion.strategy.name={name}",
                                                         f"diffusion.strategy.params.{param}"])
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_every_strategy_accepts_its_own_defaults_and_a_yaml_int_for_a_float():
    """Each constructor argument is typed by its annotation; a YAML `5` is a valid float, `null` a valid optional."""
    import inspect

    from diffusion.strategies import STRATEGIES, strategy_problem

    for name, cls in STRATEGIES.items():
        defaults = {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()
                    if k not in ("self", "sigma_data") and p.default is not inspect.Parameter.empty}
        assert strategy_problem(name, defaults) is None, name
    assert strategy_problem("min_snr", {"gamma": 5}) is None
    assert strategy_problem("excess_loss", {"min_snr_gamma": None}) is None


def test_train_py_refuses_a_bad_strategy_parameter_before_building_anything(tmp_path):
    from conftest import run_cli

    run_dir = tmp_path / "run"
    proc = run_cli("train.py", "--config", "configs/train/fashion-mnist.yaml", f"run_dir={run_dir}",
                   "diffusion.strategy.name=min_snr", "diffusion.strategy.params.gamma=-5", check=False)
    assert proc.returncode != 0 and proc.stderr.strip().splitlines() == [
        "error: diffusion.strategy.params.gamma: -5 is not > 0"] and not run_dir.exists()
