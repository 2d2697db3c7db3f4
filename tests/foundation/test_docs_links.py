"""Every relative link in README.md and docs/ resolves: the file exists, and a ``#anchor`` names a heading.

The README is a map into docs/; a page renamed or a heading reworded would otherwise leave
newcomers at a 404 or at the top of a long page. Anchors follow GitHub's rule (lower case,
punctuation dropped, spaces to hyphens, ``-1``, ``-2`` for repeats), since that is where the
pages are read.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

_FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"(`+)(?!`).+?(?<!`)\1(?!`)", re.DOTALL)
_LINK = re.compile(r"!?\[(?P<text>[^\]]*)\]\((?P<target><[^>]*>|[^)\s]+)(?:\s+\"[^\"]*\")?\)")
_HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(?P<text>.+?)[ \t#]*$", re.MULTILINE)
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def _without_code(markdown: str) -> str:
    return _CODE_SPAN.sub("", _FENCE.sub("", markdown))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text."""
    text = _LINK.sub(lambda m: m.group("text"), heading)
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    seen: dict[str, int] = {}
    out: set[str] = set()
    for match in _HEADING.finditer(_FENCE.sub("", markdown)):
        base = slug(match.group("text"))
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    problems = []
    for match in _LINK.finditer(_without_code(page.read_text())):
        target = match.group("target").strip("<>")
        if _SCHEME.match(target):
            continue  # http(s), mailto: not checked here (no network in unit tests)
        path_part, _, anchor = target.partition("#")
        dest = (page.parent / unquote(path_part)).resolve() if path_part else page
        where = f"{page.relative_to(root)}: ({target})"
        if not dest.is_relative_to(root):
            problems.append(f"{where} leaves the repository")
        elif not dest.exists():
            problems.append(f"{where} names a missing file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text()):
            problems.append(f"{where} names no heading of {dest.relative_to(root)}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    assert broken_links(page) == []


def test_the_checker_finds_a_broken_file_and_a_broken_anchor(tmp_path: Path) -> None:
    root = tmp_path.resolve()
    (root / "docs").mkdir()
    (root / "docs" / "other.md").write_text("# Only (`this`) heading\n## Again\n## Again\n")
    page = root / "docs" / "probe.md"
    page.write_text(
        "# Probe\n[ok](#probe) [gone](missing.md) [bad](#nowhere) `[code](skipped.md)`\n"
        "```\n[fenced](skipped.md)\n```\n[web](https://example.org/x) [out](../../x.md)\n"
        "[there](other.md#only-this-heading) [repeat](other.md#again-1) [not](other.md#again-2)\n"
    )
    assert broken_links(page, root) == [
        "docs/probe.md: (missing.md) names a missing file",
        "docs/probe.md: (#nowhere) names no heading of docs/probe.md",
        "docs/probe.md: (../../x.md) leaves the repository",
        "docs/probe.md: (other.md#again-2) names no heading of docs/other.md",
    ]


def test_the_readme_keeps_the_two_commands() -> None:
    """CI (.ci/run) and scripts/test.sh point at "the README's test command"; newcomers copy both."""
    readme = (ROOT / "README.md").read_text()
    assert "bash scripts/setup.sh && .venv/bin/naila demo" in readme
    assert "bash scripts/setup.sh && bash scripts/test.sh" in readme
