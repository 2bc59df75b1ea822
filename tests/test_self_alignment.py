"""Self-representation alignment (SRA; diffusion/self_alignment.py): the teacher's noise level against values
computed by hand, the weight schedule, the target and loss against an independent computation (masked and
routed students included), no gradient into the teacher, the draw order, the compiled step, the config checks,
and real runs: checkpointed head, exact resume, snapshots without the head."""

import json
import math

import pytest
import torch

from conftest import read_checkpoint, read_snapshot_meta, train_tiny
from diffusion.loss import MaskDiTLoss
from diffusion.network import build_network
from diffusion.self_alignment import (TEACHER_SIGMA_MIN, SelfAlignment, alignment_weight, teacher_sigma)
from diffusion.step_draws import draw_step, step_generator
from diffusion.strategies import build_strategy
from models.snapshot import read_snapshot
from training.config import ConfigError, ModelConfig, load_config
from training.ema import EMA
from training.objective import TrainingObjective

TINY = dict(arch="S", resolution=8, in_channels=3, patch_size=2, num_classes=4, depth=6, width=32, heads=2,
            decoder_depth=1, decoder_width=32, decoder_heads=2)


def test_the_teacher_level_follows_the_linear_path_by_hand():
    sigma = torch.tensor([1.0, 1.0, 3.0, 0.01])
    shift = torch.tensor([0.5, 0.0, 1.0, 1.0])
    # σ 1 -> t 0.5; t' = 0.5 − 0.2·0.5 = 0.4 -> σ' = 0.4 / 0.6. No shift: σ' = σ.
    # σ 3 -> t 0.75 -> t' 0.55 -> 0.55 / 0.45.
    # σ 0.01 -> t < 0.2 -> t' = 0 -> the EDM floor
    expected = [0.4 / 0.6, 1.0, 0.55 / 0.45, TEACHER_SIGMA_MIN]
    assert teacher_sigma(sigma, shift, 0.2).tolist() == pytest.approx(expected, rel=1e-6)


def test_the_teacher_is_never_noisier_and_shifts_by_at_most_the_maximum_in_t():
    gen = torch.Generator().manual_seed(0)
    sigma = (torch.randn(10_000, generator=gen) * 1.2 - 1.2).exp()  # EDM's training σ
    shift = torch.rand(10_000, generator=gen)
    teacher = teacher_sigma(sigma, shift, 0.2)
    assert torch.all(teacher <= sigma.clamp_min(TEACHER_SIGMA_MIN))
    t, t_teacher = sigma / (1 + sigma), teacher / (1 + teacher)
    assert torch.all(t - t_teacher <= 0.2 + 1e-6)


def test_the_weight_schedule_is_sras():
    assert alignment_weight(0.2, 100.0, 192_175, 1_281_167) == 0.2
    assert alignment_weight(0.2, 192_175 + 1_281_167, 192_175, 1_281_167) == pytest.approx(0.02)
    epoch = 649  # SRA: 0.2 · 0.1^((epoch − 149) / 1000)
    assert alignment_weight(0.2, (epoch + 1) * 1281.167, 192_175, 1_281_167) == pytest.approx(
        0.2 * 0.1 ** ((epoch - 149) / 1000), rel=1e-3)


def smooth_l1(x: float, beta: float) -> float:
    return 0.5 * x * x / beta if abs(x) < beta else abs(x) - 0.5 * beta


def make_parts(model: dict, student_block: int = 1, teacher_block: int = 4):
    cfg = ModelConfig(**{**TINY, **model})
    torch.manual_seed(0)
    net = build_network(cfg).train()
    ema = EMA(net)
    with torch.no_grad():  # a teacher that differs from the student, as it does after training starts
        for p in ema.net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    sra = SelfAlignment(cfg.width, student_block, teacher_block, 0.2, 0.05, 0.2)
    sra.attach_teacher(ema.net)
    return cfg, net, ema, sra


def step_draws(route: bool):
    gen = step_generator(0, 0, "cpu")
    return draw_step(build_strategy("edm", {}, 0.5), gen, 4, (3, 8, 8), 16, 0.1, "cpu", route=route, teacher=True)


@pytest.mark.parametrize("model,mask_ratio,route", [({"use_decoder": False}, 0.0, False), ({}, 0.5, False),
                                                    ({"route": {"ratio": 0.5, "start": 1, "end": 3}}, 0.5, True)],
                         ids=["dit", "maskdit", "maskdit-routed"])
def test_the_loss_is_the_smooth_l1_to_the_teachers_tokens_at_the_students_positions(model, mask_ratio, route):
    cfg, net, ema, sra = make_parts(model, student_block=1 if not route else 2)
    draws = step_draws(route)
    loss = MaskDiTLoss(2, 16, 0.1, 4)
    mask = loss.make_mask(draws.mask_noise, mask_ratio)
    clean, labels = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    noisy = clean + draws.noise * draws.sigma[:, None, None, None]
    _, student = net(noisy, draws.sigma, labels, mask, draws.route_noise, repr_block=sra.student_block)
    got = sra(student, clean, draws.noise, draws.sigma, labels, draws.teacher_shift)
    # independently: the teacher's whole forward with a hook on its block, at σ' by hand, tokens picked in Python
    seen = {}
    ema.net.backbone.blocks[sra.teacher_block].register_forward_hook(lambda m, a, out: seen.setdefault("t", out))
    t = draws.sigma / (1 + draws.sigma)
    t_teacher = (t - 0.2 * draws.teacher_shift).clamp_min(0)
    sigma_teacher = (t_teacher / (1 - t_teacher)).clamp_min(0.002)
    ema.net(clean + draws.noise * sigma_teacher[:, None, None, None], sigma_teacher, labels)
    teacher_tokens = seen["t"]  # (N, L, D)
    pred = sra.head(student.tokens)
    for i in range(4):
        positions = range(16) if student.positions is None else student.positions[i].tolist()
        if mask is not None:
            assert set(positions) <= set(mask.ids_keep[i].tolist())  # only tokens the student's block saw
        diffs = (pred[i] - teacher_tokens[i, list(positions)]).flatten().tolist()
        expected = sum(smooth_l1(d, 0.05) for d in diffs) / len(diffs)
        assert got[i].item() == pytest.approx(expected, rel=1e-4)


def test_only_the_student_and_its_head_learn_from_it():
    cfg, net, ema, sra = make_parts({}, student_block=1, teacher_block=4)
    objective = TrainingObjective(net, MaskDiTLoss(2, 16, 0.1, 4, self_alignment=sra), build_strategy("edm", {}, 0.5))
    assert any(name.startswith("self_alignment.head") for name, _ in objective.named_parameters())
    assert not any("teacher" in name for name, _ in objective.named_parameters())  # held, not registered
    terms = objective(torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3]), step_draws(False), 0.5)
    assert torch.allclose(terms.total, terms.denoise + 0.1 * terms.mae + 0.2 * terms.repr, rtol=1e-6)
    terms.repr.mean().backward()  # the alignment term alone
    assert all(p.grad is None for p in ema.net.parameters())  # the teacher gets no gradient
    assert sra.head.fc1.weight.grad.abs().sum() > 0
    # below the student block: yes (adaLN-Zero: at initialisation only the gates and the embedding get gradient)
    assert net.backbone.patch_embed.weight.grad.abs().sum() > 0
    assert net.backbone.blocks[0].adaLN_modulation[1].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.backbone.blocks[3].parameters())  # above it: nothing


def test_its_draw_comes_last_so_every_other_draw_is_unchanged():
    strategy = build_strategy("speed", {}, 0.5)
    plain = draw_step(strategy, step_generator(3, 7, "cpu"), 8, (1, 8, 8), 16, 0.1, "cpu", route=True)
    with_sra = draw_step(strategy, step_generator(3, 7, "cpu"), 8, (1, 8, 8), 16, 0.1, "cpu", route=True,
                         teacher=True)
    for name in ("sigma", "noise", "mask_noise", "label_drop", "route_noise"):
        assert torch.equal(getattr(plain, name), getattr(with_sra, name)), name
    assert plain.teacher_shift is None and with_sra.teacher_shift.shape == (8,)
    assert torch.equal(with_sra.slice(2, 3).teacher_shift, with_sra.teacher_shift[2:5])


@pytest.mark.parametrize("model,mask_ratio,route", [({}, 0.5, False), ({"use_decoder": False}, 0.0, False),
                                                    ({"route": {"ratio": 0.5, "start": 1, "end": 3}}, 0.5, True)],
                         ids=["maskdit", "dit", "maskdit-tread"])
def test_the_training_forward_with_the_teacher_compiles_whole(model, mask_ratio, route):
    torch._dynamo.reset()
    cfg, net, ema, sra = make_parts(model, student_block=2)
    objective = TrainingObjective(net, MaskDiTLoss(2, 16, 0.1, 4, self_alignment=sra), build_strategy("edm", {}, 0.5))
    images, labels, draws = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3]), step_draws(route)
    compiled = torch.compile(objective, fullgraph=True, backend="aot_eager")
    eager = objective(images, labels, draws, mask_ratio)
    terms = compiled(images, labels, draws, mask_ratio)
    assert torch.allclose(terms.total, eager.total, rtol=1e-5, atol=1e-6)
    sra.set_weight(0.05)  # the scheduled weight changes without a recompilation
    again = compiled(images, labels, draws, mask_ratio)
    assert torch.allclose(again.total, again.denoise + 0.1 * again.mae + 0.05 * again.repr, rtol=1e-5)
    again.total.mean().backward()


@pytest.mark.parametrize("override,message", [
    ("loss.repr.sra.max_time_shift=1.5", "loss.repr.sra.max_time_shift: 1.5 must be in [0, 1]"),
    ("loss.repr.sra.smooth_l1_beta=0", "loss.repr.sra.smooth_l1_beta: 0.0 must be a finite number > 0"),
    ("loss.repr.sra.teacher_block_fraction=0", "loss.repr.sra.teacher_block_fraction: 0.0 must be in (0, 1]"),
    ("loss.repr.sra.decay_kimg=0", "loss.repr.sra.decay_kimg: 0.0 must be a finite number > 0"),
    ("model.arch=ddpm_unet", "loss.repr.kind sra reads a transformer block's output"),
])
def test_bad_settings_are_one_line_naming_the_key(override, message):
    extra = ["mask.ratio=0", "model.use_decoder=false"] if "ddpm_unet" in override else []
    with pytest.raises(ConfigError) as err:
        load_config("configs/train/fashion-mnist.yaml", ["loss.repr.kind=sra", *extra, override])
    assert message in str(err.value) and "\n" not in str(err.value)


SRA = ["loss.repr.kind=sra", "train.posthoc_ema.sigma_rels=[]"]


def test_a_run_trains_the_head_resumes_exactly_and_exports_no_head(tmp_path, tiny_fmnist):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    train_tiny(whole, tiny_fmnist, *SRA)
    train_tiny(resumed, tiny_fmnist, *SRA, "--stop-after-kimg", "0.064")
    train_tiny(resumed, tiny_fmnist, *SRA)
    last = sorted((whole / "checkpoints").glob("[0-9]*"))[-1].name
    (state_a, meta_a), (state_b, meta_b) = (read_checkpoint(run / "checkpoints" / last) for run in (whole, resumed))
    head_a, head_b = state_a["self_alignment"], state_b["self_alignment"]
    assert head_a.keys() == {"head.fc1.weight", "head.fc1.bias", "head.fc2.weight", "head.fc2.bias"}
    assert all(torch.equal(head_a[k], head_b[k]) for k in head_a)  # bit-exact resume, head included
    assert all(torch.equal(state_a["net"][k], state_b["net"][k]) for k in state_a["net"])
    assert not any("head" in k for k in meta_a["ema"])  # the EMA (what snapshots export) has no head
    snapshot = sorted((whole / "snapshots").glob("ema-*.safetensors"))[-1]
    assert not any("head" in k for k in read_snapshot(snapshot)[0])
    assert read_snapshot_meta(snapshot)["config"]["loss"]["repr"]["kind"] == "sra"
    rows = [json.loads(line) for line in (whole / "stats.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["loss_sra"]) and r["loss_sra"] > 0 for r in rows)


def test_resuming_with_another_kind_is_one_line(tmp_path, tiny_fmnist):
    run_dir = tmp_path / "switch"
    train_tiny(run_dir, tiny_fmnist, "--stop-after-kimg", "0.064")
    proc = train_tiny(run_dir, tiny_fmnist, *SRA, check=False)
    assert proc.returncode != 0 and "started without loss.repr.kind sra" in proc.stderr.strip().splitlines()[-1]
