"""Issue #28: the loss's visible-token mean without a reduction of ones, the compile scopes (none | net | blocks |
step) of the real Trainer step under inductor, and the fallback to the next scope when one fails to compile."""

import pytest
import torch

from dataio.stream import InMemoryBatches, ShuffledIndexStream
from dataio.training_data import InMemoryImages, TrainingData
from diffusion.loss import token_mean
from models.masking import mask_from_noise
from training.checkpoint import Progress
from training.compile_scope import CompileError, error_line, is_compile_failure
from training.config import Config, ConfigError, ModelConfig, load_config
from training.loop import BatchLayout, assemble_trainer, build_model_parts, make_accelerator

TINY = dict(arch="S", resolution=8, in_channels=4, patch_size=2, num_classes=4, depth=2, width=32, heads=2,
            decoder_depth=1, decoder_width=32, decoder_heads=2)


def old_token_mean(per_token, token_weight):
    """The formula before #28: the weights' sum (a tensor of ones when unmasked) as the count."""
    return (per_token * token_weight).sum(1) / token_weight.sum(1).clamp_min(1)


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75])
def test_token_mean_is_bit_identical_to_the_ones_sum(ratio):
    gen = torch.Generator().manual_seed(0)
    err = torch.rand(16, 64, generator=gen) * torch.logspace(-3, 2, 64)  # (N, L), magnitudes over 5 decades
    mask = mask_from_noise(torch.rand(16, 64, generator=gen), ratio)
    visible = 1 - mask.mask
    assert torch.equal(token_mean(err, visible, mask.num_visible), old_token_mean(err, visible))
    assert torch.equal(token_mean(err, mask.mask, 64 - mask.num_visible), old_token_mean(err, mask.mask))
    assert torch.equal(token_mean(err, None, 64), old_token_mean(err, torch.ones_like(err)))
    kept = torch.gather(err, 1, mask.ids_keep)  # (N, K): an independent oracle, up to float summation order
    torch.testing.assert_close(token_mean(err, visible, mask.num_visible), kept.mean(1), rtol=1e-6, atol=0)


SHAPE_ONLY = (torch.ones_like, torch.zeros_like, torch.full_like, torch.empty_like, "new_ones", "new_zeros", "new_full",
              "new_empty")


def reductions_of_draws_only(objective, images, labels, draws, mask_ratio) -> list[str]:
    """The reductions in the traced training forward whose input depends on no image and no parameter: sums
    of tensors built from the draws alone (the mask, ones), whose values are known integers."""
    found = []

    def backend(gm, example_inputs):
        data = {n for n in gm.graph.nodes if n.op == "placeholder" and ("images" in n.name or "parameters" in n.name)}
        depends = {}
        for node in gm.graph.nodes:  # a *_like / new_* tensor takes its input's shape, not its values
            shape_only = node.target in SHAPE_ONLY
            depends[node] = node in data or not shape_only and any(depends.get(i, False) for i in node.all_input_nodes)
            if node.target in ("sum", "mean", torch.sum, torch.mean) and not depends[node]:
                found.append(node.format_node())
        return gm.forward

    torch._dynamo.reset()
    torch.compile(objective, backend=backend, fullgraph=True)(images, labels, draws, mask_ratio)
    return found


@pytest.mark.parametrize("mask_ratio", [0.0, 0.5])
def test_compiled_forward_reduces_no_tensor_of_known_count(mask_ratio, monkeypatch):
    """The graph inductor gets holds no reduction of draws-only tensors (the kernel Triton 3.6 miscompiled),
    and the check has teeth: with the old formula patched back in, it finds the ones-sum."""
    from diffusion import loss as loss_module
    from test_compiled_step import make_objective, step_inputs

    objective, cfg = make_objective("edm", {}, {})
    images, labels, draws = step_inputs(objective, cfg, 0, route=False)
    assert reductions_of_draws_only(objective, images, labels, draws, mask_ratio) == []
    monkeypatch.setattr(loss_module, "token_mean", lambda x, w, n: old_token_mean(
        x, torch.ones_like(x) if w is None else w))
    assert reductions_of_draws_only(objective, images, labels, draws, mask_ratio) != []


def make_trainer(tmp_path, scope: str, backend: str = "inductor", batch_gpu: int | None = None, strict=False):
    cfg = Config()
    cfg.model = ModelConfig(**TINY)
    cfg.mask.ratio = cfg.mask.ratio_end = 0.5
    cfg.train.batch_size, cfg.train.batch_gpu, cfg.train.mixed_precision = 8, batch_gpu, "no"
    cfg.train.compile, cfg.train.compile_backend, cfg.train.compile_strict = scope, backend, strict
    cfg.optim.lr = 1e-4
    torch.manual_seed(0)
    accelerator = make_accelerator(cfg, tmp_path)
    parts = build_model_parts(cfg, accelerator.device)
    gen = torch.Generator().manual_seed(1)
    images, labels = torch.randn(32, 4, 8, 8, generator=gen), torch.randint(0, 4, (32,), generator=gen)
    data = InMemoryImages(images, labels, 4, "random latents")
    batch_gpu = batch_gpu or 8
    batches = InMemoryBatches(data, ShuffledIndexStream(32, seed=0), batch_gpu, "cpu")
    training_data = TrainingData(batches, (4, 8, 8), 4, data.description, {"space": "latent"})
    return assemble_trainer(cfg, accelerator, parts, training_data, BatchLayout(batch_gpu, 8 // batch_gpu)), cfg


def train_steps(trainer, cfg, steps: int = 2) -> list[float]:
    """Loss of each step (the Trainer's own sums), then the parameters."""
    progress, losses = Progress(), []
    for _ in range(steps):
        trainer.step(progress, cfg.mask.ratio)
        losses.append(trainer.take_means(progress)["loss"])
    return losses


@pytest.fixture(scope="module")
def eager_losses(tmp_path_factory):
    trainer, cfg = make_trainer(tmp_path_factory.mktemp("eager"), "none")
    return train_steps(trainer, cfg)


@pytest.mark.parametrize("scope", ["net", "blocks", "step"])
def test_each_scope_compiles_with_inductor_and_trains_like_eager(scope, eager_losses, tmp_path, capsys):
    """Inductor on the CPU (C++ kernels): 2 real Trainer steps. Tolerance: inductor fuses and reorders float32
    arithmetic (relative rounding ~1e-7 per op over a few hundred ops), and the second step starts from weights
    one AdamW step (lr 1e-4) apart at most by rounding, so the losses agree to 1e-4 relative, not bitwise."""
    torch._dynamo.reset()
    trainer, cfg = make_trainer(tmp_path, scope)
    losses = train_steps(trainer, cfg)
    assert trainer.train_objective.scope == scope and "warning" not in capsys.readouterr().out  # no fallback
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(eager_losses), rtol=1e-4, atol=0)


def failing_on_whole_step(gm, example_inputs):
    """A backend that cannot compile the whole step (its graph holds the mask's argsort) and runs any smaller
    graph as traced: `step` fails the way Triton failed on the GPU, `blocks` works."""
    if any(node.target in (torch.argsort, "argsort") for node in gm.graph.nodes):
        raise RuntimeError("PassManager::run failed (injected)")
    return gm.forward


def always_failing(gm, example_inputs):
    raise RuntimeError("PassManager::run failed (injected)")


def test_a_scope_that_fails_to_compile_falls_back_to_the_next(eager_losses, tmp_path, capsys):
    torch._dynamo.reset()
    trainer, cfg = make_trainer(tmp_path, "step", backend=failing_on_whole_step)
    losses = train_steps(trainer, cfg)
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning")]
    assert len(warnings) == 1 and "train.compile step failed" in warnings[0] and "PassManager::run failed" in \
        warnings[0] and warnings[0].endswith("trying train.compile blocks")
    assert trainer.train_objective.scope == "blocks"
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(eager_losses), rtol=1e-6, atol=0)


def test_every_scope_failing_ends_eager(eager_losses, tmp_path, capsys):
    torch._dynamo.reset()
    trainer, cfg = make_trainer(tmp_path, "step", backend=always_failing)
    losses = train_steps(trainer, cfg)
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning")]
    assert [w.rsplit(" ", 1)[-1] for w in warnings] == ["blocks", "net", "none"]
    assert trainer.train_objective.scope == "none"
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(eager_losses), rtol=1e-6, atol=0)


def test_strict_compile_stops_with_one_line(tmp_path):
    torch._dynamo.reset()
    trainer, cfg = make_trainer(tmp_path, "net", backend=always_failing, strict=True)
    with pytest.raises(CompileError, match=r"^train.compile net failed to compile \(.*PassManager::run failed "
                                           r"\(injected\)\); train.compile_strict is true"):
        train_steps(trainer, cfg, steps=1)


def failing_at_second_run(gm, example_inputs):
    """Compiles the whole step but fails when the compiled graph runs a second time: the failure comes after the
    first micro-batch's gradients were accumulated, so the fallback must drop and replay them."""
    if not any(node.target in (torch.argsort, "argsort") for node in gm.graph.nodes):
        return gm.forward
    runs = []

    def run(*args):
        runs.append(1)
        if len(runs) == 2:
            raise torch._dynamo.exc.TorchDynamoException("injected failure at the second micro-batch")
        return gm.forward(*args)
    return run


def test_fallback_mid_step_replays_the_step_exactly(tmp_path):
    """Gradient accumulation (4 micro-batches of 2): a failure at micro-batch 2 drops the gradients of
    micro-batch 1 and replays both under the next scope; the step's result equals the eager step's."""
    torch._dynamo.reset()
    eager, cfg = make_trainer(tmp_path / "eager", "none", batch_gpu=2)
    train_steps(eager, cfg, steps=1)
    torch._dynamo.reset()
    trainer, cfg = make_trainer(tmp_path / "compiled", "step", backend=failing_at_second_run, batch_gpu=2)
    train_steps(trainer, cfg, steps=1)
    assert trainer.train_objective.scope == "blocks"
    for a, b in zip(eager.net.parameters(), trainer.net.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)  # a double-counted micro-batch moves them by ~lr


def test_compile_failures_are_recognised_by_where_they_come_from():
    assert is_compile_failure(torch._dynamo.exc.TorchDynamoException("x"))
    assert not is_compile_failure(ValueError("a bug in the model"))
    hint = "RuntimeError: PassManager::run failed\n\nSet TORCHDYNAMO_VERBOSE=1 for the internal stack trace"
    assert error_line(RuntimeError(hint)) == "RuntimeError: PassManager::run failed"
    assert error_line(ValueError("bad shape")) == "ValueError: bad shape"


def test_compile_key_names_its_values():
    assert load_config(None, ["train.compile=blocks"]).train.compile == "blocks"
    with pytest.raises(ConfigError, match=r"train.compile: 'True' is not one of none \| net \| blocks \| step "
                                          r"\(a boolean true meant step\)"):
        load_config(None, ["train.compile=true"])
    with pytest.raises(ConfigError, match="ddpm_unet has none"):
        load_config(None, ["train.compile=blocks", "model.arch=ddpm_unet", "mask.ratio=0", "mask.ratio_end=0",
                           "model.use_decoder=false"])
