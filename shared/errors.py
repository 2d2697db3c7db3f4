"""Errors as one line of text: what a log line, a metric's detail or an answer on the wire carries.

An exception's message may span lines (a parser's excerpt, a traceback pasted into a message): kept
as is it splits one log record into several and breaks line-based protocols and log readers.
"""

from __future__ import annotations

from typing import Final

#: Longest text kept: a whole parser dump or a multi-kilobyte payload quoted in a message is cut.
MAX_CHARS: Final = 300


def one_line(exc: BaseException) -> str:
    """``"TypeName: message"`` with newlines turned into spaces, at most :data:`MAX_CHARS` characters."""
    return f"{type(exc).__name__}: {exc}".replace("\n", " ")[:MAX_CHARS]
