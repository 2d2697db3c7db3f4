"""Settings plumbing: one env-var name per field, one-line errors naming the variable."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError


class ConfigError(ValueError):
    """A configuration value is wrong. The message is one line naming the variable."""


class NailaSettings(BaseSettings):
    """Base for every settings group: env vars (case-insensitive) and an optional .env file.

    Field names are the env var names in lower case (``hub_port`` <- ``HUB_PORT``), so the
    README table and the error messages can name the variable exactly.
    """

    model_config = SettingsConfigDict(
        env_file=None,
        extra="ignore",
        case_sensitive=False,
        validate_default=True,
    )


S = TypeVar("S", bound=NailaSettings)


def env_name(field: str) -> str:
    return field.upper()


def format_validation_error(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "?"
        value = e.get("input")
        shown = repr(value) if not isinstance(value, dict) else "(missing)"
        parts.append(f"{env_name(loc.split('.')[0])}={shown}: {e['msg']}")
    return "invalid configuration: " + "; ".join(parts)


def load(cls: type[S], **overrides: Any) -> S:
    """Build settings from the environment (and overrides), raising ConfigError on a bad value."""
    try:
        return cls(**overrides)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None
    except SettingsError as err:  # a value pydantic-settings could not even parse (e.g. bad JSON)
        raise ConfigError(f"invalid configuration: {err}".replace("\n", " ")) from None
