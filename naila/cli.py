"""``naila <subcommand>``: dispatch to the deployable's own ``main``.

Each deployable is imported only when chosen, so a Pi with only the ``device``
extra never imports the hub's or AI server's dependencies.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence

# subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "hub": ("hub.app", "run the hub: WebRTC termination, VAD, gRPC to the AI server, /health"),
    "ai-server": ("ai_server.app", "run the AI server: STT -> LLM -> TTS over gRPC"),
    "device": ("device_agent.app", "run the device agent: mic/speaker, WebRTC to the hub, MQTT"),
    "demo": ("naila.demo", "run an end-to-end demo on embedded defaults and exit"),
    "config": ("naila.config_cmd", "print the configuration table, or check the environment"),
    "init": ("naila.provision", "provision a household: CA, certificates, tokens, broker users, env files"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="naila",
        description="NAILA: local-first voice and vision assistant for the home.",
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ... (default INFO)")
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)
    for name, (_module, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    ns, rest = _parser().parse_known_args(args)
    configure_logging(ns.log_level)
    module_name, _ = SUBCOMMANDS[ns.command]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = {"hub": "hub", "ai-server": "ai", "device": "device"}.get(ns.command, "dev")
        print(
            f"naila {ns.command}: cannot import {module_name} ({exc}); "
            f"install it with: pip install 'naila[{extra}]'",
            file=sys.stderr,
        )
        return 2
    entry: Callable[[list[str]], int] = module.main
    return entry(rest)


if __name__ == "__main__":
    sys.exit(main())
