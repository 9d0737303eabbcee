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
from typing import Any, NamedTuple

from owsbench.errors import BadInput


@dataclass(frozen=True)
class Range:
    """Bounds of a numeric field (any of ``ge`` >=, ``gt`` >, ``le`` <=, ``lt`` <), optionally
    ``odd`` (kernel sizes)."""

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
        noun = "odd integer" if self.odd else "integer" if integer else "number"
        low = (f"[{self.ge:g}" if self.ge is not None else
               f"({self.gt:g}" if self.gt is not None else None)  # fmt: skip
        high = (f"{self.le:g}]" if self.le is not None else
                f"{self.lt:g})" if self.lt is not None else None)  # fmt: skip
        if integer and not self.odd and self.ge == 1 and high is None:
            noun, bounds = f"positive {noun}", ""
        elif low and high:
            bounds = f" in {low}, {high}"
        elif low:
            bounds = f" {'>=' if self.ge is not None else '>'} {low[1:]}"
        elif high:
            bounds = f" {'<=' if self.le is not None else '<'} {high[:-1]}"
        else:
            bounds = ""
        if sequence:
            return f"a list of {noun}s{bounds}"
        return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}{bounds}"


class Declared(NamedTuple):
    """A field's declared range and what its annotation says about the message's wording."""

    bounds: Range
    integer: bool  # int, int | None or a tuple of ints
    sequence: bool  # a tuple (possibly | None)
    nullable: bool  # None allowed


def _is_integer(hint: Any) -> bool:
    args = typing.get_args(hint)
    if hint is int:
        return True
    return bool(args) and all(_is_integer(a) or a in (type(None), Ellipsis) for a in args)


def _is_sequence(hint: Any) -> bool:
    if typing.get_origin(hint) is tuple:
        return True
    return any(typing.get_origin(a) is tuple for a in typing.get_args(hint))


def declared_ranges(cls: type) -> dict[str, Declared]:
    """The declared range of every field of dataclass ``cls`` that declares one."""
    hints = typing.get_type_hints(cls, include_extras=True)
    ranges = {}
    for f in dataclasses.fields(cls):
        hint = hints.get(f.name)
        if typing.get_origin(hint) is typing.Annotated:
            base, *extras = typing.get_args(hint)
            nullable = type(None) in typing.get_args(base)
            for extra in extras:
                if isinstance(extra, Range):
                    ranges[f.name] = Declared(
                        extra, _is_integer(base), _is_sequence(base), nullable
                    )
    return ranges


def check_ranges(config: Any, what: str) -> None:
    """``BadInput`` (one line) for the first field of ``config`` outside its declared range."""
    for name, declared in declared_ranges(type(config)).items():
        value = getattr(config, name)
        if not declared.bounds.ok(value):
            text = declared.bounds.text(declared.integer, declared.sequence)
            none = " or null" if declared.nullable else ""
            raise BadInput(f"{what}.{name} must be {text}{none} (got {value!r})")
