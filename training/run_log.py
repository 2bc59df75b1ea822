"""Run-directory logging on the main process: log.txt, stats.jsonl and tensorboard (accelerate tracker)."""

import json
import time
from pathlib import Path


class RunLog:
    def __init__(self, run_dir: Path, accelerator):
        self.run_dir = Path(run_dir)
        self.accelerator = accelerator
        self.main = accelerator.is_main_process

    def print(self, line: str) -> None:
        if self.main:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            with open(self.run_dir / "log.txt", "a") as f:
                f.write(f"{stamp} {line}\n")
            print(line, flush=True)

    def stats(self, stats: dict, step: int) -> None:
        """One JSON line per log interval; scalar values also go to tensorboard."""
        if self.main:
            with open(self.run_dir / "stats.jsonl", "a") as f:
                f.write(json.dumps(stats) + "\n")
        scalars = {k: v for k, v in stats.items() if isinstance(v, (int, float))}
        self.accelerator.log(scalars, step=step)
