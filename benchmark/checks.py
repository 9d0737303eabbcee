"""Value ranges declared with a config's fields, and the one validator that checks them.

A field declares its range in its annotation::

    steps: Annotated[int, Range(ge=1)] = 600
    temperature: Annotated[float, Range(gt=0)] = 1.0
    crop: Annotated[tuple[int, int] | None, Range(ge=8)] = None

``check_ranges(config, "segmenter")`` raises ``BadInput`` with one line for the first value out of
its range: ``segmenter.steps must be a positive integer (got -5)``. ``None`` passes (the type
check in ``owsbench.config.apply_overrides`` decides whether ``None`` is allowed); a tuple or list
passes when every element does. Plain ``typing.get_type_hints`` strips ``Annotated``, so the
type check sees the bare types.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Any

from owsbench.errors import BadInput


@dataclass(frozen=True)
class Range:
    """Bounds of a numeric field (any of ``ge`` >=, ``gt`` >, ``le`` <=, ``lt`` <), optionally
    ``odd`` (kernel sizes); ``integer`` words the message for an int field."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    odd: bool = False

    def ok(self, value: Any) -> bool:
        if isinstance(value, (tuple, list)):
            return all(self.ok(v) for v in value)
        if value is None or isinstance(value, (bool, str, dict)):
            return True
        value = float(value)
        return (
            math.isfinite(value)
            and (self.ge is None or value >= self.ge)
            and (self.gt is None or value > self.gt)
            and (self.le is None or value <= self.le)
            and (self.lt is None or value < self.lt)
            and (not self.odd or value % 2 == 1)
        )

    def text(self, integer: bool, sequence: bool = False) -> str:
        """The range as a user reads it: ``a positive integer``, ``a number in [0, 1)``,
        ``a list of integers >= 8`` (``sequence``: a tuple field)."""
        kind = "an odd integer" if self.odd else "an integer" if integer else "a number"
        if sequence:
            return "a list of " + self.text(integer).replace("an ", "", 1).replace(
                "a ", "", 1
            ).replace("integer", "integers").replace("number", "numbers")
        low = (f"[{_num(self.ge)}" if self.ge is not None else
               f"({_num(self.gt)}" if self.gt is not None else None)  # fmt: skip
        high = (f"{_num(self.le)}]" if self.le is not None else
                f"{_num(self.lt)})" if self.lt is not None else None)  # fmt: skip
        if integer and not self.odd and self.ge == 1 and high is None:
            return "a positive integer"
        if low and high:
            return f"{kind} in {low}, {high}"
        if low:
            return f"{kind} {'>=' if self.ge is not None else '>'} {low[1:]}"
        if high:
            return f"{kind} {'<=' if self.le is not None else '<'} {high[:-1]}"
        return kind


def _num(value: float) -> str:
    return f"{value:g}"


def _is_integer(hint: Any) -> bool:
    """Whether an annotation is ``int``, ``int | None`` or a tuple of ints."""
    args = typing.get_args(hint)
    if hint is int:
        return True
    return bool(args) and all(_is_integer(a) or a in (type(None), Ellipsis) for a in args)


def _is_sequence(hint: Any) -> bool:
    """Whether an annotation is a tuple (possibly ``| None``)."""
    if typing.get_origin(hint) is tuple:
        return True
    return any(typing.get_origin(a) is tuple for a in typing.get_args(hint))


def declared_ranges(cls: type) -> dict[str, tuple[Range, bool, bool]]:
    """``{field: (range, is_integer, is_sequence)}`` of the fields of dataclass ``cls`` that
    declare one."""
    hints = typing.get_type_hints(cls, include_extras=True)
    ranges = {}
    for f in dataclasses.fields(cls):
        hint = hints.get(f.name)
        if typing.get_origin(hint) is typing.Annotated:
            base, *extras = typing.get_args(hint)
            for extra in extras:
                if isinstance(extra, Range):
                    ranges[f.name] = (extra, _is_integer(base), _is_sequence(base))
    return ranges


def check_ranges(config: Any, what: str) -> None:
    """``BadInput`` (one line) for the first field of ``config`` outside its declared range."""
    for name, (bounds, integer, sequence) in declared_ranges(type(config)).items():
        value = getattr(config, name)
        if not bounds.ok(value):
            none = " or null" if _allows_none(type(config), name) else ""
            raise BadInput(
                f"{what}.{name} must be {bounds.text(integer, sequence)}{none} (got {value!r})"
            )


def _allows_none(cls: type, name: str) -> bool:
    hint = typing.get_type_hints(cls).get(name)
    return type(None) in typing.get_args(hint)
