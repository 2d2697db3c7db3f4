"""The installed NAILA version: what a device's status, the AI server's presence and GetStatus report."""

from __future__ import annotations

from importlib import metadata
from typing import Final

#: Reported when the code runs from a source tree that was never installed (no package metadata):
#: a PEP 440 version, so it still sorts and validates, whose local part says it is not a release.
UNKNOWN: Final = "0.0.0+unknown"


def naila_version() -> str:
    """The version of the installed ``naila`` distribution, or :data:`UNKNOWN`."""
    try:
        return metadata.version("naila")
    except metadata.PackageNotFoundError:
        return UNKNOWN
