"""Mask-ratio schedules over training progress (fraction of total_kimg)."""

import math

SCHEDULES = ("constant", "linear", "cosine")


def mask_ratio_at(progress: float, schedule: str, start: float, end: float) -> float:
    """Mask ratio at `progress` in [0, 1]: constant = start; linear/cosine move from start to end."""
    progress = min(max(progress, 0.0), 1.0)
    if schedule == "constant":
        return start
    if schedule == "linear":
        return start + (end - start) * progress
    if schedule == "cosine":
        return end + (start - end) * 0.5 * (1 + math.cos(math.pi * progress))
    raise ValueError(f"unknown mask schedule {schedule!r}; expected one of {SCHEDULES}")
