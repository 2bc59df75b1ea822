"""Measurements that are not tests. Each benchmark runs from the repository root as a module:

  benchmarks.ttq              run | throughput | report | eval-noise | sample-range: time to quality (ttq/)
  benchmarks.default_quality  run | report: README command 1's sample quality
  benchmarks.gpu_check        run | report: the one-shot GPU check (gpu_check/)
  benchmarks.throughput       training-step / sampling img/s
  benchmarks.memory           estimate | report: expected peak memory (memory/)
  benchmarks.readers          latent reader throughput
  benchmarks.strategies       a quick look at the noise-level strategies

e.g. `python -m benchmarks.ttq report --readme README.md`; each takes --help.

Shared by them: stats.py (paired statistics), markdown.py (tables written between markers), entry.py (a package's
subcommands and report command), commands.py (running a suite command), fmnist_recipes.py.
Imports go one way: benchmarks import the suite, nothing in the suite imports benchmarks (tests/test_layout.py).
"""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
