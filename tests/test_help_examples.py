"""Every documented command is accepted as written: the examples in each command's --help (its module docstring)
and the commands in the README's fenced blocks parse with the command's own parser, the config files they name
exist, and their key=value overrides resolve against the config schema. Commands that need a GPU, a network or
data that is not here are only parsed, never run. (Issue #32: `generate.py --help` showed a `.pt` snapshot it
refuses.)"""

import argparse
import ast
import importlib
import importlib.util
import re
import shlex
import sys

import pytest

from conftest import REPO

COMMANDS = ["train.py", "generate.py", "eval_latent.py", "extract_latent.py", "lmdb2wds.py", "reconstruct_ema.py",
            "scripts/convert_checkpoint.py"]
# the benchmarks run as modules: `python -m benchmarks.<name> ...` (their parsers are reached through main())
BENCHMARKS = ["benchmarks.ttq", "benchmarks.default_quality", "benchmarks.gpu_check", "benchmarks.throughput",
              "benchmarks.memory", "benchmarks.readers", "benchmarks.strategies"]


def command_lines(text: str) -> list[list[str]]:
    """The python / accelerate / torchrun command lines of a text (continuations joined, comments dropped)."""
    text = re.sub(r"\\\s*\n\s*", " ", text)
    found = []
    for line in text.splitlines():
        command = line.split("  #")[0].strip()
        if command.startswith(("python ", "accelerate launch ", "torchrun ")):
            found.append(shlex.split(command))
    return found


class Parsed(Exception):
    """Raised in place of running a benchmark once its parser has accepted the arguments."""

    def __init__(self, namespace: argparse.Namespace):
        self.namespace = namespace


def parse_module_command(module: str, argv: list[str], monkeypatch) -> argparse.Namespace:
    """`python -m <module> argv` up to its parser: every parser call returns into Parsed, so nothing runs."""
    for method in ("parse_args", "parse_intermixed_args"):
        original = getattr(argparse.ArgumentParser, method)

        def parse_then_stop(self, args=None, namespace=None, _original=original):
            raise Parsed(_original(self, args, namespace))

        monkeypatch.setattr(argparse.ArgumentParser, method, parse_then_stop)
    monkeypatch.setattr(sys, "argv", [module, *argv])
    entry = importlib.import_module(module + ".__main__" if (REPO / module.replace(".", "/")).is_dir() else module)
    try:
        entry.main()
    except Parsed as parsed:
        return parsed.namespace
    finally:
        monkeypatch.undo()
    raise AssertionError(f"python -m {module} {' '.join(argv)}: no parser was reached")


def check_command(script: str, argv: list[str], monkeypatch=None) -> None:
    """`argv` parses with the parser of `script` (or of benchmark module `script`, run with -m); a config it names
    exists and its overrides resolve."""
    from evaluation.config import load_eval_config
    from training.config import load_config

    if script.endswith(".py"):
        args = load(script).parse_args(argv)
    else:
        args = parse_module_command(script, argv, monkeypatch)
    config = getattr(args, "config", None)
    if config is None:
        return
    assert (REPO / config).is_file(), (script, config)
    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    loader = load_config if config.startswith(("configs/train", "configs/finetune")) else load_eval_config
    loader(str(REPO / config), overrides)


def command_target(words: list[str]) -> tuple[str, list[str]] | None:
    """(script or benchmark module, its arguments) of a command line; None for other commands (python -m pytest)."""
    if "-m" in words and words[words.index("-m") + 1].startswith("benchmarks."):
        at = words.index("-m") + 1
        return words[at], words[at + 1:]
    script = next((w for w in words if w.endswith(".py")), None)
    if script is None or words[words.index(script) - 1] == "-m":
        return None
    return script, words[words.index(script) + 1:]


def test_readme_commands_parse_and_their_configs_resolve(monkeypatch):
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, re.DOTALL)
    checked = 0
    for words in command_lines("\n".join(blocks)):
        if (target := command_target(words)) is not None:
            check_command(*target, monkeypatch)
            checked += 1
    assert checked >= 14, checked  # every stage of the README has at least one
    for path in re.findall(r"\]\(([^)#]+)", readme):  # every relative link resolves
        if "://" not in path:
            assert (REPO / path).exists(), path



def test_docs_commands_parse_and_their_links_resolve(monkeypatch):
    """The same for the guides and reports under docs/: fenced commands parse, relative links exist."""
    checked = 0
    for doc in sorted((REPO / "docs").rglob("*.md")):
        text = doc.read_text()
        for words in command_lines("\n".join(re.findall(r"```(?:bash|sh)?\n(.*?)```", text, re.DOTALL))):
            if (target := command_target(words)) is not None:
                check_command(*target, monkeypatch)
                checked += 1
        for path in re.findall(r"\]\(([^)#]+)", text):
            if "://" not in path:
                assert (doc.parent / path).exists(), (str(doc.relative_to(REPO)), path)
    assert checked >= 30, checked

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


def benchmark_examples() -> list[tuple[str, list[str]]]:
    """(module, arguments) of every `python -m benchmarks....` example in the benchmarks' docstrings."""
    found = []
    for path in sorted((REPO / "benchmarks").rglob("*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        for words in command_lines(doc):
            if (target := command_target(words)) is not None and not target[0].endswith(".py"):
                found.append(target)
    return found


def test_benchmark_examples_parse_and_their_configs_resolve(monkeypatch):
    cases = benchmark_examples()
    assert {module for module, _ in cases} == set(BENCHMARKS), "a benchmark shows no `python -m` example"
    for module, argv in cases:
        check_command(module, argv, monkeypatch)
