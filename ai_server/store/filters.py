"""The one way the store's tables are filtered: a time range plus equality on named columns."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime


def time_query(
    table: str,
    columns: str,
    *,
    since: datetime | None,
    until: datetime | None,
    equal: Mapping[str, object | None],
    prefix: Mapping[str, str | None] | None = None,
    newest_first: bool,
    limit: int,
) -> tuple[str, list[object]]:
    """``SELECT columns FROM table`` with ``since <= time < until``, every non-None ``equal`` filter
    and every non-None ``prefix`` filter (the column starts with it), newest (or oldest) first, ``id``
    breaking ties in recording order.

    Times are compared as ISO-8601 UTC text, as stored: the ``time`` index serves the range.
    ``table`` and the ``equal`` keys are our own column names, never user input.
    """
    where: list[str] = []
    args: list[object] = []
    if since is not None:
        where.append("time >= ?")
        args.append(since.astimezone(UTC).isoformat())
    if until is not None:
        where.append("time < ?")
        args.append(until.astimezone(UTC).isoformat())
    for column, value in equal.items():
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    for column, start in (prefix or {}).items():
        if start is not None:
            # substr, not LIKE: '_' (allowed in ids) is a LIKE wildcard.
            where.append(f"substr({column}, 1, ?) = ?")
            args += [len(start), start]
    sql = f"SELECT {columns} FROM {table}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    order = "DESC" if newest_first else "ASC"
    sql += f" ORDER BY time {order}, id {order} LIMIT ?"
    return sql, [*args, limit]
