"""Typed backend options: a pydantic model per backend, errors that name the option."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from engine.errors import ConfigError

OptionsT = TypeVar("OptionsT", bound=BaseModel)


class BackendOptions(BaseModel):
    """Base of a backend's options (``[delivery.<backend>]``): unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_options(backend: str, model: type[OptionsT], values: Mapping[str, Any]) -> OptionsT:
    """``values`` validated by ``model``; a bad or unknown option is a ``ConfigError``.

    The message names the option as it is written in the settings, for example
    ``delivery.smtp: unknown option 'hots'`` or ``delivery.smtp.pool_size: Input should be
    greater than or equal to 1``.
    """
    try:
        return model.model_validate(dict(values))
    except ValidationError as exc:
        unknown = sorted(
            str(problem["loc"][0])
            for problem in exc.errors()
            if problem["type"] == "extra_forbidden"
        )
        if unknown:
            names = ", ".join(repr(name) for name in unknown)
            raise ConfigError(f"delivery.{backend}: unknown option {names}") from None
        lines = []
        for problem in exc.errors():
            where = ".".join(str(part) for part in problem["loc"])
            key = f"delivery.{backend}.{where}" if where else f"delivery.{backend}"
            lines.append(f"{key}: {problem['msg']}")
        raise ConfigError("\n".join(lines)) from None
