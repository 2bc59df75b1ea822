"""Every example in a command's --help (its module docstring) is accepted by that command as written: the
arguments parse with the command's own parser, the config files it names exist, and their key=value overrides
resolve against the config schema. (Issue #32: `generate.py --help` showed a `.pt` snapshot it refuses.)"""

import ast
import importlib.util
import re
import shlex

import pytest

from conftest import REPO

COMMANDS = ["train.py", "generate.py", "eval_latent.py", "extract_latent.py", "lmdb2wds.py", "reconstruct_ema.py",
            "scripts/convert_checkpoint.py", "benchmarks/default_quality.py"]


def examples(script: str) -> list[list[str]]:
    """The argument lists of the docstring's example commands (continuation lines joined, comments dropped)."""
    doc = ast.get_docstring(ast.parse((REPO / script).read_text()))
    text = re.sub(r"\\\s*\n\s*", " ", doc)  # join `\`-continued lines
    name = script.rsplit("/", 1)[-1]  # examples run from the repository root, or from the script's folder
    found = []
    for line in text.splitlines():
        command = line.split("  #")[0].strip()
        if not command.startswith(("python ", "accelerate launch ", "torchrun ")):
            continue  # prose
        words = shlex.split(command)
        at = [i for i, word in enumerate(words) if word == script or word == name]
        if at:
            found.append(words[at[0] + 1:])
    return found


def load(script: str):
    spec = importlib.util.spec_from_file_location(script.replace("/", "_")[:-3], REPO / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("script", COMMANDS)
def test_help_examples_parse_and_their_configs_resolve(script):
    from evaluation.config import load_eval_config
    from training.config import load_config

    module, cases = load(script), examples(script)
    assert cases, f"{script} --help shows no example"
    for argv in cases:
        args = module.parse_args(argv)
        config = getattr(args, "config", None)
        if config is None:
            continue
        assert (REPO / config).is_file(), (script, config)
        overrides = [a for a in argv if "=" in a and not a.startswith("-")]
        loader = load_config if config.startswith(("configs/train", "configs/finetune")) else load_eval_config
        loader(str(REPO / config), overrides)
    if script == "scripts/convert_checkpoint.py":
        return
    assert not any(a.endswith(".pt") for argv in cases for a in argv), f"{script} --help shows a .pt file"
