"""Render the configuration table of docs/configuration.md from the settings models.

``python -m shared.config.doc`` prints it (as ``naila config`` does), ``--update [PATH]`` writes it
between the markers of docs/configuration.md (or PATH), ``--check [PATH]`` exits 1 when that copy
is stale. A test checks the page holds exactly this, so a new setting shows up there once its
pydantic field has a description.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo

from shared.config import ALL_GROUPS

#: The page that holds the table, in a source checkout (an installed wheel has no docs/).
DOC_PAGE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
BEGIN = "<!-- config-table:begin -->"
END = "<!-- config-table:end -->"


def _default(info: FieldInfo) -> str:
    if info.default_factory is not None:
        value: Any = info.default_factory()  # type: ignore[call-arg]
    else:
        value = info.default
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return (
            json.dumps(value)
            if not all(isinstance(v, str) for v in value) or isinstance(value, dict)
            else ",".join(value) or "[]"
        )
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def render() -> str:
    lines = [BEGIN, "| variable | default | meaning |", "|---|---|---|"]
    for group in ALL_GROUPS:
        for name, info in group.model_fields.items():
            desc = (info.description or "").replace("|", "\\|")
            default = _default(info).replace("|", "\\|")
            lines.append(f"| `{name.upper()}` | `{default}` | {desc} |")
    lines.append(END)
    return "\n".join(lines)


def _with_table(text: str, path: Path) -> str:
    if BEGIN not in text or END not in text:
        raise ValueError(f"{path}: no {BEGIN} ... {END} markers to put the table between")
    start, end = text.index(BEGIN), text.index(END) + len(END)
    return text[:start] + render() + text[end:]


def is_current(path: Path = DOC_PAGE) -> bool:
    """True if ``path`` holds exactly the table the settings models render now."""
    text = path.read_text()
    return _with_table(text, path) == text


def update(path: Path = DOC_PAGE) -> bool:
    """Replace the table between the markers in ``path``; True if the file changed."""
    text = path.read_text()
    new = _with_table(text, path)
    if new != text:
        path.write_text(new)
    return new != text


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.config.doc", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--update", action="store_true", help="write the table into the page")
    mode.add_argument("--check", action="store_true", help="exit 1 if the page's table is stale")
    parser.add_argument("path", nargs="?", type=Path, default=DOC_PAGE, help="the page (docs/configuration.md)")
    ns = parser.parse_args(argv)
    try:
        if ns.update:
            print("updated" if update(ns.path) else "unchanged")
        elif ns.check:
            if not is_current(ns.path):
                print(f"{ns.path}: configuration table is stale: run python -m shared.config.doc --update")
                return 1
            print(f"{ns.path}: configuration table is current")
        else:
            print(render())
    except (OSError, ValueError) as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
