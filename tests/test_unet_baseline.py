"""The classic baseline: DDPM CIFAR-10 U-Net + VP (ε) preconditioning + uniform-t loss = DDPM's objective."""

import pytest
import torch

from diffusion.loss import MaskDiTLoss
from diffusion.step_draws import Draws
from diffusion.strategies import build_strategy
from diffusion.ddpm_schedule import DDPMSchedule
from diffusion.network import build_network
from training.config import ConfigError, load_config

UNET = dict(arch="ddpm_unet", precond="vp", resolution=16, in_channels=1, num_classes=3, unet_channels=16,
            unet_dropout=0.0, sigma_data=0.5)


def randomized(cfg: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    net = build_network(cfg)
    with torch.no_grad():  # perturb the init so outputs clearly depend on inputs and labels
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return net.eval()


def test_ddpm_cifar10_topology_has_the_papers_parameter_count():
    net = build_network(dict(UNET, resolution=32, in_channels=3, num_classes=0, unet_channels=128))
    assert sum(p.numel() for p in net.parameters()) == 35_746_307  # Ho et al. 2020: 35.7 M


def test_fractional_timestep_is_exact_on_the_schedule_and_monotone_between():
    schedule = DDPMSchedule()
    t = torch.tensor([0, 1, 500, 999])
    assert torch.equal(schedule.fractional_timestep(schedule.sigma(t)), t.float())
    mid = (schedule.sigma(torch.tensor([10])) + schedule.sigma(torch.tensor([11]))) / 2
    assert 10 < schedule.fractional_timestep(mid).item() < 11
    assert schedule.fractional_timestep(torch.tensor([1e-5, 1e4])).tolist() == [0.0, 999.0]  # clamped


def test_vp_precond_with_ddpm_uniform_loss_is_the_epsilon_mse():
    """λ(σ)·||D − y||² with λ = 1/σ² and D = x − σ F equals ||ε − F||² (DDPM's simple loss)."""
    net = randomized(UNET)
    strategy = build_strategy("ddpm_uniform", {}, 0.5)
    gen = torch.Generator().manual_seed(1)
    y = torch.randn(4, 1, 16, 16, generator=gen)
    eps = torch.randn(4, 1, 16, 16, generator=gen)
    t = torch.tensor([3, 100, 600, 990])
    sigma = strategy.schedule.sigma(t)
    labels = torch.tensor([0, 1, 2, 1])
    draws = Draws(sigma=sigma, noise=eps, mask_noise=torch.rand(4, 256, generator=gen),
                  label_drop=torch.zeros(4, dtype=torch.bool))  # keep every label
    terms = MaskDiTLoss(patch_size=1, num_tokens=256, mae_weight=0.0, null_label=3)(
        net, y, labels, strategy, 0.0, draws)
    x_vp = (y + sigma[:, None, None, None] * eps) / (sigma[:, None, None, None] ** 2 + 1).sqrt()  # √ᾱ_t x
    eps_hat = net.backbone(x_vp, t.float(), labels)  # the U-Net sees the integer DDPM step
    expected = (eps - eps_hat).square().mean((1, 2, 3))
    torch.testing.assert_close(terms.total, expected, rtol=1e-4, atol=1e-5)


def test_unet_takes_the_null_label_and_refuses_masks():
    net = randomized(UNET)
    x, sigma = torch.randn(2, 1, 16, 16), torch.tensor([0.5, 5.0])
    assert net(x, sigma, torch.tensor([3, 3])).shape == x.shape  # index num_classes = unconditional (CFG)
    assert not torch.allclose(net(x, sigma, torch.tensor([0, 0])), net(x, sigma, torch.tensor([1, 1])))
    from models.masking import random_mask

    with pytest.raises(ValueError, match="mask.ratio 0"):
        net(x, sigma, None, random_mask(2, 256, 0.5, "cpu"))


def test_config_rejects_a_masked_unet_and_an_unknown_precond():
    with pytest.raises(ConfigError, match="ddpm_unet trains on whole images"):
        load_config("configs/train/fashion-mnist.yaml", ["model.arch=ddpm_unet"])
    with pytest.raises(ConfigError, match="model.precond"):
        load_config("configs/train/fashion-mnist.yaml", ["model.precond=ve"])
