"""Every documented command is accepted as written: the examples in each command's --help (its module docstring)
and the commands in the README's fenced blocks parse with the command's own parser, the config files they name
exist, and their key=value overrides resolve against the config schema. Commands that need a GPU, a network or
data that is not here are only parsed, never run. (Issue #32: `generate.py --help` showed a `.pt` snapshot it
refuses.)"""

import ast
import importlib.util
import re
import shlex

import pytest

from conftest import REPO

COMMANDS = ["train.py", "generate.py", "eval_latent.py", "extract_latent.py", "lmdb2wds.py", "reconstruct_ema.py",
            "scripts/convert_checkpoint.py", "benchmarks/default_quality.py"]


def command_lines(text: str) -> list[list[str]]:
    """The python / accelerate / torchrun command lines of a text (continuations joined, comments dropped)."""
    text = re.sub(r"\\\s*\n\s*", " ", text)
    found = []
    for line in text.splitlines():
        command = line.split("  #")[0].strip()
        if command.startswith(("python ", "accelerate launch ", "torchrun ")):
            found.append(shlex.split(command))
    return found


def check_command(script: str, argv: list[str]) -> None:
    """`argv` parses with `script`'s parser; a config it names exists and its overrides resolve."""
    from evaluation.config import load_eval_config
    from training.config import load_config

    args = load(script).parse_args(argv)
    config = getattr(args, "config", None)
    if config is None:
        return
    assert (REPO / config).is_file(), (script, config)
    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    loader = load_config if config.startswith(("configs/train", "configs/finetune")) else load_eval_config
    loader(str(REPO / config), overrides)


def test_readme_commands_parse_and_their_configs_resolve():
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, re.DOTALL)
    checked = 0
    for words in command_lines("\n".join(blocks)):
        script = next((w for w in words if w.endswith(".py")), None)
        if script is None or words[words.index(script) - 1] == "-m":
            continue  # python -m pytest
        check_command(script, words[words.index(script) + 1:])
        checked += 1
    assert checked >= 14, checked  # every stage of the README has at least one
    for path in re.findall(r"\]\(([^)#]+)", readme):  # every relative link resolves
        if "://" not in path:
            assert (REPO / path).exists(), path


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
    cases = examples(script)
    assert cases, f"{script} --help shows no example"
    for argv in cases:
        check_command(script, argv)
    if script != "scripts/convert_checkpoint.py":  # the converter's input is the old .pt format
        assert not any(a.endswith(".pt") for argv in cases for a in argv), f"{script} --help shows a .pt file"
