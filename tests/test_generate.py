"""generate.py and the samplers on a tiny trained checkpoint."""

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from diffusion.generation import SamplingOptions, sample_batch
from diffusion.samplers import SeededRandn, ddim_sample, ddpm_sample, edm_sample
from diffusion.network import load_for_sampling

from conftest import run_cli


@pytest.fixture(scope="module")
def tiny_net(full_run):
    net, meta = load_for_sampling(full_run)
    with torch.no_grad():  # a few steps of training leave outputs near zero; perturb so samples are informative
        gen = torch.Generator().manual_seed(0)
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return net


@pytest.mark.parametrize("sampler,steps", [("edm", 4), ("euler", 4), ("ddim", 5), ("ddpm", 6)])
def test_image_depends_only_on_its_seed(tiny_net, sampler, steps):
    opts = SamplingOptions(sampler=sampler, num_steps=steps, cfg_scale=2.0)
    seeds = [5, 6, 7, 8]
    labels = torch.tensor([1, 2, 3, 4])
    together = sample_batch(tiny_net, seeds, labels, (1, 32, 32), opts, "cpu")
    alone = sample_batch(tiny_net, seeds[2:3], labels[2:3], (1, 32, 32), opts, "cpu")
    # equal up to float rounding, which depends on the batch size (2.9e-5 on values up to 7.4 on an AMD EPYC):
    # relative to the samples' magnitude, not an absolute bound that holds on one CPU only
    torch.testing.assert_close(together[2:3], alone, rtol=0, atol=1e-5 * float(alone.abs().max()))
    assert torch.isfinite(together).all() and not torch.allclose(together[0], together[1])


def test_cfg_scale_one_equals_unguided_on_a_real_net(tiny_net):
    seeds, labels = [1, 2], torch.tensor([3, 4])
    a = sample_batch(tiny_net, seeds, labels, (1, 32, 32), SamplingOptions(num_steps=3, cfg_scale=1.0), "cpu")
    b = sample_batch(tiny_net, seeds, labels, (1, 32, 32), SamplingOptions(num_steps=3, cfg_scale=3.0), "cpu")
    noise = SeededRandn(seeds, "cpu").randn((1, 32, 32))
    plain = edm_sample(lambda x, s: tiny_net(x, s.expand(len(x)), labels), noise, num_steps=3)
    assert torch.allclose(a, plain) and not torch.allclose(a, b)


def test_samplers_recover_a_point_mass():
    """With the exact denoiser of a point mass every sampler ends on it."""
    c = torch.full((2, 1, 4, 4), -0.4)
    noise = torch.randn(2, 1, 4, 4)
    for out in (edm_sample(lambda x, s: c.clone(), noise, 6), ddim_sample(lambda x, s: c.clone(), noise, 6),
                ddpm_sample(lambda x, s: c.clone(), noise, 6)):
        assert torch.allclose(out, c, atol=1e-4)


def test_generate_cli_grid_folder_npz(full_run, tmp_path):
    run_cli("generate.py", "--ckpt", str(full_run), "--num-samples", "12", "--steps", "3", "--out",
            str(tmp_path / "grid.png"))
    assert Image.open(tmp_path / "grid.png").size == (10 * 32, 2 * 32)
    run_cli("generate.py", "--ckpt", str(full_run / "checkpoints" / "000000008"), "--num-samples", "5", "--steps",
            "3", "--sampler", "ddim", "--batch", "2", "--out", str(tmp_path / "npz" / "s.npz"))
    data = np.load(tmp_path / "npz" / "s.npz")
    assert data["arr_0"].shape == (5, 32, 32, 1) and data["arr_0"].dtype == np.uint8
    assert data["arr_1"].tolist() == [0, 1, 2, 3, 4]
    folder = tmp_path / "imgs"
    run_cli("generate.py", "--ckpt", str(full_run), "--num-samples", "3", "--steps", "3", "--out", str(folder))
    first = (folder / "000001.png").read_bytes()
    (folder / "000001.png").unlink()
    proc = run_cli("generate.py", "--ckpt", str(full_run), "--num-samples", "3", "--steps", "3", "--out", str(folder))
    assert sorted(p.name for p in folder.iterdir()) == ["000000.png", "000001.png", "000002.png"]
    assert (folder / "000001.png").read_bytes() == first  # re-created identically from its seed
    assert "wrote 3 samples" in proc.stdout
    # the same seeds and sampler give the same images in every output kind, whatever the batch size
    run_cli("generate.py", "--ckpt", str(full_run), "--num-samples", "3", "--steps", "3", "--batch", "2",
            "--out", str(tmp_path / "same.npz"))
    same = np.load(tmp_path / "same.npz")["arr_0"]
    folder_images = np.stack([np.array(Image.open(folder / f"{i:06d}.png")).reshape(32, 32, -1) for i in range(3)])
    assert np.array_equal(same, folder_images)


def test_the_runs_sample_grid_is_generate_py_output(full_run, tmp_path):
    """The training loop's grid goes through the one generation path: generate.py with the grid's seeds (0..N−1)
    and sampler reproduces it exactly from the same EMA weights."""
    checkpoint = sorted((full_run / "checkpoints").iterdir())[-1]
    run_grid = sorted((full_run / "samples").glob("grid-*.png"))[-1]
    grid = OmegaConf.load(full_run / "config.yaml").grid.sampling  # the run's grid sampler, as resolved
    run_cli("generate.py", "--ckpt", str(checkpoint), "--num-samples", "10", "--steps", str(grid.num_steps),
            "--s-churn", str(grid.s_churn), "--out", str(tmp_path / "grid.png"))
    assert np.array_equal(np.array(Image.open(run_grid)), np.array(Image.open(tmp_path / "grid.png")))


def test_churn_window_and_noise_follow_edm_algorithm_2():
    """S_churn raises σ_i to σ̂_i = σ_i(1 + γ), γ = min(S_churn/N, √2 − 1), only for σ_i in [S_tmin, S_tmax], and
    adds noise of std √(σ̂² − σ²)·S_noise; a window holding no σ_i is the deterministic sampler, bit for bit."""
    from diffusion.samplers import edm_sigma_steps

    noise = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    seen = []

    def denoise(x, sigma):
        seen.append((x.clone(), float(sigma)))
        return torch.zeros_like(x)

    steps, churn, s_noise = 6, 3.0, 1.5
    sigmas = edm_sigma_steps(steps, 0.002, 80.0, 7.0).tolist()
    lo, hi = sigmas[3], sigmas[1]  # churn at steps 1, 2, 3 only
    edm_sample(denoise, noise, steps, heun=False, s_churn=churn, s_tmin=lo, s_tmax=hi, s_noise=s_noise,
               randn_like=torch.ones_like)
    gamma = min(churn / steps, 2**0.5 - 1)
    expected = [s * (1 + gamma) if lo <= s <= hi else s for s in sigmas[:-1]]
    torch.testing.assert_close(torch.tensor([s for _, s in seen]), torch.tensor(expected), rtol=1e-6, atol=0)
    # step 1's input: x_1 (the Euler step from σ_0 with D = 0 gives x_1 = x_0 σ_1/σ_0) plus the churn noise of ones
    x1 = noise.double() * sigmas[1]
    churned = x1 + (expected[1] ** 2 - sigmas[1] ** 2) ** 0.5 * s_noise
    torch.testing.assert_close(seen[1][0].double(), churned, rtol=1e-5, atol=0)
    plain = edm_sample(lambda x, s: 0.3 * x, noise, steps)
    windowless = edm_sample(lambda x, s: 0.3 * x, noise, steps, s_churn=40, s_tmin=100.0, randn_like=None)
    assert torch.equal(plain, windowless)  # no σ in the window: no noise drawn (randn_like is never called)


def test_one_sampling_schema_for_flags_eval_config_and_grid():
    """generate.py's flags, the evaluation config's `sampling:` and the grid's `grid.sampling:` are one schema:
    the same settings give equal SamplingOptions, and a bad value is one error naming the key."""
    import generate
    from evaluation.config import load_eval_config
    from training.config import ConfigError, load_config

    flags = generate.sampling_options(generate.parse_args([
        "--ckpt", "x", "--out", "y.png", "--sampler", "ddpm", "--steps", "50", "--cfg-scale", "2",
        "--guidance-interval", "0.3", "5", "--clip-denoised"]))
    keys = ["sampler=ddpm", "num_steps=50", "cfg_scale=2", "guidance_sigma_lo=0.3", "guidance_sigma_hi=5",
            "clip_denoised=true", "s_churn=0"]  # the Fashion-MNIST configs churn; the flags' default does not
    evaluation = load_eval_config("configs/test/fashion-mnist.yaml", [f"sampling.{k}" for k in keys]).sampling
    grid = load_config("configs/train/fashion-mnist.yaml", [f"grid.sampling.{k}" for k in keys]).grid.sampling
    assert flags == evaluation == grid and flags.guidance_interval == (0.3, 5.0)
    churn = generate.sampling_options(generate.parse_args([
        "--ckpt", "x", "--out", "y.png", "--steps", "40", "--s-churn", "20", "--s-tmin", "0.05", "--s-tmax", "50",
        "--s-noise", "1.003"]))
    keys = ["num_steps=40", "s_churn=20", "s_tmin=0.05", "s_tmax=50", "s_noise=1.003"]
    assert churn == load_eval_config("configs/test/fashion-mnist.yaml", [f"sampling.{k}" for k in keys]).sampling
    assert generate.sampling_options(generate.parse_args(["--ckpt", "x", "--out", "y.png", "--sampler", "ddim"])
                                     ).num_steps == 50  # the per-sampler default
    with pytest.raises(ConfigError, match="sampling.guidance_sigma_lo and guidance_sigma_hi go together"):
        load_eval_config("configs/test/fashion-mnist.yaml", ["sampling.guidance_sigma_lo=0.3"])
    with pytest.raises(ConfigError, match="grid.sampling.sampler: 'heun' is not one of"):
        load_config("configs/train/fashion-mnist.yaml", ["grid.sampling.sampler=heun"])
    with pytest.raises(ConfigError, match="grid.sampling.clip_denoised: only the ddim and ddpm"):
        load_config("configs/train/fashion-mnist.yaml", ["grid.sampling.clip_denoised=true"])


def test_generate_bad_ckpt_is_one_line(tmp_path):
    proc = run_cli("generate.py", "--ckpt", str(tmp_path / "nope"), "--out", str(tmp_path / "g.png"), check=False)
    assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1
    assert "no snapshot file" in proc.stderr
