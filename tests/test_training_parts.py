"""EMA, config layering, data stream, Fashion-MNIST reader, sampler: unit tests of the training side."""

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from dataio.fashion_mnist import load_fashion_mnist, read_idx
from dataio.image_io import to_uint8
from dataio.stream import InMemoryBatches, ShuffledIndexStream
from dataio.training_data import InMemoryImages
from diffusion.samplers import edm_sample, edm_sigma_steps, guided_denoiser
from training.config import ConfigError, load_config
from models.ema_profiles import classic_beta
from training.ema import EMA
from training.loop import batch_layout, crossed

from conftest import REPO, write_idx


def test_ema_update_is_lerp():
    net = torch.nn.Linear(2, 2)
    ema = EMA(net)
    with torch.no_grad():
        old = ema.net.weight.clone()
        net.weight.add_(1.0)
    ema.update(net, beta=0.9)
    assert torch.allclose(ema.net.weight, 0.9 * old + 0.1 * net.weight)
    assert not ema.net.weight.requires_grad


def test_ema_beta_forms():
    assert classic_beta(256, 0, 0.9999, None, None) == 0.9999
    # half-life 10 kimg at batch 1000: β^10 = 0.5
    beta = classic_beta(1000, 10**6, None, 10.0, None)
    assert beta**10 == pytest.approx(0.5)
    # ramp-up: at 1000 images seen with ratio 0.1 the half-life is 100 images
    assert classic_beta(100, 1000, None, 10.0, 0.1) == pytest.approx(0.5)


def test_config_layers_and_errors(tmp_path):
    cfg = load_config(REPO / "configs/finetune/fashion-mnist.yaml", ["train.total_kimg=3"])
    assert cfg.mask.ratio == 0.0 and cfg.model.width == 128 and cfg.train.total_kimg == 3
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: " + str(REPO / "configs/train/fashion-mnist.yaml") + "\noptim:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: bad key 'optim.lrr'"):
        load_config(bad)
    with pytest.raises(ConfigError, match="command line: bad key 'train.totl_kimg'"):
        load_config(REPO / "configs/train/fashion-mnist.yaml", ["train.totl_kimg=1"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="ema"):
        load_config(None, ["train.ema_halflife_kimg=5"])


@pytest.mark.parametrize("path", ["configs/train/imagenet256-latent.yaml", "configs/finetune/imagenet256-latent-const.yaml"])
def test_imagenet_recipe_configs(path):
    cfg = load_config(REPO / path)
    assert (cfg.model.arch, cfg.model.patch_size, cfg.model.decoder_depth, cfg.model.decoder_width) == ("XL", 2, 8, 512)
    assert cfg.optim.lr == (1e-4 if "train/" in path else 5e-5)
    assert cfg.mask.ratio == (0.5 if "train/" in path else 0.0)
    assert cfg.train.batch_size == (1024 if "train/" in path else 512)
    assert cfg.train.total_kimg == (2_048_000 if "train/" in path else 19_200)  # 2M steps x 1024; 37.5k x 512
    assert (cfg.mask.mae_weight, cfg.model.label_dropout, cfg.train.ema_decay, cfg.diffusion.strategy.name) == (
        0.1, 0.1, 0.9999, "edm")
    assert dict(cfg.diffusion.strategy.params) == {"p_mean": -1.2, "p_std": 1.2}


def plain(value):
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def config_leaves(node, prefix=""):
    for key, value in node.items():
        if OmegaConf.is_dict(value) and len(value):
            yield from config_leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", plain(value)


@pytest.mark.parametrize("path", sorted(str(p.relative_to(REPO)) for p in REPO.glob("configs/[eft]*/*.yaml")))
def test_no_config_file_repeats_its_base(path):
    """One source per value: a file sets no key to what its base (the schema, or its `base:` chain) already
    gives; the ImageNet recipe lives in the schema defaults, not twice."""
    from evaluation.config import EvalConfig
    from training.config import Config
    from utils.layered_config import load_layered

    file = REPO / path
    node = OmegaConf.load(file) or OmegaConf.create({})
    base = node.pop("base", None)
    schema = EvalConfig if file.parent.name == "test" else Config
    inherited = OmegaConf.structured(load_layered(schema, file.parent / base if base else None))
    repeated = [key for key, value in config_leaves(node)
                if key != "name" and plain(OmegaConf.select(inherited, key)) == value]
    assert not repeated, f"{path} repeats its base: {repeated}"


def test_stream_is_a_permutation_per_epoch_and_resumable():
    s = ShuffledIndexStream(10, seed=3)
    first = torch.cat([s.next_indices(4)[0] for _ in range(5)])  # 20 = two epochs
    assert sorted(first[:10].tolist()) == list(range(10)) and sorted(first[10:].tolist()) == list(range(10))
    resumed = ShuffledIndexStream(10, seed=3)
    resumed.load_state_dict({"position": 8, "num_items": 10, "seed": 3})
    assert torch.equal(resumed.next_indices(4)[0], first[8:12])


def test_stream_global_batch_independent_of_rank_count():
    one = ShuffledIndexStream(50, seed=1)
    two = [ShuffledIndexStream(50, seed=1, rank=r, num_ranks=2) for r in range(2)]
    for _ in range(4):
        glob = one.next_indices(8)[0]
        split = torch.cat([s.next_indices(4)[0] for s in two])
        assert torch.equal(glob, split)


def test_in_memory_batches_follow_the_images_device():
    """Images already in device memory (benchmarks/throughput.py) take the stream's CPU draws without a device
    clash: the first GPU check failed here. The meta device stands in for a GPU on the CPU."""
    images = torch.arange(10.0).view(10, 1, 1, 1).expand(10, 1, 2, 3)  # (N, C, H, W), a column index per pixel
    images = images + torch.arange(3.0).view(1, 1, 1, 3)
    cpu = InMemoryBatches(InMemoryImages(images, torch.arange(10), 10, "cpu"), ShuffledIndexStream(10, 4, xflip=True),
                          6, "cpu")
    x, y = cpu.next()
    flipped = x[:, 0, 0, 0] > x[:, 0, 0, 2]  # (B,) the flips the stream drew
    assert flipped.any() and (~flipped).any() and torch.equal(x[:, 0, 0, 0] - flipped * 2.0, y.float())
    on_meta = InMemoryImages(images.to("meta"), torch.arange(10, device="meta"), 10, "meta")
    x, y = InMemoryBatches(on_meta, ShuffledIndexStream(10, 4, xflip=True), 6, "meta").next()
    assert x.device.type == "meta" and x.shape == (6, 1, 2, 3) and y.shape == (6,)


def test_batch_layout_and_crossing():
    assert batch_layout(1024, 128, 8) == (128, 1)
    assert batch_layout(256, 32, 2) == (32, 4)
    assert batch_layout(64, None, 1) == (64, 1)
    with pytest.raises(ConfigError):
        batch_layout(100, 30, 1)
    assert crossed(900, 1100, 1.0) and not crossed(1100, 1900, 1.0)


def test_idx_reader_and_errors(tmp_path, tiny_fmnist):
    images, labels = load_fashion_mnist("train", str(tiny_fmnist))
    assert images.shape == (96, 28, 28) and images.dtype == np.uint8 and labels[:3].tolist() == [0, 1, 2]
    write_idx(tmp_path / "x.gz", np.zeros((4, 3), np.uint8))
    raw = (tmp_path / "x.gz").read_bytes()
    (tmp_path / "t.gz").write_bytes(raw[:-1])
    with pytest.raises((ValueError, EOFError)):
        read_idx(tmp_path / "t.gz")
    with pytest.raises(FileNotFoundError, match="no train-images-idx3-ubyte"):
        load_fashion_mnist("train", str(tmp_path))


def test_debian_fashion_mnist_is_read():
    images, labels = load_fashion_mnist("test")
    assert images.shape == (10000, 28, 28) and sorted(set(labels.tolist())) == list(range(10))


def test_uint8_rounds():
    x = torch.tensor([-1.0, 1.0, 0.0, (100.6 / 127.5) - 1]).reshape(1, 1, 1, 4)
    assert to_uint8(x).reshape(-1).tolist() == [0, 255, 128, 101]


def test_sigma_steps_and_exact_denoiser_sampling():
    steps = edm_sigma_steps(40)
    assert steps[0] == pytest.approx(80.0) and steps[-2] == pytest.approx(0.002) and steps[-1] == 0
    # With the exact denoiser of a point mass at c, Heun/Euler land exactly on c.
    c = torch.full((2, 1, 4, 4), 0.3)
    out = edm_sample(lambda x, s: c.clone(), torch.randn(2, 1, 4, 4), num_steps=5)
    assert torch.allclose(out, c, atol=1e-5)


def test_cfg_scale_one_equals_unguided():
    calls = []

    def net(x, sigma, labels):
        calls.append(labels)
        return x * 0.5 + (labels.float()[:, None, None, None] if labels is not None else 0)

    labels = torch.tensor([1, 2])
    x, s = torch.randn(2, 1, 2, 2), torch.tensor(1.0)
    assert torch.equal(guided_denoiser(net, labels, 1.0, 9)(x, s), net(x, s.expand(2), labels))
    guided = guided_denoiser(net, labels, 2.0, 9)(x, s)
    cond, uncond = net(x, s.expand(2), labels), net(x, s.expand(2), torch.tensor([9, 9]))
    assert torch.allclose(guided, uncond + 2.0 * (cond - uncond))
