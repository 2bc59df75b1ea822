"""TREAD token routing (models/routing.py): which blocks see which tokens, reinsertion, eval, FLOPs, loss."""

import pytest
import torch

from diffusion.loss import MaskDiTLoss
from diffusion.step_draws import draw_step
from diffusion.strategies import build_strategy
from diffusion.network import build_network
from models.masking import random_mask
from models.routing import RouteSpec
from training.config import ModelConfig

ROUTED = ModelConfig(arch="S", patch_size=4, depth=6, width=32, heads=2, resolution=16, in_channels=3,
                     num_classes=5, use_decoder=False, route=RouteSpec(ratio=0.5, start=1, end=3))


def randomized(cfg: ModelConfig, seed: int = 0):
    torch.manual_seed(seed)
    net = build_network(cfg)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # adaLN-Zero would make every block an identity
    return net.train()


def tokens_seen(net) -> list[int]:
    seen = []
    for block in net.backbone.blocks:
        block.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[1]))
    return seen


def test_routed_tokens_skip_exactly_blocks_start_to_end():
    net = randomized(ROUTED)
    seen = tokens_seen(net)
    x, noise = torch.randn(2, 3, 16, 16), torch.rand(2, 16)
    out = net(x, torch.tensor([0.5, 2.0]), torch.tensor([0, 1]), None, noise)
    assert out.shape == x.shape  # every token reaches the output
    assert seen == [16, 8, 8, 8, 16, 16]  # blocks 1..3 (inclusive) see half the tokens


def test_bypassing_tokens_reenter_with_their_pre_route_activations():
    """After block `end`, a bypassing token holds exactly what it held at the input of block `start`
    (replaced, not added); a processed token has moved on."""
    net = randomized(ROUTED)
    seen = {}
    net.backbone.blocks[0].register_forward_hook(lambda m, args, out: seen.setdefault("pre_route", out.clone()))
    net.backbone.blocks[4].register_forward_pre_hook(lambda m, args: seen.update(after_end=args[0].clone()))
    x, noise = torch.randn(2, 3, 16, 16), torch.rand(2, 16)
    net(x, torch.tensor([0.5, 2.0]), torch.tensor([0, 1]), None, noise)
    order = torch.argsort(noise, dim=1)
    processed, bypass = order[:, :8], order[:, 8:]  # (2, 8) each
    for n in range(2):
        assert torch.equal(seen["after_end"][n, bypass[n]], seen["pre_route"][n, bypass[n]])
        assert not torch.allclose(seen["after_end"][n, processed[n]], seen["pre_route"][n, processed[n]])


def test_eval_mode_routes_nothing():
    net = randomized(ROUTED).eval()
    seen = tokens_seen(net)
    x, sigma, labels = torch.randn(2, 3, 16, 16), torch.tensor([0.5, 2.0]), torch.tensor([0, 1])
    a = net(x, sigma, labels, None, torch.rand(2, 16))
    b = net(x, sigma, labels)
    assert seen == [16] * 12 and torch.equal(a, b)


def test_ratio_zero_gives_the_unrouted_loss():
    plain_cfg = ModelConfig(**{**ROUTED.__dict__, "route": RouteSpec()})
    routed0_cfg = ModelConfig(**{**ROUTED.__dict__, "route": RouteSpec(ratio=0.0, start=1, end=3)})
    plain, routed0 = randomized(plain_cfg), randomized(routed0_cfg)
    routed0.load_state_dict(plain.state_dict())
    strategy = build_strategy("edm", {}, 0.5)
    gen = torch.Generator().manual_seed(0)
    draws = draw_step(strategy, gen, 4, (3, 16, 16), 16, 0.1, "cpu", route=True)
    images, labels = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    loss = MaskDiTLoss(4, 16, 0.1, 5)
    assert torch.equal(loss(plain, images, labels, strategy, 0.0, draws).total,
                       loss(routed0, images, labels, strategy, 0.0, draws).total)


def test_routing_draws_come_last():
    """Turning routing on leaves every other draw of the step unchanged (paired comparisons)."""
    strategy = build_strategy("edm", {}, 0.5)
    a = draw_step(strategy, torch.Generator().manual_seed(3), 4, (3, 16, 16), 16, 0.1, "cpu")
    b = draw_step(strategy, torch.Generator().manual_seed(3), 4, (3, 16, 16), 16, 0.1, "cpu", route=True)
    assert a.route_noise is None and b.route_noise.shape == (4, 16)
    assert all(torch.equal(getattr(a, k), getattr(b, k)) for k in ("sigma", "noise", "mask_noise", "label_drop"))


def test_routing_combines_with_masking():
    """MaskDiT + TREAD: the route picks from the visible tokens; the decoder still sees every token."""
    cfg = ModelConfig(**{**ROUTED.__dict__, "use_decoder": True, "decoder_depth": 1, "decoder_width": 24,
                         "decoder_heads": 2})
    net = randomized(cfg)
    seen = tokens_seen(net)
    mask = random_mask(2, 16, 0.5, "cpu")
    out = net(torch.randn(2, 3, 16, 16), torch.tensor([0.5, 2.0]), torch.tensor([0, 1]), mask, torch.rand(2, 16))
    assert out.shape == (2, 3, 16, 16) and seen == [8, 4, 4, 4, 8, 8]


def test_flop_count_falls_by_the_routed_share():
    """Forward FLOPs fall by exactly (routed blocks) × (block FLOPs at T − block FLOPs at R) tokens."""
    from torch.utils.flop_counter import FlopCounterMode

    def flops(fn) -> int:
        with FlopCounterMode(display=False) as counter:
            fn()
        return counter.get_total_flops()

    net = randomized(ROUTED)
    x, sigma, labels = torch.randn(2, 3, 16, 16), torch.tensor([0.5, 2.0]), torch.tensor([0, 1])
    routed = flops(lambda: net(x, sigma, labels, None, torch.rand(2, 16)))
    plain = flops(lambda: net(x, sigma, labels))
    c = torch.randn(2, 32)
    block = net.backbone.blocks[2]
    per_block_full = flops(lambda: block(torch.randn(2, 16, 32), c))
    per_block_routed = flops(lambda: block(torch.randn(2, 8, 32), c))
    assert plain - routed == 3 * (per_block_full - per_block_routed)
    assert routed < plain


def test_bad_route_is_refused_in_one_line():
    from training.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="model.route: start 4 and end 9"):
        load_config("configs/train/fashion-mnist.yaml", ["model.route.ratio=0.5", "model.route.start=4",
                                                          "model.route.end=9"])
    with pytest.raises(ConfigError, match="ddpm_unet"):
        load_config("configs/train/fashion-mnist.yaml", ["model.arch=ddpm_unet", "mask.ratio=0",
                                                          "model.route.ratio=0.5"])


def test_imagenet_tread_recipe_and_its_training_flops():
    """configs/train/imagenet256-latent-tread.yaml is DiT-XL/2 (675.1 M) routing 50 % of the tokens around
    blocks 2..24; FlopCounterMode on the meta device gives its training FLOPs per image (README table)."""
    from torch.utils.flop_counter import FlopCounterMode

    from models.build import count_parameters
    from training.config import load_config

    cfg = load_config("configs/train/imagenet256-latent-tread.yaml")
    assert (cfg.model.arch, cfg.model.use_decoder, cfg.mask.ratio) == ("XL", False, 0.0)
    assert (cfg.model.route.ratio, cfg.model.route.start, cfg.model.route.end) == (0.5, 2, 24)
    assert (cfg.train.batch_size, cfg.optim.lr, cfg.train.ema_decay) == (256, 1e-4, 0.9999)
    strategy = build_strategy("edm", {}, 0.5)
    with torch.device("meta"):
        net = build_network(cfg.model)
        x, y = torch.randn(2, 4, 32, 32), torch.randint(0, 1000, (2,))
    assert count_parameters(net) / 1e6 == pytest.approx(675.1, abs=0.1)  # routing adds no parameters
    net = net.to("meta").train()
    draws = draw_step(strategy, None, 2, (4, 32, 32), 256, 0.1, "meta", route=True)
    with FlopCounterMode(display=False) as counter:
        MaskDiTLoss(2, 256, 0.1, 1000)(net, x, y, strategy, 0.0, draws).total.mean().backward()
    gflop = counter.get_total_flops() / 2 / 1e9
    # 23 of 28 blocks at half the tokens: ≈ (5 + 23/2)/28 of DiT-XL/2's 712 G (attention is a little less)
    assert gflop == pytest.approx(712 * (5 + 23 / 2) / 28, rel=0.03)
    print(f"DiT-XL/2 + TREAD training GFLOP per image: {gflop:.1f}")
