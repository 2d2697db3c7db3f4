"""The import graph of our five packages, read from the source with ``ast`` (issue 23).

Every import counts wherever it is written: at module level, inside a function (an import moved into a
function to dodge a cycle is still a dependency) and under ``if TYPE_CHECKING:`` (a type the module
needs is a dependency too). Imports of the standard library and third-party packages are ignored.

Three rules:

* the AI server's layers import downwards only: engines -> store -> domain -> adapters -> app (a
  module may import its own layer and the ones before it). :data:`AI_SERVER_LAYERS` maps every
  module, first matching prefix wins; a module it does not map fails the test, so a new module
  gets a layer when it is written;
* no import cycle inside ``ai_server``, ``hub`` or ``device_agent``;
* the deployables (device_agent, hub, ai_server) import only ``shared`` among our packages,
  ``shared`` imports none of the others, and ``naila`` (the CLI and demo) may import anything.

The checking functions take a graph, so the last tests run them on a made-up bad one.
"""

from __future__ import annotations

import ast
import graphlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("shared", "ai_server", "hub", "device_agent", "naila")
DEPLOYABLES = ("ai_server", "hub", "device_agent")

Layer = Literal["engines", "store", "domain", "adapters", "app"]
LAYERS: tuple[Layer, ...] = ("engines", "store", "domain", "adapters", "app")

#: The AI server's modules by layer. First matching prefix wins (a prefix matches the module of that
#: name and every module below it), so the exceptions inside a package come before the package.
AI_SERVER_LAYERS: tuple[tuple[str, Layer], ...] = (
    # app: the composition root and the process entry point, the only ones that know every part
    ("ai_server.assembly", "app"),
    ("ai_server.app", "app"),
    # adapters: the wire protocols (gRPC servicer, the hub's gRPC client for tests and benches, the
    # MQTT plane and its gate)
    ("ai_server.service", "adapters"),
    ("ai_server.client", "adapters"),
    ("ai_server.household", "adapters"),  # the dashboard's gRPC servicer (issue 24)
    ("ai_server.control.plane", "adapters"),
    ("ai_server.control.inbound", "adapters"),
    # engines inside domain packages: model clients that know nothing of the assistant
    ("ai_server.media.describe", "engines"),
    ("ai_server.media.ocr", "engines"),
    ("ai_server.vision.detector", "engines"),
    # domain: what the assistant does with the engines and the store
    ("ai_server.control", "domain"),
    ("ai_server.assist", "domain"),
    ("ai_server.media", "domain"),
    ("ai_server.vision", "domain"),
    ("ai_server.pipeline", "domain"),
    ("ai_server.session", "domain"),
    ("ai_server.stream_input", "domain"),
    ("ai_server.utterance", "domain"),
    ("ai_server.conversation", "domain"),
    ("ai_server.clauses", "domain"),
    ("ai_server.routing", "domain"),
    ("ai_server.places", "domain"),
    # store: the media/event/transcript store and its retention
    ("ai_server.store", "store"),
    # engines: STT, TTS, LLM, their errors and helpers, the scripted fakes
    ("ai_server.stt", "engines"),
    ("ai_server.tts", "engines"),
    ("ai_server.llm", "engines"),
    ("ai_server.errors", "engines"),
    ("ai_server.metrics", "engines"),
    ("ai_server.fakes", "engines"),
)
#: Modules mapped by their exact name only (a package's own ``__init__``, which a prefix cannot name
#: without also naming everything below it).
AI_SERVER_EXACT: Mapping[str, Layer] = {"ai_server": "engines"}  # empty: anything may import it

Graph = dict[str, set[str]]


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sources(root: Path, packages: Iterable[str]) -> dict[str, tuple[str, bool]]:
    """Module name -> (source text, is a package ``__init__``) for every .py file of ``packages``."""
    found: dict[str, tuple[str, bool]] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            found[module_name(path, root)] = (path.read_text(encoding="utf-8"), path.name == "__init__.py")
    return found


def _known(name: str, known: Mapping[str, object]) -> str | None:
    """The longest prefix of ``name`` that is one of our modules, or None (stdlib, third party)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str, source: str, is_package: bool, known: Mapping[str, object]) -> set[str]:
    """Our modules that ``module`` imports anywhere in its source (every ``import`` node of the tree)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source, filename=module)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the package (a module's parent, or the __init__'s own package)
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            # ``from pkg import sub`` runs pkg/__init__ and imports pkg.sub: both are edges.
            names = [target, *(f"{target}.{alias.name}" for alias in node.names)]
        for name in names:
            hit = _known(name, known)
            if hit is not None and hit != module:
                found.add(hit)
    return found


def import_graph(modules: Mapping[str, tuple[str, bool]]) -> Graph:
    return {name: imports_of(name, text, is_pkg, modules) for name, (text, is_pkg) in modules.items()}


def package_of(module: str) -> str:
    return module.partition(".")[0]


def layer_of(
    module: str, table: tuple[tuple[str, Layer], ...] = AI_SERVER_LAYERS, exact: Mapping[str, Layer] = AI_SERVER_EXACT
) -> Layer | None:
    if module in exact:
        return exact[module]
    return next((layer for prefix, layer in table if module == prefix or module.startswith(prefix + ".")), None)


def unmapped(
    graph: Graph, table: tuple[tuple[str, Layer], ...] = AI_SERVER_LAYERS, exact: Mapping[str, Layer] = AI_SERVER_EXACT
) -> list[str]:
    return sorted(m for m in graph if package_of(m) == "ai_server" and layer_of(m, table, exact) is None)


def layer_violations(
    graph: Graph, table: tuple[tuple[str, Layer], ...] = AI_SERVER_LAYERS, exact: Mapping[str, Layer] = AI_SERVER_EXACT
) -> list[str]:
    """``importer (layer) -> imported (higher layer)`` for every upward import inside ai_server."""
    out: list[str] = []
    for module, targets in sorted(graph.items()):
        mine = layer_of(module, table, exact)
        if package_of(module) != "ai_server" or mine is None:
            continue
        for target in sorted(targets):
            theirs = layer_of(target, table, exact)
            if theirs is not None and LAYERS.index(theirs) > LAYERS.index(mine):
                out.append(f"{module} ({mine}) -> {target} ({theirs})")
    return out


def cycle_in(graph: Graph, package: str) -> list[str] | None:
    """One import cycle among ``package``'s modules (first module repeated at the end), or None."""
    inside = {m: {t for t in targets if package_of(t) == package}
              for m, targets in graph.items() if package_of(m) == package}
    try:
        graphlib.TopologicalSorter(inside).prepare()
    except graphlib.CycleError as exc:
        cycle: list[str] = exc.args[1]
        return cycle
    return None


def package_violations(graph: Graph) -> list[str]:
    """Imports across packages that break the rule: deployables import only shared, shared imports
    none of ours, naila may import anything."""
    out: list[str] = []
    for module, targets in sorted(graph.items()):
        home = package_of(module)
        if home == "naila":
            continue
        allowed = {home} if home == "shared" else {home, "shared"}
        out.extend(f"{module} -> {t}" for t in sorted(targets) if package_of(t) not in allowed)
    return out


@pytest.fixture(scope="module")
def graph() -> Graph:
    return import_graph(sources(ROOT, PACKAGES))


def test_every_ai_server_module_has_a_layer(graph: Graph) -> None:
    assert any(package_of(m) == "ai_server" for m in graph)
    assert unmapped(graph) == [], "give these modules a layer in AI_SERVER_LAYERS"


def test_ai_server_layers_import_only_downwards(graph: Graph) -> None:
    assert layer_violations(graph) == [], f"layers, lowest first: {' -> '.join(LAYERS)}"


@pytest.mark.parametrize("package", DEPLOYABLES)
def test_no_import_cycle_inside_a_deployable(graph: Graph, package: str) -> None:
    assert cycle_in(graph, package) is None


def test_deployables_import_only_shared_and_shared_imports_none_of_them(graph: Graph) -> None:
    assert {package_of(m) for m in graph} == set(PACKAGES)
    assert package_violations(graph) == []


# -- the checker itself, on a made-up graph -------------------------------------------------------------

BAD = {
    # engine -> domain, hidden inside a function
    "ai_server.stt": ("def transcribe():\n    from ai_server.pipeline import Turn\n", False),
    # domain -> engine (allowed), and back to stt under TYPE_CHECKING: a cycle with the line above
    "ai_server.pipeline": (
        "from typing import TYPE_CHECKING\nimport numpy\nif TYPE_CHECKING:\n    from ai_server.stt import STT\n",
        False,
    ),
    "ai_server.control": ("", True),
    # a relative import from a package's __init__: ai_server.control.plane (adapters), from domain
    "ai_server.control.registry": ("from . import plane\n", False),
    "ai_server.control.plane": ("from ai_server.control.registry import DeviceRegistry\n", False),
    "ai_server.brand_new": ("import os\n", False),  # no layer given
    "hub.app": ("import ai_server.stt\nfrom shared import audio\n", False),  # a deployable importing another
    "shared.audio": ("def f():\n    import hub.app\n", False),  # shared importing a deployable
    "naila.cli": ("import hub.app\nimport ai_server.stt\n", False),  # allowed
}


def test_the_checker_reads_every_kind_of_import() -> None:
    g = import_graph(BAD)
    assert g["ai_server.stt"] == {"ai_server.pipeline"}  # inside a function
    assert g["ai_server.pipeline"] == {"ai_server.stt"}  # under TYPE_CHECKING; numpy ignored
    assert g["ai_server.control.registry"] == {"ai_server.control", "ai_server.control.plane"}  # relative
    assert g["shared.audio"] == {"hub.app"}


def test_the_checker_fails_a_bad_graph() -> None:
    g = import_graph(BAD)
    assert unmapped(g) == ["ai_server.brand_new"]
    assert layer_violations(g) == [
        "ai_server.control.registry (domain) -> ai_server.control.plane (adapters)",
        "ai_server.stt (engines) -> ai_server.pipeline (domain)",
    ]
    cycle = cycle_in(g, "ai_server")
    assert cycle is not None and set(cycle) in ({"ai_server.stt", "ai_server.pipeline"},
                                                 {"ai_server.control.registry", "ai_server.control.plane"})
    assert cycle_in(g, "hub") is None
    assert package_violations(g) == ["hub.app -> ai_server.stt", "shared.audio -> hub.app"]
