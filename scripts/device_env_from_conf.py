#!/usr/bin/env python3
"""Turn a device's naila.conf (from `naila init`'s devices/<id>/ folder, or written by hand) into
the agent's environment file, with the SD image's own checks and translation
(image/rootfs/usr/local/lib/naila/bootconfig.py), for a device on Raspberry Pi OS
(scripts/install-pi-os.sh).

Usage: device_env_from_conf.py NAILA_CONF OUT_ENV [--cli /opt/naila/venv/bin/naila]

naila-ca.crt beside NAILA_CONF is the household CA: the env file then names /etc/naila/ca.crt
(DEVICE_HUB_CA, MQTT_CA_FILE), where the install script puts it. With --cli the agent's settings
table catches misspelt settings and `naila config --check` judges the values.
Exit 0: OUT_ENV written (0600); 1: the problems on stderr, one per line, nothing written.
Unlike on the image, naila.conf is left as it is (it is the household folder's copy, not a card).
Standard library only: it runs with the system python3, before and without the agent's venv.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "image/rootfs/usr/local/lib/naila"))

import bootconfig  # the image's validator, found through the path above

# What the image applies to the system itself; Raspberry Pi OS has its own tools for these.
SYSTEM_KEYS = ("WIFI_SSID", "WIFI_PASSPHRASE", "WIFI_COUNTRY", "HOSTNAME", "UNATTENDED_UPGRADES")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("conf", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--cli", type=Path, help="the agent's naila command, to check the settings")
    ns = parser.parse_args(argv)
    where = str(ns.conf)
    try:
        text = ns.conf.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"{where}: cannot read it: {exc}", file=sys.stderr)
        return 1
    entries, parse_problems = bootconfig.parse_conf(text)
    ca = ns.conf.parent / "naila-ca.crt"
    ca_msg = bootconfig.check_ca(ca.read_bytes()) if ca.exists() else None
    cli = ns.cli if ns.cli is not None and ns.cli.exists() else None
    known = bootconfig.agent_known_vars(cli) if cli is not None else None
    ca_file = bootconfig.CA_PATH if ca.exists() and ca_msg is None else None
    result = bootconfig.validate(entries, {}, known, parse_problems, ca_file)
    if ca_msg:
        result.problems.append(bootconfig.Problem("", f"{ca.name} {ca_msg}", 0, "agent"))
    # Problems with the Wi-Fi, SSH, host name or update keys do not matter here: they are ignored.
    problems = [p for p in result.problems if p.section in ("agent", "file")]
    if not problems and cli is not None:
        verdict = bootconfig.agent_check(cli, result.env)
        if verdict:
            problems.append(bootconfig.Problem("", f"the device agent rejects it: {verdict}", 0, "agent"))
    ignored = sorted(
        k for k, e in entries.items() if e.value and (k in SYSTEM_KEYS or k.startswith("SSH_AUTHORIZED_KEY"))
    )
    if ignored:
        print(
            f"{where}: note: {', '.join(ignored)} ignored on Raspberry Pi OS "
            "(set Wi-Fi, SSH and the host name with Raspberry Pi Imager or raspi-config)",
            file=sys.stderr,
        )
    for w in result.warnings:
        if not w.startswith("WIFI_"):
            print(f"{where}: note: {w}", file=sys.stderr)
    if problems:
        for p in problems:
            print(f"{where}: {p}", file=sys.stderr)
        return 1
    header = f"Written by scripts/install-pi-os.sh from {ns.conf.resolve()}: edit that file and run it again."
    fd = os.open(ns.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(bootconfig.render_env(result.env, header))
    return 0


if __name__ == "__main__":
    sys.exit(main())
