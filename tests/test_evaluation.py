"""Metric maths against closed forms, and the evaluation commands end to end on tiny networks."""

import json
from unittest import mock

import numpy as np
import pytest
import torch

from evaluation.frechet import FeatureStats, frechet_distance
from evaluation.inception_score import inception_score
from evaluation.metrics import load_reference
from evaluation.precision_recall import precision_recall

from conftest import run_cli


def test_frechet_closed_form_on_gaussians():
    # Diagonal covariances: ‖μ1 − μ2‖² + Σ (a + b − 2√(ab)).
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    expected = 1 + 0 + 4 + np.sum(a + b - 2 * np.sqrt(a * b))
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-9)
    # A general (rotated) pair with a known answer: same covariance, shifted mean.
    rot = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))[0]
    cov = rot @ np.diag(a) @ rot.T
    assert frechet_distance(mu1, cov, mu2, cov) == pytest.approx(5.0, abs=1e-6)


def test_streamed_stats_match_numpy_and_self_distance_is_zero():
    x = torch.randn(1000, 8, dtype=torch.float64) @ torch.randn(8, 8, dtype=torch.float64)
    stats = FeatureStats(8)
    for chunk in x.split(77):
        stats.add(chunk)
    mu, cov = stats.mean_cov()
    assert np.allclose(mu, x.numpy().mean(0)) and np.allclose(cov, np.cov(x.numpy(), rowvar=False))
    assert abs(frechet_distance(mu, cov, mu, cov)) < 1e-6


def test_precision_recall_on_known_manifolds():
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(2000, 4, generator=gen)
    same = torch.randn(2000, 4, generator=gen)
    p, r = precision_recall(real, same)
    assert p > 0.9 and r > 0.9
    far = torch.randn(2000, 4, generator=gen) + 20
    assert precision_recall(real, far) == (0.0, 0.0)
    collapsed = torch.randn(2000, 4, generator=gen) * 0.05  # all samples near one mode of the real data
    p, r = precision_recall(real, collapsed)
    assert p > 0.95 and r < 0.2


def test_inception_score_on_crafted_logits():
    assert inception_score(torch.zeros(100, 10)) == pytest.approx(1.0)
    confident = torch.full((100, 10), -1e4)
    confident[torch.arange(100), torch.arange(100) % 10] = 0  # one-hot, classes balanced
    assert inception_score(confident) == pytest.approx(10.0, rel=1e-6)
    assert inception_score(confident, split_size=50) == pytest.approx(10.0, rel=1e-6)


@pytest.fixture(scope="module")
def random_inception(tmp_path_factory):
    """torch-fidelity's Inception-v3 layout with random weights (the real ones cannot be fetched offline)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    torch.manual_seed(0)
    with mock.patch.object(FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None), \
            mock.patch("torch_fidelity.feature_extractor_inceptionv3.load_state_dict_from_url", return_value={}):
        net = FeatureExtractorInceptionV3("random", ["2048"])
    for m in net.modules():  # default init shrinks activations to ~1e-8 over 40+ layers: keep their scale
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.kaiming_normal_(m.weight)
    path = tmp_path_factory.mktemp("inception") / "random-inception.pth"
    torch.save(net.state_dict(), path)
    return path


def write_images(path, seed, n=24, high=256):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, high, size=(n, 32, 32, 3), dtype=np.uint8)
    np.savez(path, arr_0=images)


def test_inception_metrics_end_to_end(random_inception, tmp_path):
    write_images(tmp_path / "a.npz", 0)
    write_images(tmp_path / "b.npz", 1, high=64)  # darker images: a different distribution
    common = ["--config", "configs/test/maskdit-256.yaml", "--inception", str(random_inception), "batch_gpu=12",
              "pr_features=24"]
    run_cli("eval_latent.py", "ref", *common, "--source", f"npz:{tmp_path / 'a.npz'}", "--out", str(tmp_path / "ref.npz"))
    ref = load_reference(tmp_path / "ref.npz")
    assert ref["mu"].shape == (2048,) and ref["sigma_s"].shape == (2023, 2023) and str(ref["feature_net"]) == "inception"
    same = run_cli("eval_latent.py", "images", *common, "--source", f"npz:{tmp_path / 'a.npz'}", "--ref",
                   str(tmp_path / "ref.npz"), "--out", str(tmp_path / "m.json"))
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert abs(metrics["fd"]) < 1e-3 and abs(metrics["sfid"]) < 1e-3 and metrics["precision"] == 1.0
    assert "| FID |" in same.stdout and metrics["is"] >= 1.0
    other = run_cli("eval_latent.py", "images", *common, "--source", f"npz:{tmp_path / 'b.npz'}", "--ref",
                    str(tmp_path / "ref.npz"), "--out", str(tmp_path / "m2.json"))
    assert json.loads((tmp_path / "m2.json").read_text())["fd"] > 1e-3 and other.returncode == 0


def test_missing_inception_weights_is_one_clear_line(tmp_path):
    proc = run_cli("eval_latent.py", "ref", "--config", "configs/test/maskdit-256.yaml", "--source", "npz:x.npz",
                   "--out", str(tmp_path / "r.npz"), "--inception", str(tmp_path / "nope.pth"), check=False)
    assert proc.returncode != 0 and proc.stderr.strip().splitlines() == [
        f"error: Inception weights {tmp_path / 'nope.pth'} not found"]


def test_fmnist_model_evaluation_end_to_end(full_run, tmp_path, tiny_fmnist, monkeypatch):
    """The embedded default's offline metric: classifier features, generated in-process."""
    from evaluation import fmnist_features

    monkeypatch.setenv("MASKDIT_CACHE", str(tmp_path / "cache"))
    # train the feature classifier on the tiny directory (the CLI subprocesses reuse the cache)
    net = fmnist_features.train_classifier(str(tiny_fmnist), epochs=1)
    fmnist_features.cache_path().parent.mkdir(parents=True)
    torch.save(net.state_dict(), fmnist_features.cache_path())
    common = ["--config", "configs/test/fashion-mnist.yaml", "batch_gpu=16", "pr_features=20", "sampling.num_steps=3"]
    run_cli("eval_latent.py", "ref", *common, "--source", f"fashion_mnist:train:{tiny_fmnist}", "--out",
            str(tmp_path / "ref.npz"), env_extra={"MASKDIT_CACHE": str(tmp_path / "cache")})
    proc = run_cli("eval_latent.py", *common, "--ckpt", str(full_run), "--num-samples", "20", "--ref",
                   str(tmp_path / "ref.npz"), env_extra={"MASKDIT_CACHE": str(tmp_path / "cache")})
    metrics = json.loads(proc.stdout.strip().splitlines()[-1])
    assert metrics["features"] == "fmnist_classifier" and metrics["num_samples"] == 20
    assert metrics["fd"] > 0 and 0 <= metrics["class_accuracy"] <= 1 and "| FD_fmnist |" in proc.stdout
    # the same evaluation split over two processes (seeds per process, features gathered): the same metrics
    proc2 = run_cli("eval_latent.py", *common, "--ckpt", str(full_run), "--num-samples", "20", "--ref",
                    str(tmp_path / "ref.npz"), env_extra={"MASKDIT_CACHE": str(tmp_path / "cache")}, processes=2)
    two = json.loads(proc2.stdout.strip().splitlines()[-1])
    assert two["num_samples"] == 20 and two["fd"] == pytest.approx(metrics["fd"], rel=1e-4)
    assert two["class_accuracy"] == metrics["class_accuracy"]
