"""Settings plumbing: one env-var name per field, one-line errors naming the variable."""

from __future__ import annotations

import re
from typing import Any, Final, TypeVar

from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from shared.errors import one_line


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


# Fields whose value is a credential even when not declared SecretStr (HUB_DEVICE_TOKENS, DEVICE_HUB_TOKEN...).
_SECRET_NAME: Final = re.compile(r"(?:^|_)(?:token|tokens|password|passwd|secret|api_key|key)$")
_REDACTED: Final = "(secret, not shown)"


def is_secret_field(cls: type[BaseSettings] | None, name: str) -> bool:
    """Whether a config error may not show the value of ``name`` (finding L1): a SecretStr, or a
    credential by its name (a number such as LLM_MAX_TOKENS is not)."""
    field = None if cls is None else cls.model_fields.get(name)
    annotation = repr(field.annotation) if field is not None else ""
    if "SecretStr" in annotation:
        return True
    return bool(_SECRET_NAME.search(name)) and not (field is not None and field.annotation in (int, float, bool))


def format_validation_error(err: ValidationError, cls: type[BaseSettings] | None = None) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "?"
        name = loc.split(".")[0]
        value = e.get("input")
        msg = str(e["msg"])
        if is_secret_field(cls, name):
            shown = _REDACTED
            for secret in _strings(value):  # a validator may quote what it refused
                msg = msg.replace(secret, "***")
        else:
            shown = repr(value) if not isinstance(value, dict) else "(missing)"
        parts.append(f"{env_name(name)}={shown}: {msg}")
    return "invalid configuration: " + "; ".join(parts)


def _strings(value: object) -> list[str]:
    """The text in a refused value (a string, a SecretStr, a dict of tokens...), longest first."""
    found: list[str] = []
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, str):
        found.append(value)
    elif isinstance(value, dict):
        for v in value.values():  # the keys (device ids) are not secret
            found += _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            found += _strings(v)
    return sorted((s for s in found if len(s) >= 4), key=len, reverse=True)


def load(cls: type[S], **overrides: Any) -> S:
    """Build settings from the environment (and overrides), raising ConfigError on a bad value."""
    try:
        return cls(**overrides)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, cls)) from None
    except SettingsError as err:  # a value pydantic-settings could not even parse (e.g. bad JSON)
        raise ConfigError(f"invalid configuration: {one_line(err, with_type=False)}") from None
