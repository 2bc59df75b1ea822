"""The time-to-quality benchmark's one entry command (run from the repository root):

  python -m benchmarks.ttq run --seeds 0 1 2 --rows maskdit_edm dit_edm  # train + score rows at paired seeds
  python -m benchmarks.ttq throughput --rounds 3  # side-by-side img/s of every row
  python -m benchmarks.ttq report --readme README.md docs/benchmarks/ttq/README.md  # tables, plot, README
  python -m benchmarks.ttq eval-noise --rows maskdit_min_snr maskdit_edm --seeds 0 1 --replicates 4  # eval noise
  python -m benchmarks.ttq sample-range --rows unet_ddpm --seeds 0  # pixel range of raw samples
  python -m benchmarks.ttq claims --readme docs/benchmarks/ttq/README.md  # early-phase calls at the horizon

`python -m benchmarks.ttq <command> --help` for each command's options. The parts: protocol.py (the protocol, run,
throughput), rows.py, endpoints.py, report.py, claims.py, eval_noise.py, sample_range.py; statistics in benchmarks/stats.py.
"""

from benchmarks.entry import dispatch
from benchmarks.ttq import claims, eval_noise, protocol, sample_range

# run / throughput / report share the protocol's parser (its first positional is the command)
PROTOCOL_COMMANDS = ("run", "throughput", "report")
COMMANDS = {**{name: (lambda rest, name=name: protocol.main([name, *rest])) for name in PROTOCOL_COMMANDS},
            "eval-noise": eval_noise.main, "sample-range": sample_range.main, "claims": claims.main}


def main(argv: list[str] | None = None) -> None:
    dispatch(__doc__, COMMANDS, argv)


if __name__ == "__main__":
    main()
