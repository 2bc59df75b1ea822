import pytest
import torch

from diffusion.network import build_network
from models.build import backbone_spec, count_parameters
from models.masking import random_mask
from training.config import ModelConfig

TINY = ModelConfig(arch="S", patch_size=4, depth=2, width=32, heads=2, resolution=16, in_channels=3,
                   num_classes=5, decoder_depth=1, decoder_width=24, decoder_heads=2)


def randomize(net):
    """adaLN-Zero makes a fresh net output zeros; perturb so outputs depend on inputs."""
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return net


def test_encoder_sees_only_visible_tokens():
    net = randomize(build_network(TINY)).train()
    seen = []
    net.backbone.blocks[0].register_forward_hook(lambda m, args, out: seen.append(args[0].shape))
    net.backbone.decoder_blocks[0].register_forward_hook(lambda m, args, out: seen.append(args[0].shape))
    x = torch.randn(3, 3, 16, 16)
    mask = random_mask(3, 16, 0.5, "cpu")
    out = net(x, torch.ones(3), torch.tensor([0, 1, 2]), mask)
    assert out.shape == x.shape
    assert seen[0] == (3, 8, 32)  # encoder: 8 of 16 tokens
    assert seen[1] == (3, 16, 24)  # decoder: all tokens at decoder width


def test_eval_mode_uses_all_tokens_and_is_deterministic():
    net = randomize(build_network(TINY)).eval()
    seen = []
    net.backbone.blocks[0].register_forward_hook(lambda m, args, out: seen.append(args[0].shape))
    x = torch.randn(2, 3, 16, 16)
    a = net(x, torch.tensor([0.5, 2.0]), torch.tensor([1, 4]))
    b = net(x, torch.tensor([0.5, 2.0]), torch.tensor([1, 4]))
    assert seen[0] == (2, 16, 32)
    assert torch.equal(a, b)  # eval is deterministic (label dropout lives in the loss, not the model)


def test_masked_output_does_not_depend_on_removed_tokens():
    net = randomize(build_network(TINY)).eval()
    x = torch.randn(1, 3, 16, 16)
    mask = random_mask(1, 16, 0.5, "cpu")
    # Change the pixels of one removed patch: the backbone output must not change at all.
    removed = int(torch.nonzero(mask.mask[0]).flatten()[0])
    r, c = divmod(removed, 4)
    x2 = x.clone()
    x2[..., r * 4:(r + 1) * 4, c * 4:(c + 1) * 4] += 5.0
    s, y = torch.ones(1), torch.tensor([2])
    f1 = net.backbone(x, s.log() / 4, y, mask)
    f2 = net.backbone(x2, s.log() / 4, y, mask)
    assert torch.allclose(f1, f2, atol=1e-6)


def test_label_dropout_maps_to_the_null_label():
    from models.embeddings import drop_labels

    net = build_network(TINY)
    emb = net.backbone.label_embed
    labels = drop_labels(torch.tensor([0, 1, 2]), torch.tensor([True, False, True]), null_label=5)
    assert labels.tolist() == [5, 1, 5]
    assert torch.equal(emb(labels), emb.table.weight[[5, 1, 5]])  # row num_classes is the null embedding


def test_unconditional_and_dit_baseline():
    uncond = build_network(ModelConfig(**{**TINY.__dict__, "num_classes": 0}))
    assert uncond.backbone.label_embed is None
    assert uncond(torch.randn(2, 3, 16, 16), torch.ones(2), None).shape == (2, 3, 16, 16)
    dit = build_network(ModelConfig(**{**TINY.__dict__, "use_decoder": False}))
    assert not hasattr(dit.backbone, "decoder_blocks")
    with pytest.raises(ValueError, match="decoder"):
        dit(torch.randn(2, 3, 16, 16), torch.ones(2), torch.tensor([0, 1]), random_mask(2, 16, 0.5, "cpu"))


def test_adaln_zero_init_outputs_zero_residual():
    """Zero-initialised final layer: F = 0 at init, so D = c_skip·x."""
    net = build_network(TINY)
    x, sigma = torch.randn(2, 3, 16, 16), torch.tensor([0.3, 3.0])
    c_skip = 0.25 / (sigma**2 + 0.25)
    assert torch.allclose(net(x, sigma, torch.tensor([0, 1])), c_skip[:, None, None, None] * x)


@pytest.mark.parametrize("use_decoder,expected_m", [(True, 730.5), (False, 675.1)])
def test_xl2_parameter_counts_match_reference(use_decoder, expected_m):
    """REFERENCE.md §1: MaskDiT-XL/2 (8x512 decoder) 730.5 M, DiT-XL/2 675.1 M at 32x32x4, 1000 classes."""
    cfg = ModelConfig(arch="XL", patch_size=2, resolution=32, in_channels=4, num_classes=1000,
                      use_decoder=use_decoder)
    with torch.device("meta"):
        net = build_network(cfg)
    assert round(count_parameters(net) / 1e6, 1) == expected_m


def test_arch_presets():
    for arch, (depth, width, heads) in {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16),
                                        "XL": (28, 1152, 16)}.items():
        spec = backbone_spec(ModelConfig(arch=arch))
        assert (spec.depth, spec.width, spec.heads) == (depth, width, heads)
    assert backbone_spec(ModelConfig(arch="S", depth=3)).depth == 3
    with pytest.raises(ValueError, match="model.arch"):
        backbone_spec(ModelConfig(arch="XXL"))


def test_sincos_pos_embed_is_fixed_and_mae_style():
    from models.embeddings import sincos_2d

    table = sincos_2d(8, 2)  # (4, 8)
    # token (row 0, col 1): first half encodes the column (w), second half the row (h), each [sin | cos].
    omega = 1.0 / 10000 ** (torch.arange(2, dtype=torch.float64) / 2)
    expected = torch.cat([torch.sin(1 * omega), torch.cos(1 * omega), torch.sin(0 * omega), torch.cos(0 * omega)])
    assert torch.allclose(table[1].double(), expected, atol=1e-6)
    net = build_network(TINY)
    assert "backbone.pos_embed" not in net.state_dict()
    assert all(not name.endswith("pos_embed") for name, _ in net.named_parameters())


@pytest.mark.parametrize("use_decoder,ratio,expected_gflop", [(True, 0.5, 391), (False, 0.0, 712)])
def test_training_flops_match_reference(use_decoder, ratio, expected_gflop):
    """REFERENCE.md §4: training FLOPs per image (fwd + bwd) of MaskDiT-XL/2 at 50% mask ≈ 391 G, DiT-XL/2 712 G.
    Counted by torch's FlopCounterMode on the meta device, the way benchmarks/throughput.py computes MFU."""
    from torch.utils.flop_counter import FlopCounterMode

    from diffusion.loss import MaskDiTLoss
    from diffusion.step_draws import draw_step
    from diffusion.strategies import build_strategy

    strategy = build_strategy("edm", {}, 0.5)
    with torch.device("meta"):
        net = build_network(ModelConfig(arch="XL", use_decoder=use_decoder))
        x, y = torch.randn(2, 4, 32, 32), torch.randint(0, 1000, (2,))
    net = net.to("meta")
    draws = draw_step(strategy, None, 2, (4, 32, 32), 256, 0.1, "meta")
    with FlopCounterMode(display=False) as counter:
        MaskDiTLoss(2, 256, 0.1, 1000)(net, x, y, strategy, ratio, draws).total.mean().backward()
    assert counter.get_total_flops() / 2 / 1e9 == pytest.approx(expected_gflop, rel=0.01)


def test_compiled_training_step_matches_eager():
    """torch.compile (masked forward + backward) equals eager within float tolerance."""
    from models.masking import random_mask

    torch.manual_seed(0)
    net = randomize(build_network(TINY)).train()
    x, sigma, labels = torch.randn(2, 3, 16, 16), torch.tensor([0.5, 2.0]), torch.tensor([1, 2])
    mask = random_mask(2, 16, 0.5, "cpu")

    def grads(model):
        net.zero_grad()
        model(x, sigma, labels, mask).square().mean().backward()
        return [p.grad.clone() for p in net.parameters()]

    eager = grads(net)
    compiled = grads(torch.compile(net, backend="aot_eager"))  # the graphs inductor gets, without the C++ build
    assert all(torch.allclose(a, b, atol=1e-5, rtol=1e-4) for a, b in zip(eager, compiled))
