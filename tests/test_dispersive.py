"""Dispersive loss (Wang & He 2025; diffusion/dispersive.py): the formula against a value computed by hand, its
gradient's direction, which representation each backbone variant hands it, how it enters the objective, the
compiled step, the config checks, and a real training run."""

import json
import math

import pytest
import torch

from conftest import train_tiny
from diffusion.dispersive import Dispersive, dispersive_loss, repr_block_index
from diffusion.loss import MaskDiTLoss
from diffusion.network import build_network
from diffusion.step_draws import draw_step, step_generator
from diffusion.strategies import build_strategy
from training.config import ConfigError, ModelConfig, load_config
from training.objective import TrainingObjective

TINY = dict(arch="S", resolution=8, in_channels=3, patch_size=2, num_classes=4, depth=6, width=32, heads=2,
            decoder_depth=1, decoder_width=32, decoder_heads=2)


def by_hand(z: list[list[float]], tau: float) -> float:
    """log of the mean over all ordered pairs (i = j included) of exp(−Σ_k (z_ik − z_jk)² / (τ·D'))."""
    n, dim = len(z), len(z[0])
    terms = [math.exp(-sum((a - b) ** 2 for a, b in zip(zi, zj)) / (tau * dim)) for zi in z for zj in z]
    return math.log(sum(terms) / (n * n))


def test_the_formula_against_a_hand_computed_value():
    z = [[0.0, 1.0], [2.0, -1.0], [0.5, 0.5]]
    # distances² / D': pairs (0,1): (4 + 4)/2 = 4; (0,2): (0.25 + 0.25)/2 = 0.25; (1,2): (2.25 + 2.25)/2 = 2.25
    expected = math.log((3 + 2 * (math.exp(-4 / 0.5) + math.exp(-0.25 / 0.5) + math.exp(-2.25 / 0.5))) / 9)
    assert by_hand(z, 0.5) == pytest.approx(expected, rel=1e-12)
    assert dispersive_loss(torch.tensor(z), 0.5).item() == pytest.approx(expected, rel=1e-6)


def test_random_batches_match_the_pairwise_formula_and_identical_ones_give_zero():
    gen = torch.Generator().manual_seed(0)
    for n, dim, scale, tau in [(4, 16, 1.0, 1.0), (7, 300, 0.3, 0.5), (2, 5, 10.0, 0.5)]:
        z = torch.randn(n, dim, generator=gen) * scale
        assert dispersive_loss(z, tau).item() == pytest.approx(by_hand(z.tolist(), tau), rel=1e-5, abs=1e-6)
    assert dispersive_loss(torch.ones(5, 8), 0.5).item() == pytest.approx(0.0, abs=1e-6)  # all pairs at 0
    assert dispersive_loss(torch.randn(1, 8), 0.5).item() == 0.0  # one sample: nothing to disperse
    far = dispersive_loss(torch.tensor([[0.0], [1e4]]), 0.5)  # log-sum-exp: no log(0) at huge distances
    assert far.item() == pytest.approx(math.log(0.5), rel=1e-6)


def test_its_gradient_pushes_two_close_representations_apart():
    z = torch.tensor([[1.0, 0.0, 0.5], [1.01, 0.0, 0.5], [-1.0, 2.0, 0.0]], requires_grad=True)
    dispersive_loss(z, 0.5).backward()
    stepped = z.detach() - 0.1 * z.grad  # one gradient step on L_disp
    assert (stepped[0] - stepped[1]).norm() > (z[0] - z[1]).detach().norm()
    assert torch.allclose(z.grad.sum(0), torch.zeros(3), atol=1e-6)  # translation invariant: no net drift


def test_the_block_fraction_picks_a_block_of_any_depth():
    assert repr_block_index(0.25, 28) == 6  # XL: the output of block 7 = depth // 4, counted from 1
    assert repr_block_index(1.0, 28) == 27 and repr_block_index(1.0, 6) == 5  # the last encoder block
    assert repr_block_index(0.01, 12) == 0  # never before the first block


def backbone_and_inputs(model: dict, mask_ratio: float, route: bool):
    cfg = ModelConfig(**{**TINY, **model})
    net = build_network(cfg).train()
    num_tokens = (cfg.resolution // cfg.patch_size) ** 2
    strategy = build_strategy("edm", {}, 0.5)
    gen = step_generator(0, 0, "cpu")
    draws = draw_step(strategy, gen, 4, (3, 8, 8), num_tokens, 0.1, "cpu", route=route)
    loss = MaskDiTLoss(cfg.patch_size, num_tokens, 0.1, cfg.num_classes)
    return net, loss.make_mask(draws.mask_noise, mask_ratio), draws


@pytest.mark.parametrize("model,mask_ratio,block,pooled", [
    ({"use_decoder": False}, 0.0, 2, False),  # DiT: every token in place -> flattened, as the paper
    ({}, 0.5, 2, True),  # MaskDiT: each sample's visible set -> the mean over it
    ({"use_decoder": False, "route": {"ratio": 0.5, "start": 1, "end": 3}}, 0.0, 2, True),  # inside the route
    ({"use_decoder": False, "route": {"ratio": 0.5, "start": 1, "end": 3}}, 0.0, 4, False),  # after it
], ids=["dit", "maskdit", "routed-block", "after-route"])
def test_each_variant_hands_over_the_chosen_blocks_output(model, mask_ratio, block, pooled):
    net, mask, draws = backbone_and_inputs(model, mask_ratio, route="route" in model)
    seen = {}
    net.backbone.blocks[block].register_forward_hook(lambda mod, args, out: seen.setdefault("out", out))
    x = torch.randn(4, 3, 8, 8)
    sigma, labels = torch.full((4,), 0.7), torch.tensor([0, 1, 2, 3])
    denoised, block_out = net(x, sigma, labels, mask, draws.route_noise, repr_block=block)
    out = seen["out"]  # (N, T_b, D) as the block emitted it
    assert torch.equal(block_out.tokens, out) and (block_out.positions is not None) == pooled
    assert torch.equal(block_out.per_sample(), out.mean(1) if pooled else out.flatten(1))
    assert out.shape[1] < 16 if pooled else out.shape[1] == 16
    assert torch.equal(denoised, net(x, sigma, labels, mask, draws.route_noise))  # the output is unchanged


def test_the_objective_adds_lambda_times_the_batch_term():
    net, mask, draws = backbone_and_inputs({}, 0.5, route=False)
    disp = Dispersive(weight=0.5, temperature=0.5, block=1)
    loss = MaskDiTLoss(2, 16, 0.1, 4, disp)
    images, labels = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    terms = TrainingObjective(net, loss, build_strategy("edm", {}, 0.5))(images, labels, draws, 0.5)
    assert torch.allclose(terms.total, terms.denoise + 0.1 * terms.mae + 0.5 * terms.repr, rtol=1e-6)
    assert terms.repr.shape == (4,) and torch.all(terms.repr == terms.repr[0]) and terms.repr[0] < 0
    plain = TrainingObjective(net, MaskDiTLoss(2, 16, 0.1, 4), build_strategy("edm", {}, 0.5))(
        images, labels, draws, 0.5)
    assert torch.equal(plain.denoise, terms.denoise) and torch.equal(plain.repr, torch.zeros(4))
    terms.total.mean().backward()  # the regulariser reaches the encoder below its block only through z
    assert net.backbone.blocks[0].attn.qkv.weight.grad is not None


@pytest.mark.parametrize("model,mask_ratio,route", [({}, 0.5, False), ({"use_decoder": False}, 0.0, False),
                                                    ({"route": {"ratio": 0.5, "start": 1, "end": 3}}, 0.5, True)],
                         ids=["maskdit", "dit", "maskdit-tread"])
def test_the_training_forward_with_the_term_compiles_whole(model, mask_ratio, route):
    torch._dynamo.reset()
    net, _, draws = backbone_and_inputs(model, mask_ratio, route)
    loss = MaskDiTLoss(2, 16, 0.1, 4, Dispersive(0.5, 0.5, 2))
    objective = TrainingObjective(net, loss, build_strategy("edm", {}, 0.5))
    images, labels = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    compiled = torch.compile(objective, fullgraph=True, backend="aot_eager")  # no graph break, forward + backward
    eager = objective(images, labels, draws, mask_ratio)
    terms = compiled(images, labels, draws, mask_ratio)
    assert torch.allclose(terms.total, eager.total, rtol=1e-5, atol=1e-6)
    terms.total.mean().backward()


@pytest.mark.parametrize("override,message", [
    ("loss.repr.kind=contrastive", "loss.repr.kind: 'contrastive' is not one of none | dispersive | sra"),
    ("loss.repr.dispersive.temperature=0", "loss.repr.dispersive.temperature: 0.0 must be a finite number > 0"),
    ("loss.repr.dispersive.weight=-1", "loss.repr.dispersive.weight: -1.0 must be a finite number ≥ 0"),
    ("loss.repr.dispersive.block_fraction=1.5", "loss.repr.dispersive.block_fraction: 1.5 must be in (0, 1]"),
    ("train.batch_gpu=1", "needs ≥ 2 per process"),
    ("model.arch=ddpm_unet", "model.arch ddpm_unet has none"),
])
def test_bad_settings_are_one_line_naming_the_key(override, message):
    extra = ["mask.ratio=0", "model.use_decoder=false"] if "ddpm_unet" in override else []
    kind = [] if "kind=" in override else ["loss.repr.kind=dispersive"]
    with pytest.raises(ConfigError) as err:
        load_config("configs/train/fashion-mnist.yaml", [*kind, *extra, override])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_tiny_run_trains_with_it_and_logs_the_term(tmp_path, tiny_fmnist):
    run_dir = tmp_path / "disp"
    train_tiny(run_dir, tiny_fmnist, "loss.repr.kind=dispersive", "loss.repr.dispersive.block_fraction=1.0")
    rows = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["loss_dispersive"]) and r["loss_dispersive"] <= 0 for r in rows)
