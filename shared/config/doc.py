"""Render the configuration table for the README from the settings models.

``python -m shared.config.doc`` prints it; a test checks the README holds exactly this.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo

from shared.config import ALL_GROUPS

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
        return json.dumps(value) if not all(isinstance(v, str) for v in value) or isinstance(value, dict) \
            else ",".join(value) or "[]"
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


def update(path: Path) -> bool:
    """Replace the table between the markers in ``path``; True if the file changed."""
    text = path.read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    new = text[:start] + render() + text[end:]
    if new != text:
        path.write_text(new)
    return new != text


if __name__ == "__main__":
    import sys

    if len(sys.argv) > 2 and sys.argv[1] == "--update":
        print("updated" if update(Path(sys.argv[2])) else "unchanged")
    else:
        print(render())
