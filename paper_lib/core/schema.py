"""The configuration's building blocks: the number types, the base of every section, and the error messages.

Every section (``config``) derives from ``Section``: strict types, no unknown keys, re-checked on assignment. A
pydantic error is rephrased here into one line naming the dotted key (``message``).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

Positive = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegative = Annotated[int, Field(ge=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]
Beta = Annotated[float, Field(ge=0, lt=1)]  # Adam diverges at beta = 1
Mode = Literal["token", "position"]


class ConfigError(ValueError):
    """A profile or override that does not fit the configuration schema."""


def invalid(message: str) -> PydanticCustomError:
    # describe() puts the key in front; cross-field checks raise ValueError and name their keys themselves.
    return PydanticCustomError("config_value", message)


def model_pairs(pairs: list[list[str]] | None) -> list[list[str]] | None:
    """A validator's check of a list of [parent, child] pairs: two different registry models each."""
    from .registry import REGISTRY

    for i, pair in enumerate(pairs or []):
        if len(pair) != 2 or pair[0] == pair[1] or any(m not in REGISTRY for m in pair):
            raise invalid(f"entry {i} {pair!r} must be [parent, child]: two different models of {', '.join(REGISTRY.names)}")
    return pairs


class Section(BaseModel):
    """Base of every section: strict types, no unknown keys, re-checked on assignment; defaults are the paper's."""

    # strict: "yes" is no bool, "3" and 1.5 are no int, True is no number; an int is still accepted for a float
    # (and stored as a float, so cache keys built from model_dump() do not depend on how a number was written).
    model_config = ConfigDict(strict=True, extra="forbid", validate_assignment=True, allow_inf_nan=False)

    def __setattr__(self, name: str, value: Any) -> None:
        # Callers catch ConfigError, not ValidationError. A cross-field check fails after pydantic has stored the
        # value, so the old one is put back: a rejected assignment leaves the section as it was.
        old = self.__dict__.get(name)
        try:
            super().__setattr__(name, value)
        except ValidationError as err:
            self.__dict__[name] = old
            raise ConfigError(message(err, f"assignment to {type(self).__name__}", type(self))) from err


_TYPE_PHRASES = {
    "int_type": "must be an integer", "int_parsing": "must be an integer", "int_from_float": "must be an integer",
    "float_type": "must be a number", "float_parsing": "must be a number", "finite_number": "must be a finite number",
    "bool_type": "must be true or false", "bool_parsing": "must be true or false", "string_type": "must be a string",
    "dict_type": "must be a mapping", "model_type": "must be a mapping of its keys", "list_type": "must be a list",
}
_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}


def describe(error: dict, root: type[BaseModel]) -> str:
    """One pydantic error in the loader's own phrasing, naming the dotted key (``root``: the validated model)."""
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    loc = tuple(p for p in error["loc"] if p != "[key]")
    # List positions go after the quoted key; an unknown key sits in a section, where an int (YAML) is a key too.
    kind = "extra_forbidden" if kind == "invalid_key" else kind
    key = ".".join(str(p) for p in loc if kind == "extra_forbidden" or not isinstance(p, int))
    indices = "".join(f"[{p}]" for p in loc if isinstance(p, int))
    where = f"'{key}'" + (f" entry {indices}" if indices else "")
    if kind == "extra_forbidden":
        section: type[BaseModel] = root  # only sections forbid extra keys, so every step of loc is a section
        for part in loc[:-1]:
            section = section.model_fields[part].annotation
        return f"unknown config key '{key}'. Known keys here: {', '.join(sorted(section.model_fields))}"
    if kind in _TYPE_PHRASES:
        return f"{where} {_TYPE_PHRASES[kind]}, got {type(value).__name__} ({value!r})"
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", ctx["expected"])  # pydantic's "'a', 'b' or 'c'"
        return f"{where} is {value!r}; choose one of {', '.join(choices)}"
    if kind in _BOUNDS:
        (bound,) = ctx.values()  # the one of gt, ge, lt, le that failed
        return f"{where} must be {_BOUNDS[kind]} {bound} (got {value!r})"
    if kind == "config_value":
        return f"{where} {error['msg']}"
    if kind == "value_error":
        return str(ctx["error"])
    return f"{where} is invalid: {error['msg']} (got {value!r})"


def message(err: ValidationError, source: str, root: type[BaseModel]) -> str:
    """Every problem of one validation error, each on its own line, after ``source`` (a file or "overrides")."""
    problems = [describe(e, root) for e in err.errors(include_url=False)]
    if len(problems) == 1:
        return f"{source}: {problems[0]}"
    return f"{source}: {len(problems)} problems:\n  - " + "\n  - ".join(problems)
