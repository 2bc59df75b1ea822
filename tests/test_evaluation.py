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


class FmnistNet:
    """The feature space of configs/test/fashion-mnist.yaml without building the network; its features of any
    batch are NaN (a sampler or feature network gone wrong)."""

    name, dims, predicts_dataset_labels = "fmnist_classifier", {"pool": 128, "logits": 10}, False

    def __call__(self, images):
        return {"pool": torch.full((len(images), 128), float("nan")), "logits": torch.zeros(len(images), 10)}


def good_reference(**changes) -> dict:
    gen = np.random.default_rng(0)
    feats = gen.standard_normal((300, 128))
    arrays = {"mu": feats.mean(0), "sigma": np.cov(feats, rowvar=False), "pool_features": feats.astype(np.float32),
              "feature_net": np.array("fmnist_classifier")}
    arrays.update(changes)
    return {k: v for k, v in arrays.items() if v is not None}


def broken_references(tmp_path):
    """(file, the words its one-line error must hold) for every kind of bad reference file."""
    cases = []
    path = tmp_path / "good.npz"
    np.savez(path, **good_reference())
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    cases.append((truncated, "not a readable reference npz"))
    (tmp_path / "empty.npz").write_bytes(b"")
    cases.append((tmp_path / "empty.npz", "not a readable reference npz"))
    (tmp_path / "text.npz").write_text("mu,sigma\n1,2\n")
    cases.append((tmp_path / "text.npz", "not a readable reference npz"))
    with open(tmp_path / "bare.npz", "wb") as f:
        np.save(f, np.zeros(128))
    cases.append((tmp_path / "bare.npz", "one bare array, not an npz"))
    for name, changes, words in [
        ("dim7", {"mu": np.zeros(7), "sigma": np.eye(7), "pool_features": None}, "statistics of 7-d features"),
        ("shapes", {"sigma": np.eye(128)[:, :64]}, "mu (128,) and sigma (128, 64) are not a (D,) mean"),
        ("nan", {"sigma": np.full((128, 128), np.nan)}, "sigma holds 16384 non-finite values"),
        ("pool", {"pool_features": np.zeros((10, 64))}, "pool_features (10, 64) are not (N, 128)"),
        ("nomu", {"mu": None}, "needs keys mu and sigma"),
        ("spatial", {"mu_s": np.zeros(3)}, "mu_s and sigma_s go together"),
        ("strings", {"mu": np.array(["a"] * 128)}, "mu holds <U1 values, not numbers"),
        ("othernet", {"feature_net": np.array("inception")}, "statistics of inception features"),
    ]:
        np.savez(tmp_path / f"{name}.npz", **good_reference(**changes))
        cases.append((tmp_path / f"{name}.npz", words))
    return cases


def test_every_kind_of_bad_reference_is_one_line_naming_the_file(tmp_path):
    assert set(load_reference(_saved(tmp_path), FmnistNet())) == {"mu", "sigma", "pool_features", "feature_net"}
    for path, words in broken_references(tmp_path):
        with pytest.raises(ValueError) as err:
            load_reference(path, FmnistNet())
        message = str(err.value)
        assert message.startswith(f"{path}: ") and words in message and "\n" not in message, (path.name, message)


def _saved(tmp_path):
    np.savez(tmp_path / "ok.npz", **good_reference())
    return tmp_path / "ok.npz"


def test_eval_latent_refuses_a_bad_reference_before_sampling(full_run, tmp_path):
    """One line, a non-zero exit, no result file, and no sample generated (the refusal comes first: it takes
    less time than one sampling batch would, and nothing is printed before it)."""
    for name, changes in [("nan", {"sigma": np.full((128, 128), np.inf)}), ("dim", {"pool_features": np.zeros((5, 3))})]:
        ref = tmp_path / f"{name}.npz"
        np.savez(ref, **good_reference(**changes))
        out = tmp_path / f"{name}.json"
        proc = run_cli("eval_latent.py", "--config", "configs/test/fashion-mnist.yaml", "--ckpt", str(full_run),
                       "--ref", str(ref), "--out", str(out), check=False)
        assert proc.returncode != 0 and proc.stderr.strip().splitlines() == [
            proc.stderr.strip().splitlines()[-1]] and str(ref) in proc.stderr and not out.exists()
        assert "sampl" not in proc.stdout.lower()


def test_a_metric_that_is_not_finite_is_an_error():
    from evaluation.metrics import SampleFeatures, compute_metrics

    stats = SampleFeatures(FmnistNet(), keep_for_pr=0)
    stats.add(torch.zeros(4, 1, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="generated samples are not finite"):
        compute_metrics(stats, good_reference(), None)
