"""GPU fast-path options, checked on the CPU: selective activation checkpointing, the bf16 residual stream, the
FP8 conversion logic and its refusal, the saved-activation count behind benchmarks/memory/, the throughput
benchmark on the real Trainer step, and the one-shot GPU check script at a tiny size."""

import json
import os
import subprocess

import pytest
import torch
from torch import nn

from conftest import REPO
from diffusion.network import build_network
from training.config import ConfigError, ModelConfig, load_config
from training.fp8 import fp8_refusal, is_fp8_layer


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
    from benchmarks.memory.estimate import estimate

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
    load_config(None, ["train.activation_memory_budget=0.5", "train.compile=net", "model.grad_checkpointing=encoder"])


def test_throughput_benchmark_times_the_real_trainer_step():
    from benchmarks import throughput

    row = throughput.main(["--arch", "S", "--depth", "2", "--width", "64", "--heads", "2", "--decoder-depth", "1",
                           "--resolution", "8", "--batch", "4", "--steps", "2", "--warmup", "1",
                           "--precision", "fp32", "--strategy", "importance"])[0]
    assert row["img_per_s"] > 0 and row["gflop_per_img"] > 0 and row["options"] == "-"


def test_gpu_check_script_runs_end_to_end_at_a_tiny_size(tmp_path):
    """The script a GPU session runs first: eager first, each compile scope, then the options at the fastest
    scope; every row comes back with its step and compile times, written as it is measured."""
    env = {**os.environ, "OUT": str(tmp_path / "out"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", "benchmarks/gpu_check/check.sh", "--tiny", "--budget-s", "400"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    rows = record["rows"]
    assert all("error" not in r for r in rows), rows
    assert [r["compile"] for r in rows[:4]] == ["none", "blocks", "net", "step"]
    best = max(rows[1:4], key=lambda r: r["img_per_s"])["compile"]
    assert [r["name"] for r in rows[4:]] == [f"MaskDiT-XL/2 fastest ({best})", f"MaskDiT-XL/2 fastest ({best}), "
                                             "memory budget 0.5", "DiT-XL/2 eager", f"DiT-XL/2 compiled {best}"]
    assert "residual_bf16" in rows[4]["options"] and "memory_budget=0.5" in rows[5]["options"]
    assert all(r["first_step_s"] >= r["compile_s"] >= 0 and r["step_s"] > 0 for r in rows)
    assert record["environment"]["fp8"].startswith("train.fp8 needs a CUDA GPU") and "triton" in record["environment"]
    assert "| MaskDiT-XL/2 compiled net |" in (tmp_path / "out" / "gpu_check.md").read_text()


def test_gpu_check_keeps_a_failed_rows_stderr_and_goes_on(tmp_path, monkeypatch):
    """A row that fails (here: a scope that does not compile, as Triton 3.6 failed on the H200) leaves a one-line
    error in the table and its whole stderr in a log file; the options then run at the fastest scope that
    worked, and with none working, eagerly."""
    from benchmarks.gpu_check import check as gpu_check

    def fake_run(cmd, capture_output, text, timeout, cwd):
        scope = cmd[cmd.index("--compile") + 1]
        if scope == "step":
            stderr = ("Traceback ...\nRuntimeError: PassManager::run failed\n\n"
                      "Set TORCHDYNAMO_VERBOSE=1 for the internal stack trace")
            return subprocess.CompletedProcess(cmd, 1, "", stderr)
        row = {"compile": scope, "img_per_s": {"none": 1.0, "blocks": 3.0, "net": 2.0}[scope]}
        return subprocess.CompletedProcess(cmd, 0, json.dumps(row) + "\n", "")

    monkeypatch.setattr(gpu_check.subprocess, "run", fake_run)
    check = gpu_check.Check(tmp_path, {}, [], deadline=1e18, tiny_size=False)
    for name, flags in gpu_check.scope_rows():
        check.run(name, flags)
    failed = check.rows[3]
    assert failed["name"] == "MaskDiT-XL/2 compiled step"
    assert failed["error"] == "exit 1: RuntimeError: PassManager::run failed (stderr: MaskDiT-XL-2-compiled-step.stderr.log)"
    assert "TORCHDYNAMO_VERBOSE" in (tmp_path / "MaskDiT-XL-2-compiled-step.stderr.log").read_text()
    assert gpu_check.fastest_scope(check.rows) == "blocks"
    assert json.loads((tmp_path / "gpu_check.json").read_text())["rows"][3] == failed  # written as it came
    assert gpu_check.fastest_scope([check.rows[0], failed]) == "none"
    assert [name for name, _ in gpu_check.option_rows("none", [])] == ["MaskDiT-XL/2 fastest (none)", "DiT-XL/2 eager"]


def test_throughput_sets_inductor_options_and_refuses_unknown_ones():
    from benchmarks import throughput
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
