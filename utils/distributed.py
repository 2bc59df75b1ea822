"""Process-group teardown shared by every command that may run under torchrun / accelerate launch."""

import torch


def release_process_group() -> None:
    """Destroy the default process group if one is alive. A rank that exits with the group alive can abort in
    the C++ destructors ("terminate called without an active exception", SIGABRT), and the launcher then reports
    a failed run after complete work. Local, no barrier: a failing rank cannot hang here."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
