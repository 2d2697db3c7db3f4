"""``naila config``: print the configuration table, or validate the current environment."""

from __future__ import annotations

import argparse
import sys

from shared.config import ALL_GROUPS, ConfigError, load
from shared.config.doc import render


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="naila config", description=__doc__)
    parser.add_argument("--check", action="store_true", help="validate every variable in the environment")
    ns = parser.parse_args(argv)
    if not ns.check:
        print(render())
        return 0
    try:
        for group in ALL_GROUPS:
            load(group)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    print("configuration ok")
    return 0
