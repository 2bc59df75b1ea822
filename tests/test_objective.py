import math

import pytest
import torch

from diffusion.loss import MaskDiTLoss
from diffusion.mask_schedule import mask_ratio_at
from diffusion.step_draws import Draws, draw_step, micro_batch_offset
from diffusion.strategies import build_strategy
from diffusion.strategies.base import NoiseLevelStrategy
from models.masking import TokenMask, random_mask
from diffusion.precond import EDMPrecond


class FixedStrategy(NoiseLevelStrategy):
    name = "fixed"

    def __init__(self, sigma, weight):
        self.sigma, self.weight = torch.tensor(sigma), torch.tensor(weight)

    def sample_sigma(self, batch, device, generator=None):
        return self.sigma[:batch].clone()

    def loss_weight(self, sigma):
        return self.weight[: len(sigma)].clone()


def test_precond_scalings_hand_values():
    pre = EDMPrecond(torch.nn.Identity(), sigma_data=0.5)
    c_skip, c_out, c_in, c_noise = pre.scalings(torch.tensor([1.0, 0.5]))
    # σ=1: c_skip = .25/1.25, c_out = .5/√1.25, c_in = 1/√1.25, c_noise = ln(1)/4
    assert torch.allclose(c_skip, torch.tensor([0.2, 0.5]))
    assert torch.allclose(c_out, torch.tensor([0.5 / math.sqrt(1.25), 0.25 / math.sqrt(0.5)]))
    assert torch.allclose(c_in, torch.tensor([1 / math.sqrt(1.25), 1 / math.sqrt(0.5)]))
    assert torch.allclose(c_noise, torch.tensor([0.0, math.log(0.5) / 4]))


def test_precond_combines_skip_and_backbone():
    class Backbone(torch.nn.Module):
        def forward(self, x_in, c_noise, labels, mask):
            self.seen = (x_in.clone(), c_noise.clone())
            return torch.full_like(x_in, 2.0)

    pre = EDMPrecond(Backbone(), 0.5)
    x = torch.full((1, 1, 2, 2), 3.0)
    d = pre(x, torch.tensor([1.0]), None)
    assert torch.allclose(pre.backbone.seen[0], x / math.sqrt(1.25))
    assert torch.allclose(d, torch.full_like(x, 0.2 * 3 + 0.5 / math.sqrt(1.25) * 2))


def test_edm_strategy_weight_and_lognormal():
    s = build_strategy("edm", {}, sigma_data=0.5)
    assert torch.allclose(s.loss_weight(torch.tensor([1.0, 2.0])), torch.tensor([5.0, (4.25) / 1.0]))
    torch.manual_seed(0)
    log_sigma = s.sample_sigma(200_000, "cpu").log()
    assert abs(log_sigma.mean().item() + 1.2) < 0.01 and abs(log_sigma.std().item() - 1.2) < 0.01
    with pytest.raises(ValueError, match="unknown strategy"):
        build_strategy("nope", {}, 0.5)
    with pytest.raises(ValueError, match="params"):
        build_strategy("edm", {"p_meen": 1.0}, 0.5)


def draws_for(strategy, batch, shape, num_tokens, seed=1, label_dropout=0.0):
    return draw_step(strategy, torch.Generator().manual_seed(seed), batch, shape, num_tokens, label_dropout, "cpu")


class Scripted(torch.nn.Module):
    """Returns a fixed D and records the noisy input it was given."""

    def __init__(self, d):
        super().__init__()
        self.d = d

    def forward(self, noisy, sigma, labels, mask):
        self.noisy = noisy
        return self.d.clone()


def hand_loss(d, y, noisy, mask, weight, patch, mae_weight):
    """Loop-based reference for MaskDiT's objective (REFERENCE.md §1)."""
    n, c, h, w = y.shape
    totals = []
    for i in range(n):
        vis_losses, mae_losses = [], []
        for t in range(mask.shape[1]):
            r, k = divmod(t, w // patch)
            sl = (slice(None), slice(r * patch, (r + 1) * patch), slice(k * patch, (k + 1) * patch))
            err = ((d[i][sl] - y[i][sl]) ** 2).mean()
            target = noisy[i][sl].permute(1, 2, 0).reshape(-1)  # pixels row-major, channels last
            target = (target - target.mean()) / torch.sqrt(target.var() + 1e-6)
            pred = d[i][sl].permute(1, 2, 0).reshape(-1)
            if mask[i, t] == 0:
                vis_losses.append(err)
            else:
                mae_losses.append(((pred - target) ** 2).mean())
        dsm = weight[i] * torch.stack(vis_losses).mean()
        mae = torch.stack(mae_losses).mean() if mae_losses else torch.tensor(0.0)
        totals.append(dsm + mae_weight * mae)
    return torch.stack(totals)


def test_loss_matches_hand_computation():
    torch.manual_seed(0)
    y = torch.randn(2, 2, 8, 8)
    d = torch.randn(2, 2, 8, 8)
    strategy = FixedStrategy([0.7, 3.0], [1.5, 0.25])
    loss_fn = MaskDiTLoss(patch_size=4, num_tokens=4, mae_weight=0.1)
    net = Scripted(d)
    draws = draws_for(strategy, 2, (2, 8, 8), 4)
    terms = loss_fn(net, y, None, strategy, 0.5, draws)
    gen = torch.Generator().manual_seed(1)  # the same sequence of draws, made by hand
    noise = torch.randn((2, 2, 8, 8), generator=gen)
    mask = random_mask(2, 4, 0.5, "cpu", generator=gen)
    assert torch.allclose(net.noisy, y + noise * torch.tensor([0.7, 3.0])[:, None, None, None])
    expected = hand_loss(d, y, net.noisy, mask.mask, strategy.weight, 4, 0.1)
    assert torch.allclose(terms.total, expected, atol=1e-5)
    assert torch.equal(terms.sigma, torch.tensor([0.7, 3.0]))


def test_mae_term_only_over_masked_tokens_and_dsm_only_over_visible():
    torch.manual_seed(0)
    y, d = torch.randn(1, 1, 8, 8), torch.randn(1, 1, 8, 8)
    mask = TokenMask(ids_keep=torch.tensor([[0, 3]]), ids_restore=torch.tensor([[0, 2, 3, 1]]),
                     mask=torch.tensor([[0.0, 1.0, 1.0, 0.0]]))
    loss_fn = MaskDiTLoss(patch_size=4, num_tokens=4, mae_weight=0.1)
    loss_fn.make_mask = lambda noise, ratio: mask
    strategy = FixedStrategy([1.0], [1.0])
    draws = draws_for(strategy, 1, (1, 8, 8), 4, seed=3)

    def terms_for(d_):
        return loss_fn(Scripted(d_), y, None, strategy, 0.5, draws)

    base = terms_for(d)
    d_vis = d.clone()
    d_vis[..., 0:4, 0:4] += 1.0  # token 0: visible
    d_mask = d.clone()
    d_mask[..., 0:4, 4:8] += 1.0  # token 1: masked
    changed_vis, changed_mask = terms_for(d_vis), terms_for(d_mask)
    assert torch.equal(changed_vis.mae, base.mae) and not torch.equal(changed_vis.denoise, base.denoise)
    assert torch.equal(changed_mask.denoise, base.denoise) and not torch.equal(changed_mask.mae, base.mae)


def test_unmasked_loss_is_plain_edm_over_all_tokens():
    torch.manual_seed(0)
    y, d = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8)
    loss_fn = MaskDiTLoss(patch_size=4, num_tokens=4, mae_weight=0.1)
    strategy = FixedStrategy([1.0, 2.0], [2.0, 3.0])
    terms = loss_fn(Scripted(d), y, None, strategy, 0.0, draws_for(strategy, 2, (1, 8, 8), 4))
    expected = torch.tensor([2.0, 3.0]) * ((d - y) ** 2).mean((1, 2, 3))
    assert torch.allclose(terms.total, expected) and torch.equal(terms.mae, torch.zeros(2))


def test_mask_ratio_schedules():
    assert mask_ratio_at(0.3, "constant", 0.5, 0.0) == 0.5
    assert mask_ratio_at(0.5, "linear", 0.5, 0.1) == pytest.approx(0.3)
    assert mask_ratio_at(0.0, "cosine", 0.5, 0.1) == pytest.approx(0.5)
    assert mask_ratio_at(1.0, "cosine", 0.5, 0.1) == pytest.approx(0.1)
    assert mask_ratio_at(0.5, "cosine", 0.5, 0.1) == pytest.approx(0.3)
    with pytest.raises(ValueError):
        mask_ratio_at(0.5, "step", 0.5, 0.1)


def test_step_draws_slice_is_independent_of_the_process_layout():
    """1 process x 8 samples x 2 rounds and 2 processes x 4 x 2 rounds see the same per-sample draws."""
    strategy = build_strategy("edm", {}, 0.5)
    full = draws_for(strategy, 16, (1, 4, 4), 4, label_dropout=0.5)
    one = [full.slice(micro_batch_offset(r, 0, 1, 8), 8) for r in range(2)]
    two = {(r, k): full.slice(micro_batch_offset(r, k, 2, 4), 4) for r in range(2) for k in range(2)}
    # global order: round-major, then rank
    assert torch.equal(torch.cat([one[0].noise, one[1].noise]),
                       torch.cat([two[(0, 0)].noise, two[(0, 1)].noise, two[(1, 0)].noise, two[(1, 1)].noise]))
    assert full.label_drop.any() and not full.label_drop.all()


def test_label_dropout_happens_in_the_loss():
    seen = {}

    class Net(torch.nn.Module):
        def forward(self, noisy, sigma, labels, mask):
            seen["labels"] = labels
            return noisy

    strategy = FixedStrategy([1.0, 1.0, 1.0], [1.0, 1.0, 1.0])
    draws = Draws(torch.ones(3), torch.zeros(3, 1, 4, 4), torch.rand(3, 1), torch.tensor([True, False, True]))
    MaskDiTLoss(4, 1, 0.1, null_label=7)(Net(), torch.zeros(3, 1, 4, 4), torch.tensor([1, 2, 3]), strategy, 0.0, draws)
    assert seen["labels"].tolist() == [7, 2, 7]
