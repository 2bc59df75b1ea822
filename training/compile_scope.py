"""What torch.compile compiles in the training step (`train.compile`), and the fallback when it fails to compile.

Scopes, widest first:
  step    the whole training forward (training/objective.py: preconditioning, network, masking, routing, loss,
          strategy weights) as one graph; with several processes the DDP-wrapped module, so Dynamo splits the
          graph at DDP's gradient buckets and communication overlaps the backward pass
  blocks  each transformer block on its own (regional compilation: every encoder block runs one compiled graph,
          the decoder blocks another), the shortest compile on XL
  net     the preconditioned network only, as the MaskDiT reference compiles it
  none    eager

`net` and `blocks` compile modules in place (nn.Module.compile), so parameter names, the optimizer and DDP see
the same modules as eagerly; `step` wraps the objective. Compilation happens lazily at the first forward and
backward, so a scope that cannot compile (a Dynamo, AOTAutograd, inductor or Triton exception) is found at the
first step: `CompiledForward.fall_back` logs one warning and moves to the next scope (step → blocks → net →
none) unless `train.compile_strict`.
"""

import os
import re
import traceback

import torch
from torch import nn

SCOPES = ("none", "net", "blocks", "step")
FALLBACK = {"step": "blocks", "blocks": "net", "net": "none"}
# A failure with a frame in one of these packages happened while compiling (or running compiled code).
COMPILER_PACKAGES = tuple(os.sep + os.path.join(*parts) + os.sep for parts in
                          [("torch", "_dynamo"), ("torch", "_inductor"), ("torch", "_functorch"), ("triton",)])


def transformer_blocks(net: nn.Module) -> list[nn.Module]:
    """The modules `blocks` compiles: every encoder and decoder block of the backbone (models/maskdit.py)."""
    from models.maskdit import Block

    return [module for module in net.modules() if isinstance(module, Block)]


def compiled_modules(bare_objective: nn.Module, scope: str) -> list[nn.Module]:
    """The modules compiled in place for `scope` (none for `step`, which wraps, and `none`)."""
    if scope == "net":
        return [bare_objective.net]
    if scope == "blocks":
        return transformer_blocks(bare_objective.net)
    return []


def apply_scope(objective: nn.Module, bare_objective: nn.Module, scope: str, backend: str):
    """-> the callable the step runs: `objective` (DDP-wrapped when distributed) with `scope` compiled."""
    for module in compiled_modules(bare_objective, scope):
        module.compile(backend=backend)
    return torch.compile(objective, backend=backend) if scope == "step" else objective


def remove_scope(bare_objective: nn.Module, scope: str) -> None:
    """Undo `apply_scope`'s in-place compilation (nn.Module.compile keeps its compiled call here)."""
    for module in compiled_modules(bare_objective, scope):
        module._compiled_call_impl = None


def is_compile_failure(err: BaseException) -> bool:
    """Whether `err` (or an exception it was raised from) came out of Dynamo, AOTAutograd, inductor or Triton."""
    import torch._dynamo.exc

    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, torch._dynamo.exc.TorchDynamoException):
            return True
        if any(package in frame.filename for frame in traceback.extract_tb(err.__traceback__)
               for package in COMPILER_PACKAGES):
            return True
        err = err.__cause__ or err.__context__
    return False


def named_error_line(text: str) -> str | None:
    """The last line of an error text that starts with an exception name; compile errors carry several lines and
    end with a hint ("Set TORCHDYNAMO_VERBOSE=1 ..."), not the error. None when no line does."""
    named = [line.strip() for line in text.splitlines() if re.match(r"^[\w.]*(Error|Exception)\b", line.strip())]
    return named[-1] if named else None


def error_line(err: BaseException) -> str:
    """One line for an exception: its named error line, else its first line after the exception's type."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()] or ["(no message)"]
    return (named_error_line(str(err)) or f"{type(err).__name__}: {lines[0]}")[:300]


class CompileError(RuntimeError):
    pass


class CompiledForward:
    """The training forward under a compile scope. Until the first step has run (`verified`), a compile failure
    may move it to the next scope; after that every exception is the caller's."""

    def __init__(self, objective: nn.Module, bare_objective: nn.Module, scope: str, backend: str, strict: bool,
                 log=print):
        """`log`: where the fallback's warning goes (None: nowhere, e.g. on ranks other than 0)."""
        self.objective, self.bare_objective, self.backend, self.strict, self.log = (
            objective, bare_objective, backend, strict, log)
        self.scope = scope
        self.call = apply_scope(objective, bare_objective, scope, backend)
        self.verified = scope == "none"

    def __call__(self, *args):
        return self.call(*args)

    def can_fall_back(self, err: BaseException) -> bool:
        return not self.verified and self.scope != "none" and is_compile_failure(err)

    def fall_back(self, err: BaseException) -> None:
        """Leave the failed scope for the next one (one warning line), or raise CompileError when strict."""
        if self.strict:
            raise CompileError(f"train.compile {self.scope} failed to compile ({error_line(err)}); "
                               "train.compile_strict is true, so the run stops") from err
        following = FALLBACK[self.scope]
        if self.log is not None:
            self.log(f"warning: train.compile {self.scope} failed to compile ({error_line(err)}); trying "
                     f"train.compile {following}")
        remove_scope(self.bare_objective, self.scope)
        self.scope = following
        self.call = apply_scope(self.objective, self.bare_objective, following, self.backend)
        self.verified = following == "none"
