"""Latent pipeline: extract_latent.py -> LMDB -> lmdb2wds.py -> shards, and training from both readers."""

import io
import json
import tarfile
from collections import Counter

import lmdb
import numpy as np
import pytest
import torch
from PIL import Image

from dataio.autoencoder import encode_moments, load_vae
from dataio.image_sources import adm_center_crop
from dataio.latent_store import META_KEY, LatentLMDB, open_readonly, read_meta, record_key
from dataio.shards import iterate_shards

from conftest import TINY_OVERRIDES, read_checkpoint, run_cli


@pytest.fixture(scope="module")
def tiny_vae(tmp_path_factory):
    """A 2x-downsampling AutoencoderKL saved with save_pretrained, as a hub VAE would be."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
                        layers_per_block=1, norm_num_groups=4, sample_size=16, scaling_factor=0.3)
    path = tmp_path_factory.mktemp("vae") / "tiny-vae"
    vae.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def image_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("tree")
    rng = np.random.default_rng(0)
    for k, name in enumerate(["cat", "dog", "fox"]):
        (root / name).mkdir()
        for i in range(10):
            h, w = [(40, 30), (64, 64), (20, 33)][i % 3]
            img = (rng.random((h, w, 3)) * 80 + k * 60).astype(np.uint8)
            Image.fromarray(img).save(root / name / f"{i:02d}.png")
    return root


def extract(source, out, vae, *extra, check=True):
    return run_cli("extract_latent.py", "--source", source, "--resolution", "16", "--vae", str(vae), "--out",
                   str(out), "--batch-size", "4", *extra, check=check)


@pytest.fixture(scope="module")
def store(tmp_path_factory, image_tree, tiny_vae):
    out = tmp_path_factory.mktemp("lmdb") / "tree.lmdb"
    extract(f"imagefolder:{image_tree}", out, tiny_vae, "--xflip", "--dtype", "float32")
    return out


def all_records(path):
    with open_readonly(path).begin() as txn:  # the suite's per-process env (LMDB allows one open per path)
        return dict(txn.cursor())


def test_stored_moments_equal_direct_encode(store, image_tree, tiny_vae):
    meta = read_meta(store)
    assert meta["count"] == 30 and meta["shape"] == [2, 8, 8, 8] and meta["xflip"] and meta["num_classes"] == 3
    assert meta["scaling_factor"] == pytest.approx(0.3) and meta["vae"] == str(tiny_vae) and meta["resolution"] == 16
    data = LatentLMDB(store)
    vae = load_vae(str(tiny_vae))
    files = sorted(image_tree.glob("*/*.png"))
    for index in (0, 13, 29):
        image = Image.open(files[index]).convert("RGB")
        pixels = torch.from_numpy(adm_center_crop(image, 16)).permute(2, 0, 1)[None].float() / 127.5 - 1
        moments, label = data[index]
        assert label == index // 10
        assert torch.allclose(moments[0], encode_moments(vae, pixels)[0], atol=1e-5)
        assert torch.allclose(moments[1], encode_moments(vae, pixels.flip(-1))[0], atol=1e-5)


def test_adm_center_crop_box_then_bicubic():
    img = Image.fromarray(np.arange(64 * 48 * 3, dtype=np.uint8).reshape(64, 48, 3))
    out = adm_center_crop(img, 16)
    assert out.shape == (16, 16, 3)
    halved = img.resize((24, 32), resample=Image.BOX)  # 48 >= 2*16: one BOX halving, then bicubic 24 -> 16
    expected = np.asarray(halved.resize((16, round(32 * 16 / 24)), resample=Image.BICUBIC))
    top = (expected.shape[0] - 16) // 2
    assert np.array_equal(out, expected[top:top + 16])


def test_interrupted_extraction_resumes_to_the_same_store(tmp_path, image_tree, tiny_vae, store):
    out = tmp_path / "part.lmdb"
    proc = extract(f"imagefolder:{image_tree}", out, tiny_vae, "--xflip", "--dtype", "float32",
                   "--stop-after-batches", "2")
    assert "re-run the same command" in proc.stdout
    with pytest.raises(ValueError, match="no __meta__ record"):
        read_meta(out)
    assert len(all_records(out)) == 8
    extract(f"imagefolder:{image_tree}", out, tiny_vae, "--xflip", "--dtype", "float32")
    assert all_records(out) == all_records(store)


def test_fashion_mnist_source_float16(tmp_path, tiny_fmnist, tiny_vae):
    out = tmp_path / "fm.lmdb"
    extract(f"fashion_mnist:train:{tiny_fmnist}", out, tiny_vae)
    meta = read_meta(out)
    assert meta["count"] == 96 and meta["dtype"] == "float16" and meta["shape"] == [1, 8, 8, 8]
    assert [LatentLMDB(out)[i][1] for i in range(12)] == [i % 10 for i in range(12)]


def test_shards_hold_the_same_multiset_in_shuffled_order(store, tmp_path):
    run_cli("lmdb2wds.py", "--lmdb", str(store), "--out", str(tmp_path / "wds"), "--shard-size", "7")
    index = json.loads((tmp_path / "wds" / "index.json").read_text())
    assert index["count"] == 30 and [s["count"] for s in index["shards"]] == [7, 7, 7, 7, 2]
    lmdb_items = Counter()
    data = LatentLMDB(store)
    for i in range(len(data)):
        moments, label = data[i]
        lmdb_items[(moments.numpy().tobytes(), label)] += 1
    shard_items, labels = Counter(), []
    for moments, label in iterate_shards(tmp_path / "wds", resampled=False):
        shard_items[(moments.numpy().tobytes(), label)] += 1
        labels.append(label)
    assert shard_items == lmdb_items
    changes = sum(a != b for a, b in zip(labels, labels[1:]))
    assert changes >= 10 and labels != sorted(labels)  # class-sorted order would change label twice
    with tarfile.open(tmp_path / "wds" / "shard-000000.tar") as tar:
        names = tar.getnames()
    assert all(n.count(".") == 1 for n in names) and {n.split(".")[1] for n in names} == {"npy", "cls"}


def test_corrupted_record_and_shard_are_named(store, tmp_path):
    bad = tmp_path / "bad.lmdb"
    env = lmdb.open(str(bad), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for key, value in all_records(store).items():
            txn.put(key, value[:-4] if key == record_key(5) else value)
    env.close()
    with pytest.raises(ValueError, match="key 000000005: corrupted record"):
        LatentLMDB(bad)[5]
    run_cli("lmdb2wds.py", "--lmdb", str(store), "--out", str(tmp_path / "wds"), "--shard-size", "10")
    shard = tmp_path / "wds" / "shard-000001.tar"
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(shard, "w") as tar:
        for m, payload in members:
            payload = payload[:20] if m.name.endswith(".npy") and m.name.startswith(members[0][0].name[:10]) else payload
            m.size = len(payload)
            tar.addfile(m, io.BytesIO(payload))
    with pytest.raises(ValueError, match=r"shard .*shard-000001.tar key s\d+: corrupted sample"):
        list(iterate_shards(tmp_path / "wds", resampled=False))


LATENT_MODEL = ["model.in_channels=4", "model.resolution=8", "model.patch_size=2", "model.num_classes=3",
                "data.num_workers=1", "data.shuffle_buffer=8"]


@pytest.mark.parametrize("reader", ["lmdb", "wds"])
def test_training_from_both_readers_and_generation_decodes(reader, store, tmp_path, tiny_vae):
    path = store
    if reader == "wds":
        run_cli("lmdb2wds.py", "--lmdb", str(store), "--out", str(tmp_path / "wds"), "--shard-size", "8")
        path = tmp_path / "wds"
    run_dir = tmp_path / f"run-{reader}"
    run_cli("train.py", "--config", "configs/train/fashion-mnist.yaml", f"run_dir={run_dir}", *TINY_OVERRIDES,
            *LATENT_MODEL, f"data.source={reader}", f"data.path={path}", "data.xflip=true")
    _, snap = read_checkpoint(run_dir / "checkpoints" / "000000008")
    assert snap["data"]["space"] == "latent" and snap["data"]["vae"] == str(tiny_vae)
    assert Image.open(next((run_dir / "samples").glob("grid-*.png"))).size == (3 * 16, 4 * 16)  # decoded pixels
    run_cli("generate.py", "--ckpt", str(run_dir), "--num-samples", "3", "--steps", "2", "--out",
            str(tmp_path / "g.npz"))
    assert np.load(tmp_path / "g.npz")["arr_0"].shape == (3, 16, 16, 3)


def test_latent_shape_mismatch_fails_before_training(store, tmp_path):
    proc = run_cli("train.py", "--config", "configs/train/fashion-mnist.yaml", f"run_dir={tmp_path / 'r'}",
                   *TINY_OVERRIDES, *LATENT_MODEL, "model.resolution=16", "data.source=lmdb", f"data.path={store}",
                   check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1
    assert "sample shape (4, 8, 8) does not match the model" in lines[0]


def test_two_process_extraction_writes_the_same_store(tmp_path, image_tree, tiny_vae, store):
    out = tmp_path / "two.lmdb"
    run_cli("extract_latent.py", "--source", f"imagefolder:{image_tree}", "--resolution", "16", "--vae", str(tiny_vae),
            "--out", str(out), "--batch-size", "4", "--xflip", "--dtype", "float32", processes=2)
    two, one = LatentLMDB(out), LatentLMDB(store)
    assert read_meta(out) == read_meta(store) and set(all_records(out)) == set(all_records(store))
    for i in range(len(one)):  # other batch compositions: equal up to the last float bits of the VAE
        (m2, y2), (m1, y1) = two[i], one[i]
        assert y1 == y2 and torch.allclose(m1, m2, atol=1e-5)


def test_format_wds_writes_shards_directly(tmp_path, image_tree, tiny_vae, store):
    out = tmp_path / "nested" / "shards"
    extract(f"imagefolder:{image_tree}", out, tiny_vae, "--xflip", "--dtype", "float32", "--format", "wds",
            "--shard-size", "8")
    index = json.loads((out / "index.json").read_text())
    assert index["count"] == 30 and not (out / ".staging.lmdb").exists()
    labels = sorted(label for _, label in iterate_shards(out, resampled=False))
    assert labels == sorted(LatentLMDB(store)[i][1] for i in range(30))


def test_lmdb_training_with_two_processes_equals_one(store, tmp_path):
    """The posterior ε and the flips of latent batches come from the step's draws: one process with batch 16
    and two with 8 each train the same model."""
    common = ["--config", "configs/train/fashion-mnist.yaml", *TINY_OVERRIDES, *LATENT_MODEL, "data.source=lmdb",
              f"data.path={store}", "data.xflip=true", "train.total_kimg=0.064", "train.sample_kimg=1"]
    run_cli("train.py", *common, f"run_dir={tmp_path / 'one'}")
    run_cli("train.py", *common, f"run_dir={tmp_path / 'two'}", processes=2)
    one, two = (read_checkpoint(tmp_path / run / "checkpoints/000000004")[0] for run in ("one", "two"))
    for key in one["net"]:
        assert torch.allclose(one["net"][key], two["net"][key], atol=1e-6), key


def copy_store_with_meta(store, path, raw_meta: bytes):
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for key, value in all_records(store).items():
            txn.put(key, raw_meta if key == META_KEY else value)
    env.close()
    return path


def test_bad_store_metadata_is_one_line_naming_the_store_and_field(store, tmp_path):
    from dataio.latent_store import read_meta

    good = json.loads(all_records(store)[META_KEY])
    for name, raw, words in [
        ("garbage", b"\xff\xfe not json", "record is not JSON"),
        ("truncated", json.dumps(good).encode()[:-10], "record is not JSON"),
        ("list", b"[1, 2]", "the metadata is a JSON list, not an object"),
        ("shape", json.dumps({**good, "shape": [1, 8, 2]}).encode(), "metadata field shape is [1, 8, 2], not"),
        ("dtype", json.dumps({**good, "dtype": "float99"}).encode(), "metadata field dtype is 'float99'"),
        ("count", json.dumps({**good, "count": "many"}).encode(), "metadata field count is 'many', not int"),
        ("scale", json.dumps({**good, "scaling_factor": -1}).encode(), "scaling_factor is -1, not a positive"),
        ("novae", json.dumps({k: v for k, v in good.items() if k != "vae"}).encode(), "metadata lacks vae"),
    ]:
        path = copy_store_with_meta(store, tmp_path / f"{name}.lmdb", raw)
        with pytest.raises(ValueError) as err:
            read_meta(path)
        assert str(err.value).startswith(f"LMDB {path}: ") and words in str(err.value), (name, str(err.value))
        assert "\n" not in str(err.value)


def test_bad_shard_index_is_one_line_naming_the_file(store, tmp_path):
    from dataio.shards import read_index

    run_cli("lmdb2wds.py", "--lmdb", str(store), "--out", str(tmp_path / "wds"), "--shard-size", "10")
    index_path = tmp_path / "wds" / "index.json"
    good = index_path.read_text()
    index = json.loads(good)
    for name, content, words in [
        ("truncated", good[: len(good) // 2].encode(), "not a JSON shard index"),
        ("empty", b"", "not a JSON shard index"),
        ("binary", b"\xff\xfe\x00garbage", "not a JSON shard index"),
        ("incomplete", json.dumps({"count": index["count"], "shards": index["shards"]}).encode(),
         "the index lacks seed, meta"),
        ("counts", json.dumps({**index, "count": index["count"] + 1}).encode(), "is not the sum of the shards' counts"),
        ("shards", json.dumps({**index, "shards": "all"}).encode(), "shards is not a list of {name, count} entries"),
        ("meta", json.dumps({**index, "meta": {**index["meta"], "shape": "big"}}).encode(),
         "metadata field shape is 'big'"),
    ]:
        index_path.write_bytes(content)
        with pytest.raises(ValueError) as err:
            read_index(tmp_path / "wds")
        assert str(err.value).startswith(f"{index_path}: ") and words in str(err.value), (name, str(err.value))
    index_path.write_text(json.dumps({**index, "count": index["count"] + 1}))
    proc = run_cli("train.py", "--config", "configs/train/fashion-mnist.yaml", f"run_dir={tmp_path / 'run'}",
                   "data.source=wds", f"data.path={tmp_path / 'wds'}", *LATENT_MODEL, check=False)
    assert proc.returncode != 0 and proc.stderr.strip().splitlines()[-1].startswith(f"error: {index_path}: count")
    assert "Traceback" not in proc.stderr
