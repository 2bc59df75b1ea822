"""The whole training forward (preconditioning, network, masking, routing, loss, strategy weights and p/q)
compiles as one graph: fullgraph=True means no graph break, so no .item(), no data-dependent Python branch and
no host round trip inside the step. Graph breaks are Dynamo's business, so the per-strategy check runs Dynamo
alone (backend "eager"); the model-variant check adds AOTAutograd (aot_eager: the forward and backward graphs
inductor would compile, without the C++ build), so the suite stays fast on a CPU."""

import pytest
import torch

from diffusion.loss import MaskDiTLoss
from diffusion.step_draws import draw_step, step_generator
from diffusion.strategies import build_strategy
from diffusion.network import build_network
from training.config import ModelConfig
from training.objective import TrainingObjective

TINY = dict(arch="S", resolution=8, in_channels=3, patch_size=2, num_classes=4, depth=6, width=32, heads=2,
            decoder_depth=1, decoder_width=32, decoder_heads=2)
STRATEGIES = [("edm", {}), ("speed", {}), ("min_snr", {}), ("min_snr", {"sampling": "ddpm_uniform"}),
              ("ddpm_uniform", {}), ("speed_edm", {}), ("importance", {}), ("adaptive_weight", {}),
              ("learning_progress", {}), ("excess_loss", {}), ("excess_loss", {"min_snr_gamma": 5.0})]


def make_objective(name: str, params: dict, model: dict):
    cfg = ModelConfig(**{**TINY, **model})
    net = build_network(cfg).train()
    strategy = build_strategy(name, dict(params, **({"min_count": 4} if name in (
        "importance", "adaptive_weight", "learning_progress", "excess_loss") else {})), 0.5)
    if name == "excess_loss":
        sigmas = strategy.bins.centers.exp()
        strategy.set_optimal_loss(sigmas, 0.25 * sigmas**2 / (sigmas**2 + 0.25))  # Gaussian J*, shape only
    num_tokens = (cfg.resolution // cfg.patch_size) ** 2
    return TrainingObjective(net, MaskDiTLoss(cfg.patch_size, num_tokens, 0.1, cfg.num_classes), strategy), cfg


def step_inputs(objective, cfg, step: int, route: bool):
    gen = step_generator(0, step, "cpu")
    draws = draw_step(objective.strategy, gen, 4, (3, 8, 8), objective.loss.num_tokens, 0.1, "cpu", route=route)
    images = torch.randn(4, 3, 8, 8, generator=gen)
    labels = torch.randint(0, cfg.num_classes, (4,), generator=gen)
    return images, labels, draws


@pytest.mark.parametrize("name,params", STRATEGIES, ids=[n + ("-" + "-".join(map(str, p.values())) if p else "")
                                                         for n, p in STRATEGIES])
def test_training_forward_compiles_whole_for_every_strategy(name, params):
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    objective, cfg = make_objective(name, params, {})
    compiled = torch.compile(objective, fullgraph=True, backend="eager")  # graph breaks are found by Dynamo itself
    for step in range(3):  # learning strategies: statistics change between steps, the graph must not
        images, labels, draws = step_inputs(objective, cfg, step, route=False)
        eager = objective(images, labels, draws, 0.5)
        terms = compiled(images, labels, draws, 0.5)
        assert torch.allclose(terms.total, eager.total, rtol=1e-5, atol=1e-6)
        terms.total.mean().backward()
        objective.strategy.update(terms.sigma.detach(), terms.raw_denoise)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1  # updated statistics cause no recompile


@pytest.mark.parametrize("model,mask_ratio", [({"use_decoder": False, "route": {"ratio": 0.5, "start": 1, "end": 3}}, 0.0),
                                              ({"route": {"ratio": 0.5, "start": 1, "end": 3}}, 0.5),
                                              ({}, 0.0)], ids=["dit-tread", "maskdit-tread", "finetune"])
def test_routed_and_unmasked_forward_compiles_whole(model, mask_ratio):
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    objective, cfg = make_objective("edm", {}, model)
    compiled = torch.compile(objective, fullgraph=True, backend="aot_eager")
    images, labels, draws = step_inputs(objective, cfg, 0, route=bool(model.get("route")))
    eager = objective(images, labels, draws, mask_ratio)
    assert torch.allclose(compiled(images, labels, draws, mask_ratio).total, eager.total, rtol=1e-5, atol=1e-6)


def test_strategy_to_moves_every_table_and_statistic():
    """`to` must reach every tensor a step reads, or each step copies it from the host (a sync on a GPU)."""
    for name, params in STRATEGIES:
        strategy = build_strategy(name, params, 0.5).to("meta")
        stack = [strategy]
        while stack:
            obj = stack.pop()
            for key, value in vars(obj).items():
                if isinstance(value, torch.Tensor):
                    assert value.device.type == "meta", f"{name}: {type(obj).__name__}.{key} stayed on {value.device}"
                elif isinstance(value, dict):
                    stack += [v for v in value.values() if hasattr(v, "__dict__")]
                elif type(value).__module__.startswith("diffusion."):
                    stack.append(value)


@pytest.mark.parametrize("name", ["importance", "adaptive_weight", "learning_progress", "excess_loss"])
def test_summed_statistics_of_two_processes_equal_the_whole_batch(name):
    """The trainer all-reduces per-bin sums instead of gathering samples: two halves summed must update the state
    exactly as the whole global batch did."""
    whole, split = (make_objective(name, {}, {})[0].strategy for _ in range(2))
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        sigma = whole.sample_sigma(64, "cpu", gen)
        loss = torch.rand(64, generator=gen) * sigma.square() / (1 + sigma.square())
        whole.update(sigma, loss)
        sums = split.loss_statistics(sigma[:32], loss[:32]) + split.loss_statistics(sigma[32:], loss[32:])
        split.update_from_sums(sums)
    for (key, a), b in zip(whole.state_dict().items(), split.state_dict().values()):
        for k in a:
            assert torch.allclose(a[k], b[k], rtol=1e-12, atol=1e-15), (name, key, k)
