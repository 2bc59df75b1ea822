"""Float8 training of the transformer's token-wise linear layers with torchao (train.fp8).

Which layers: the attention and MLP linears of the encoder and decoder blocks (qkv, proj, fc1, fc2), the GEMMs
over all tokens that hold almost all of the step's FLOPs. The adaLN modulation linears see one row per image
and the embedders and final layer are small: float8 scaling costs more than it saves there, and keeping the
output layer in bf16 is torchao's own recommendation. float8 GEMMs also need both dimensions divisible by 16.

Where: CUDA GPUs with float8 tensor cores (compute capability ≥ 8.9: Ada, Hopper, Blackwell), under bf16
autocast. Anywhere else the run is refused with one line before any work. The EMA copy stays in plain
nn.Linear (it is built before the conversion), and Float8Linear keeps nn.Linear's parameters, so checkpoints
and snapshots are the same files as without fp8.
"""

import re

import torch
from torch import nn

FP8_LAYERS = re.compile(r"(^|\.)(blocks|decoder_blocks)\.\d+\.(attn\.(qkv|proj)|mlp\.(fc1|fc2))$")
MIN_CAPABILITY = (8, 9)


def fp8_refusal(device: torch.device, mixed_precision: str) -> str | None:
    """Why train.fp8 cannot run here, as one line; None when it can."""
    if mixed_precision != "bf16":
        return f"train.fp8 needs train.mixed_precision bf16 (got {mixed_precision})"
    if device.type != "cuda":
        return f"train.fp8 needs a CUDA GPU with float8 tensor cores (compute capability ≥ 8.9); this run is on {device}"
    capability = torch.cuda.get_device_capability(device)
    if capability < MIN_CAPABILITY:
        return (f"train.fp8 needs compute capability ≥ 8.9 (Ada, Hopper); {torch.cuda.get_device_name(device)} has "
                f"{capability[0]}.{capability[1]}")
    try:
        import torchao.float8  # noqa: F401
    except ImportError:
        return "train.fp8 needs torchao (pip install torchao; GPU machines without network: ../shared/wheels)"
    return None


def is_fp8_layer(module: nn.Module, fqn: str) -> bool:
    """torchao module filter: the block linears above, with both dimensions divisible by 16."""
    return (isinstance(module, nn.Linear) and FP8_LAYERS.search(fqn) is not None
            and module.in_features % 16 == 0 and module.out_features % 16 == 0)


def convert_to_fp8(net: nn.Module) -> int:
    """Swap the chosen linears of `net` for torchao Float8Linear (tensorwise dynamic scaling) in place.
    -> the number of layers converted."""
    from torchao.float8 import convert_to_float8_training

    chosen = [fqn for fqn, module in net.named_modules() if is_fp8_layer(module, fqn)]
    convert_to_float8_training(net, module_filter_fn=is_fp8_layer)
    return len(chosen)
