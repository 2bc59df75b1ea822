"""The typed parameters of the noise-level strategies (`diffusion.strategy.params`), checked before anything is
built: each key must be one of the strategy's constructor arguments, of its annotated type (float, int, bool,
str, or None where the annotation allows it), finite, and inside the range the strategy class declares in
`PARAM_RANGES`. The first problem is one line naming the key, the value and what is allowed.

Why ranges matter: a negative Min-SNR γ, an SpeeD λ above 1 or an adaptive floor of 0 still train, on a negative
loss weight or an unbounded p/q ratio, and exit 0.
"""

import inspect
import math
import types
from dataclasses import dataclass

# set by the suite from model.sigma_data, never by the user
INTERNAL = ("sigma_data",)


@dataclass(frozen=True)
class Range:
    """Valid values of one parameter: bounds (open or closed) or a set of choices."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple = ()

    def contains(self, value) -> bool:
        if self.choices:
            return value in self.choices
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def describe(self) -> str:
        if self.choices:
            return "one of " + " | ".join(map(str, self.choices))
        if self.high is None:
            return f"{'>' if self.low_open else '≥'} {self.low:g}"
        if self.low is None:
            return f"{'<' if self.high_open else '≤'} {self.high:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


POSITIVE = Range(0, None, low_open=True)
NON_NEGATIVE = Range(0, None)
UNIT = Range(0, 1)  # [0, 1]
DECAY = Range(0, 1, high_open=True)  # [0, 1): an EMA decay per update
AT_LEAST_ONE = Range(1, None)
AT_LEAST_TWO = Range(2, None)


TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null"}


def annotated_types(annotation) -> tuple[type, ...]:
    """float | None -> (float, NoneType); float -> (float,)."""
    if isinstance(annotation, types.UnionType):
        return annotation.__args__
    return (annotation,)


def type_problem(value, allowed: tuple[type, ...]) -> str | None:
    """What is wrong with `value`'s type (YAML gives int, float, bool, str, list, dict, None), or None."""
    expected = "must be " + " or ".join(TYPE_NAMES[t] for t in allowed)
    if value is None:
        return None if type(None) in allowed else expected
    if bool in allowed:
        return None if isinstance(value, bool) else expected
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return f"{expected}, not a {type(value).__name__}"
    if float in allowed and isinstance(value, (int, float)):
        return None if math.isfinite(value) else "must be finite"
    if int in allowed and isinstance(value, int) or str in allowed and isinstance(value, str):
        return None
    return expected


def params_problem(cls, params: dict) -> str | None:
    """The first problem of `params` for strategy class `cls` as 'key: what is wrong', or None."""
    signature = inspect.signature(cls.__init__).parameters
    accepted = [name for name in signature if name not in ("self", *INTERNAL)]
    ranges = getattr(cls, "PARAM_RANGES", {})
    for key, value in params.items():
        if key in INTERNAL:
            return f"{key}: is set from model.{key}, not here"
        if key not in accepted:
            return f"{key}: not a parameter of {cls.name} (its parameters: {', '.join(accepted) or 'none'})"
        if (problem := type_problem(value, annotated_types(signature[key].annotation))) is not None:
            return f"{key}: {value!r} {problem}"
        if value is not None and key in ranges and not ranges[key].contains(value):
            return f"{key}: {value!r} is not {ranges[key].describe()}"
    return None
