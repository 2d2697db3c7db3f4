"""The one rule for ids that become MQTT topic levels, file names and URL parts.

Device ids, session ids, zones, alert types, rooms and the hub id all follow it:
1-64 characters of ``[A-Za-z0-9_.-]``, and not ``.`` or ``..`` (an id ends up as a path
component, where those two mean "here" and "up"). Every settings validator, the ``/connect``
check and the MQTT topic builders call :func:`is_safe_id` so they cannot disagree.

The SD image's first-boot check (``image/.../bootconfig.py``) runs before the venv exists and
keeps a standard-library copy; ``tests/unit/test_ids.py`` checks that copy agrees with this one.
"""

from __future__ import annotations

import re
from typing import Final

#: Longest id, characters.
MAX_ID_LEN: Final = 64

#: One character of an id, as a regular expression class (for rules built on top, like browser ids).
ID_CHARS: Final = r"[A-Za-z0-9_.\-]"

#: The rule in words, for error messages.
ID_RULE: Final = f"1-{MAX_ID_LEN} characters of [A-Za-z0-9_.-], not '.' or '..'"

_ID = re.compile(rf"{ID_CHARS}{{1,{MAX_ID_LEN}}}")


def is_safe_id(value: object) -> bool:
    """True when ``value`` is a string that follows the id rule."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None and value not in (".", "..")


def check_id(value: str, what: str = "id") -> str:
    """Return ``value`` if it follows the id rule, else raise :class:`ValueError` naming ``what``.

    Pydantic validators can return it directly: a ``ValueError`` becomes a field error.
    """
    if not is_safe_id(value):
        shown = value if len(value) <= 80 else value[:80] + "..."
        raise ValueError(f"{what} must be {ID_RULE}, got {shown!r}")
    return value
