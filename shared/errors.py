"""Errors as one line of text: what a log line, a metric's detail or an answer on the wire carries.

An exception's message may span lines (a parser's excerpt, a traceback pasted into a message): kept
as is it splits one log record into several and breaks line-based protocols and log readers.
"""

from __future__ import annotations

from typing import Final

#: Longest text kept: a whole parser dump or a multi-kilobyte payload quoted in a message is cut.
MAX_CHARS: Final = 300


def one_line(exc: BaseException, *, with_type: bool = True, limit: int = MAX_CHARS) -> str:
    """``"TypeName: message"`` on one line (runs of whitespace, newlines included, become one space),
    at most ``limit`` characters.

    ``with_type=False``: the message alone (the type name when it has none), for text after a
    prefix that already says what failed ("offer rejected: ...").
    """
    message = str(exc)
    text = f"{type(exc).__name__}: {message}" if with_type else message or type(exc).__name__
    return " ".join(text.split())[:limit]
