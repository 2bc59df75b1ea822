"""GPU fast-path options, checked on the CPU: selective activation checkpointing, the bf16 residual stream, the
FP8 conversion logic and its refusal, the saved-activation count behind benchmarks/memory.py, the throughput
benchmark on the real Trainer step, and the one-shot GPU check script at a tiny size."""

import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from conftest import REPO
from models.build import build_network
from training.config import ConfigError, ModelConfig, load_config
from training.fp8 import fp8_refusal, is_fp8_layer

sys.path.insert(0, str(REPO / "benchmarks"))

TINY = dict(arch="S", resolution=8, in_channels=3, patch_size=2, num_classes=4, depth=4, width=32, heads=2,
            decoder_depth=2, decoder_width=32, decoder_heads=2)


def checkpointed_blocks(mode: str, every: int, monkeypatch) -> list[str]:
    """Names of the blocks that one training forward runs under torch.utils.checkpoint."""
    import models.maskdit

    net = build_network(ModelConfig(**TINY, grad_checkpointing=mode, grad_checkpointing_every=every)).train()
    names = {id(m): n for n, m in net.named_modules()}
    seen = []

    def recording_checkpoint(fn, *args, **kwargs):
        seen.append(names[id(fn)])
        return fn(*args)

    monkeypatch.setattr(models.maskdit, "checkpoint", recording_checkpoint)
    net(torch.randn(2, 3, 8, 8), torch.ones(2), torch.tensor([0, 1]))
    return seen


@pytest.mark.parametrize("mode,every,expected", [
    ("none", 1, []),
    ("all", 1, ["encoder.0", "encoder.1", "encoder.2", "encoder.3", "decoder.0", "decoder.1"]),
    ("encoder", 1, ["encoder.0", "encoder.1", "encoder.2", "encoder.3"]),
    ("decoder", 1, ["decoder.0", "decoder.1"]),
    ("encoder", 2, ["encoder.0", "encoder.2"]),
])
def test_selective_checkpointing_picks_the_chosen_blocks(mode, every, expected, monkeypatch):
    names = {f"backbone.blocks.{i}": f"encoder.{i}" for i in range(4)}
    names.update({f"backbone.decoder_blocks.{i}": f"decoder.{i}" for i in range(2)})
    assert [names[n] for n in checkpointed_blocks(mode, every, monkeypatch)] == expected


def test_checkpointing_changes_memory_not_gradients():
    torch.manual_seed(0)
    plain = build_network(ModelConfig(**TINY)).train()
    for p in plain.parameters():
        nn.init.normal_(p, std=0.05)
    grads = {}
    for mode in ("none", "all", "encoder"):
        net = build_network(ModelConfig(**TINY, grad_checkpointing=mode)).train()
        net.load_state_dict(plain.state_dict())
        x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
        net(x, torch.tensor([0.5, 2.0]), torch.tensor([0, 1])).square().mean().backward()
        grads[mode] = torch.cat([p.grad.flatten() for p in net.parameters()])
    assert torch.allclose(grads["none"], grads["all"], atol=1e-6)
    assert torch.allclose(grads["none"], grads["encoder"], atol=1e-6)


def test_saved_activation_count_falls_with_checkpointing_and_grows_with_batch():
    from memory import estimate

    cfg = dict(TINY, in_channels=4)
    rows = {mode: estimate(ModelConfig(**cfg, grad_checkpointing=mode), 64, 0.5, "fp32")
            for mode in ("none", "decoder", "encoder", "all")}
    saved = {m: r["saved_per_image_mib"] for m, r in rows.items()}
    assert saved["all"] < saved["encoder"] < saved["none"] and saved["all"] < saved["decoder"] < saved["none"]
    # 16 B/param (weights, grads, Adam m, v) + 4 B/param (EMA)
    assert rows["none"]["static_gib"] * 2**30 == pytest.approx(rows["none"]["params_m"] * 1e6 * 20)
    assert rows["none"]["expected_peak_gib"] > rows["none"]["static_gib"]


def test_residual_stream_dtype():
    x = torch.randn(2, 3, 8, 8)
    for flag, expected in ((False, torch.float32), (True, torch.bfloat16)):
        net = build_network(ModelConfig(**TINY, residual_bf16=flag)).train()
        seen = []
        net.backbone.blocks[1].register_forward_pre_hook(lambda m, inp: seen.append(inp[0].dtype))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(x, torch.ones(2), torch.tensor([0, 1]))
        assert seen == [expected] and out.dtype == torch.float32  # D stays fp32 for the loss
    seen.clear()
    net(x, torch.ones(2), torch.tensor([0, 1]))  # no autocast: fp32 whatever the flag
    assert seen == [torch.float32]


def test_fp8_converts_only_the_block_linears_and_refuses_elsewhere():
    net = build_network(ModelConfig(**dict(TINY, width=64, decoder_width=32)))
    chosen = [n for n, m in net.named_modules() if is_fp8_layer(m, n)]
    assert len(chosen) == 4 * (4 + 2)  # qkv, proj, fc1, fc2 of every encoder and decoder block
    assert all(n.split(".")[-1] in ("qkv", "proj", "fc1", "fc2") for n in chosen)
    assert not any("adaLN" in n or "final_layer" in n or "embed" in n for n in chosen)
    odd = nn.Linear(24, 40)  # 24 is not a multiple of 16
    assert not is_fp8_layer(odd, "backbone.blocks.0.mlp.fc1")
    assert "CUDA" in fp8_refusal(torch.device("cpu"), "bf16")
    assert "bf16" in fp8_refusal(torch.device("cpu"), "fp16")


def test_fp8_conversion_swaps_the_chosen_linears_and_keeps_the_checkpoint_format():
    from torchao.float8.float8_linear import Float8Linear

    from training.fp8 import convert_to_fp8

    net = build_network(ModelConfig(**dict(TINY, width=64, decoder_width=32)))
    keys = {k: v.shape for k, v in net.state_dict().items()}
    params = {id(p) for p in net.parameters()}
    assert convert_to_fp8(net) == 24
    swapped = [n for n, m in net.named_modules() if isinstance(m, Float8Linear)]
    assert len(swapped) == 24 and all(n.split(".")[-1] in ("qkv", "proj", "fc1", "fc2") for n in swapped)
    assert {k: v.shape for k, v in net.state_dict().items()} == keys  # same safetensors files as without fp8
    assert {id(p) for p in net.parameters()} == params  # the optimizer and EMA keep the same parameters


def test_option_keys_are_validated_with_one_line(tmp_path):
    with pytest.raises(ConfigError, match="model.grad_checkpointing"):
        load_config(None, ["model.grad_checkpointing=decoders"])
    with pytest.raises(ConfigError, match="activation_memory_budget"):
        load_config(None, ["train.activation_memory_budget=0.5"])  # needs train.compile
    with pytest.raises(ConfigError, match="residual_bf16"):
        load_config(None, ["model.residual_bf16=true", "train.mixed_precision=no"])
    load_config(None, ["train.activation_memory_budget=0.5", "train.compile=true", "model.grad_checkpointing=encoder"])


def test_throughput_benchmark_times_the_real_trainer_step():
    import throughput

    row = throughput.main(["--arch", "S", "--depth", "2", "--width", "64", "--heads", "2", "--decoder-depth", "1",
                           "--resolution", "8", "--batch", "4", "--steps", "2", "--warmup", "1",
                           "--precision", "fp32", "--strategy", "importance"])[0]
    assert row["img_per_s"] > 0 and row["gflop_per_img"] > 0 and row["options"] == "-"


def test_gpu_check_script_runs_end_to_end_at_a_tiny_size(tmp_path):
    """The script a GPU session runs first: every configuration row comes back (numbers or a one-line error)."""
    env = {**os.environ, "OUT": str(tmp_path / "out"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--tiny", "--budget-s", "400"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    rows = record["rows"]
    assert len(rows) == 7 and all("error" not in r for r in rows), rows
    assert rows[0]["name"] == "DiT-XL/2 compiled" and rows[0]["compile"]  # the plain inductor compiled: no probe more
    assert rows[1]["compile"] and "residual_bf16" in rows[2]["options"]
    assert "memory_budget=0.5" in rows[4]["options"] and not rows[5]["compile"] and not rows[6]["compile"]
    assert record["environment"]["fp8"].startswith("train.fp8 needs a CUDA GPU")
    assert "| MaskDiT-XL/2 compiled |" in (tmp_path / "out" / "gpu_check.md").read_text()


def test_gpu_check_tries_the_next_inductor_setting_when_compiling_fails():
    """The first GPU check's compiled DiT step failed inside Triton: the probe moves on to the next setting and
    the later compiled rows carry the first one that compiled."""
    import gpu_check

    tried = []

    def run(name, flags):
        tried.append(flags)
        return {"name": name, "error": "exit 1: PassManager::run failed"} if len(tried) == 1 else {"name": name}

    rows, setting = gpu_check.find_compile_setting(run)
    assert len(rows) == 2 and "error" in rows[0] and "error" not in rows[1]
    assert setting == gpu_check.COMPILE_SETTINGS[1] and tried[1][-2:] == setting
    assert all(setting[-1] in flags for _, flags in gpu_check.configurations([], setting) if "--compile" in flags)
    rows, setting = gpu_check.find_compile_setting(lambda name, flags: {"name": name, "error": "exit 1"})
    assert setting is None and len(rows) == len(gpu_check.COMPILE_SETTINGS)
    # a failed row reports the error, not the hint torch.compile prints after it
    stderr = "Traceback ...\nRuntimeError: PassManager::run failed\n\nSet TORCHDYNAMO_VERBOSE=1 for the internal stack trace"
    assert gpu_check.error_line(stderr) == "RuntimeError: PassManager::run failed"


def test_throughput_sets_inductor_options_and_refuses_unknown_ones():
    import throughput
    import torch._inductor.config as inductor_config
    before = inductor_config.triton.persistent_reductions, inductor_config.triton.spill_threshold
    try:
        throughput.set_inductor_options(["triton.persistent_reductions=false", "triton.spill_threshold=32"])
        assert inductor_config.triton.persistent_reductions is False
        assert inductor_config.triton.spill_threshold == 32 and isinstance(inductor_config.triton.spill_threshold, int)
    finally:
        inductor_config.triton.persistent_reductions, inductor_config.triton.spill_threshold = before
    with pytest.raises(SystemExit, match="triton.no_such_option"):
        throughput.set_inductor_options(["triton.no_such_option=1"])
