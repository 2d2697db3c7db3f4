"""``naila init``: provision a household in one command (issue 18).

Writes, into one output folder (mode 0700):

* ``ca/``: the household's private CA (keep ``ca.key`` off the three machines);
* ``hub/``: ``hub.env``, the hub's HTTPS certificate and its gRPC client certificate (mutual TLS);
* ``ai-server/``: ``ai-server.env`` and the gRPC server certificate;
* ``broker/``: ``mosquitto.conf``, ``acl``, ``passwd`` and ``certs/`` (TLS on 8883);
* ``app/app.env``: MQTT credentials of the app bridge user (only if you run one);
* ``devices/<id>/``: ``naila.conf`` and ``naila-ca.crt`` for the SD card's boot partition.

``household.json`` keeps the tokens and passwords, so a re-run keeps the CA, certificates, tokens
and passwords and adds only what is new; ``--revoke-device`` takes a device's token and broker
user away. Secrets are 0600. ``scripts/install-service.sh`` copies a machine's folder into place.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import json
import os
import re
import secrets
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from naila import broker, pki
from shared.ids import ID_RULE, is_safe_id

STATE_FILE = "household.json"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*$")
_ROOM = re.compile(r"^[^\x00-\x1f\x7f'\"\\]{0,64}$")
RENEW_BEFORE = dt.timedelta(days=30)
ETC = "/etc/naila"
STATE_DIR = "/var/lib/naila"

DEFAULT_PORTS = {"hub": 8443, "ai_server": 50051, "mqtt": broker.MQTT_TLS_PORT, "mqtt_local": broker.MQTT_LOCAL_PORT}


class ProvisionError(ValueError):
    """A bad flag or state; the message is one line."""


def new_token() -> str:
    return secrets.token_urlsafe(32)  # 43 characters, 256 bits


# ---- files ---------------------------------------------------------------------------------------


@dataclass
class Writer:
    """Atomic writes that report what changed (the command says what it wrote)."""

    written: list[Path] = field(default_factory=list)
    unchanged: list[Path] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)

    def write(self, path: Path, data: str | bytes, mode: int) -> bool:
        raw = data.encode() if isinstance(data, str) else data
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            if path.read_bytes() == raw and (path.stat().st_mode & 0o777) == mode:
                self.unchanged.append(path)
                return False
        except FileNotFoundError:
            pass
        tmp = path.with_name(f".{path.name}.tmp")
        # Created with the final mode: a secret is never readable by others, not even briefly.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            os.fchmod(fd, mode)
            os.write(fd, raw)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        self.written.append(path)
        return True

    def remove_tree(self, path: Path) -> None:
        if path.exists():
            shutil.rmtree(path)
            self.removed.append(path)


def env_file(values: dict[str, str], header: str) -> str:
    """KEY=VALUE lines that systemd's EnvironmentFile and a POSIX shell read alike."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    for key, value in values.items():
        if re.fullmatch(r"[A-Za-z0-9_./:@%+,=-]*", value):
            lines.append(f"{key}={value}")
        else:
            if "'" in value or "\n" in value:
                raise ProvisionError(f"{key}: value may not contain a quote or line break")
            lines.append(f"{key}='{value}'")
    return "\n".join(lines) + "\n"


def read_env(text: str) -> dict[str, str]:
    """Read back what :func:`env_file` (or naila.conf) holds: KEY=VALUE, optional single or double quotes."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value
    return out


# ---- the household -------------------------------------------------------------------------------


@dataclass
class Household:
    """What household.json keeps between runs."""

    hub: list[str]
    ai_server: list[str]
    broker: list[str]
    ports: dict[str, int]
    in_place: bool = False
    web_token: str = field(default_factory=new_token)
    metrics_token: str = field(default_factory=new_token)
    mqtt: dict[str, str] = field(default_factory=dict)  # service user -> password
    devices: dict[str, dict[str, str]] = field(default_factory=dict)  # id -> room, token, mqtt_password

    @classmethod
    def load(cls, path: Path) -> Household | None:
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError) as exc:
            raise ProvisionError(f"cannot read {path}: {exc}") from None
        data.pop("version", None)
        try:
            return cls(**data)
        except TypeError as exc:
            raise ProvisionError(f"{path} is not a household file of this version: {exc}") from None

    def dump(self) -> str:
        data = {"version": 1, **self.__dict__}
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    def mqtt_users(self) -> dict[str, str]:
        return {**self.mqtt, **{d: v["mqtt_password"] for d, v in self.devices.items()}}


def split_names(names: Sequence[str]) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) of a host's names."""
    dns, ips = [], []
    for n in names:
        try:
            ips.append(str(ipaddress.ip_address(n)))
        except ValueError:
            dns.append(n)
    return dns, ips


def parse_hosts(value: str, flag: str) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    if not names:
        raise ProvisionError(f"{flag}: give at least one host name or address")
    for n in names:
        try:
            ipaddress.ip_address(n)
        except ValueError:
            if not _DNS.match(n):
                raise ProvisionError(f"{flag}: {n!r} is neither an IP address nor a host name") from None
    return list(dict.fromkeys(names))


def parse_device(value: str) -> tuple[str, str]:
    device_id, _, room = value.partition("=")
    device_id, room = device_id.strip(), room.strip()
    if not is_safe_id(device_id):
        raise ProvisionError(f"device id {device_id!r}: must be {ID_RULE}")
    if device_id in broker.SERVICE_USERS:
        raise ProvisionError(f"device id {device_id!r} is the broker user of a service")
    if device_id.startswith("web-"):
        raise ProvisionError(f"device id {device_id!r}: 'web-' ids are the hub's browser devices")
    if not _ROOM.match(room):
        raise ProvisionError(f"room {room!r} of {device_id}: at most 64 characters, no quotes or control characters")
    return device_id, room


# ---- certificates --------------------------------------------------------------------------------


def _sans(cert: x509.Certificate) -> tuple[set[str], set[str]]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set(), set()
    return set(ext.get_values_for_type(x509.DNSName)), {str(a) for a in ext.get_values_for_type(x509.IPAddress)}


def _reusable(cert_path: Path, key_path: Path, ca: pki.Issued, names: Sequence[str], server: bool) -> bool:
    """The existing certificate is signed by this CA, names what is asked and is far from expiry."""
    try:
        issued = pki.Issued(cert_path.read_bytes(), key_path.read_bytes())
        cert = issued.cert
        cert.verify_directly_issued_by(ca.cert)
        spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        if issued.private_key().public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
            return False
    except (OSError, ValueError, TypeError, InvalidSignature):
        return False
    if cert.not_valid_after_utc - dt.datetime.now(dt.UTC) < RENEW_BEFORE:
        return False
    if not server:
        return True
    dns, ips = split_names(names)
    want_dns, want_ips = _sans(cert)
    return (set(dns) <= want_dns) and want_ips == set(ips) and want_dns - set(dns) <= {cert_cn(cert)}


def cert_cn(cert: x509.Certificate) -> str:
    attrs = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else ""


def ensure_leaf(
    w: Writer, ca: pki.Issued, cert_path: Path, key_path: Path, cn: str, names: Sequence[str], *,
    server: bool = True, client: bool = False,
) -> None:
    if _reusable(cert_path, key_path, ca, names, server):
        w.unchanged += [cert_path, key_path]
        return
    dns, ips = split_names(names)
    issued = pki.issue(ca, cn, dns_names=dns, ip_addresses=ips, server=server, client=client)
    w.write(key_path, issued.key_pem, 0o600)
    w.write(cert_path, issued.cert_pem, 0o644)


def ensure_ca(w: Writer, out: Path) -> pki.Issued:
    cert, key = out / "ca" / "ca.crt", out / "ca" / "ca.key"
    if cert.exists() and key.exists():
        w.unchanged += [cert, key]
        return pki.Issued(cert.read_bytes(), key.read_bytes())
    if cert.exists() or key.exists():
        raise ProvisionError(f"{cert.parent}: ca.crt or ca.key is missing; restore it (a new CA invalidates "
                             "every machine's certificate)")
    ca = pki.new_ca()
    w.write(key, ca.key_pem, 0o600)
    w.write(cert, ca.cert_pem, 0o644)
    return ca


# ---- per machine ---------------------------------------------------------------------------------


def _first(names: Sequence[str]) -> str:
    """The name clients dial: the first DNS name if any (certificates are checked against it)."""
    dns, ips = split_names(names)
    return (dns or ips)[0]


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _mqtt_env(h: Household, user: str, ca_file: str) -> dict[str, str]:
    return {
        "MQTT_HOST": _first(h.broker),
        "MQTT_PORT": str(h.ports["mqtt"]),
        "MQTT_TLS": "true",
        "MQTT_CA_FILE": ca_file,
        "MQTT_USERNAME": user,
        "MQTT_PASSWORD": h.mqtt[user],
    }


HEADER = "Written by naila init ({what}). Install: scripts/install-service.sh {machine} (docs/deployment.md).\n" \
    "Secrets: keep this file mode 0600; re-run naila init instead of editing it."


def hub_env(h: Household, d: str) -> dict[str, str]:
    dns, _ = split_names(h.hub)
    tokens = {dev: v["token"] for dev, v in sorted(h.devices.items())}
    return {
        "HUB_HOST": "0.0.0.0",
        "HUB_PORT": str(h.ports["hub"]),
        "HUB_TLS_CERT": f"{d}/hub.crt",
        "HUB_TLS_KEY": f"{d}/hub.key",
        "HUB_PUBLIC_HOSTS": ",".join(dns),
        "HUB_DEVICE_TOKENS": json.dumps(tokens, separators=(",", ":")),
        "HUB_WEB_TOKEN": h.web_token,
        "HUB_METRICS_TOKEN": h.metrics_token,
        "HUB_AI_SERVER": f"{_url_host(_first(h.ai_server))}:{h.ports['ai_server']}",
        "HUB_AI_TLS_CA": f"{d}/ca.crt",
        "HUB_AI_TLS_CERT": f"{d}/hub-client.crt",
        "HUB_AI_TLS_KEY": f"{d}/hub-client.key",
        **_mqtt_env(h, "naila-hub", f"{d}/ca.crt"),
    }


def ai_env(h: Household, d: str, state_dir: str) -> dict[str, str]:
    return {
        "AI_SERVER_HOST": "0.0.0.0",
        "AI_SERVER_PORT": str(h.ports["ai_server"]),
        "AI_SERVER_TLS_CERT": f"{d}/ai-server.crt",
        "AI_SERVER_TLS_KEY": f"{d}/ai-server.key",
        "AI_SERVER_TLS_CLIENT_CA": f"{d}/ca.crt",
        "AI_MEDIA_DIR": f"{state_dir}/media",
        **_mqtt_env(h, "naila-ai-server", f"{d}/ca.crt"),
    }


def device_conf(h: Household, device_id: str) -> str:
    dev = h.devices[device_id]
    values = {
        "DEVICE_ID": device_id,
        "DEVICE_ROOM": dev["room"],
        "HUB_URL": f"https://{_url_host(_first(h.hub))}:{h.ports['hub']}",
        "HUB_TOKEN": dev["token"],
        "MQTT_URL": f"mqtts://{_url_host(_first(h.broker))}:{h.ports['mqtt']}",
        "MQTT_USERNAME": device_id,
        "MQTT_PASSWORD": dev["mqtt_password"],
    }
    header = (
        f"NAILA device {device_id}: written by naila init. Copy this file and naila-ca.crt (beside it) to the\n"
        "SD card's boot partition. At first boot the passwords are moved off the card and naila-ca.crt\n"
        "is installed as the CA that the hub's HTTPS and the broker's TLS certificates are checked against.\n"
        "Add Wi-Fi and SSH below if needed (image/naila.conf.example lists every setting)."
    )
    extra = "\nWIFI_SSID=\nWIFI_PASSPHRASE=\nWIFI_COUNTRY=\nSSH_AUTHORIZED_KEY=\n"
    return env_file(values, header) + extra


def write_household(w: Writer, out: Path, h: Household) -> None:
    ca = ensure_ca(w, out)
    ca_pem = ca.cert_pem
    hub_dir, ai_dir, broker_dir = out / "hub", out / "ai-server", out / "broker"

    ensure_leaf(w, ca, hub_dir / "hub.crt", hub_dir / "hub.key", "naila-hub", h.hub)
    ensure_leaf(w, ca, hub_dir / "hub-client.crt", hub_dir / "hub-client.key", "naila-hub", (),
                server=False, client=True)
    ensure_leaf(w, ca, ai_dir / "ai-server.crt", ai_dir / "ai-server.key", "naila-ai-server", h.ai_server)
    ensure_leaf(w, ca, broker_dir / "certs" / "server.crt", broker_dir / "certs" / "server.key",
                "naila-broker", h.broker)
    for d in (hub_dir, ai_dir, broker_dir / "certs"):
        w.write(d / "ca.crt", ca_pem, 0o644)

    hub_etc = str(hub_dir.resolve()) if h.in_place else ETC
    ai_etc = str(ai_dir.resolve()) if h.in_place else ETC
    ai_state = str(ai_dir.resolve()) if h.in_place else STATE_DIR
    w.write(hub_dir / "hub.env", env_file(hub_env(h, hub_etc), HEADER.format(what="hub", machine="hub")), 0o600)
    w.write(ai_dir / "ai-server.env",
            env_file(ai_env(h, ai_etc, ai_state), HEADER.format(what="AI server", machine="ai-server")), 0o600)
    w.write(out / "app" / "app.env", env_file(
        _mqtt_env(h, "naila-app", f"{ETC}/ca.crt"),
        "Written by naila init: MQTT credentials of the app bridge (spec 8.7), only if you run one.",
    ), 0o600)
    w.write(out / "app" / "ca.crt", ca_pem, 0o644)

    conf_dir = str(broker_dir.resolve()) if h.in_place else broker.CONF_DIR
    persistence = f"{broker_dir.resolve()}/data/" if h.in_place else broker.PERSISTENCE_DIR
    if h.in_place:
        (broker_dir / "data").mkdir(mode=0o700, exist_ok=True)
    w.write(broker_dir / "mosquitto.conf", broker.mosquitto_conf(
        tls_port=h.ports["mqtt"], local_port=h.ports["mqtt_local"] or None, conf_dir=conf_dir,
        persistence_dir=persistence,
    ), 0o644)
    w.write(broker_dir / "acl", broker.ACL, 0o644)
    passwd = broker_dir / "passwd"
    existing = passwd.read_text() if passwd.exists() else ""
    w.write(passwd, broker.passwd_file(h.mqtt_users(), existing), 0o600)

    for device_id in h.devices:
        ddir = out / "devices" / device_id
        w.write(ddir / "naila.conf", device_conf(h, device_id), 0o600)
        w.write(ddir / "naila-ca.crt", ca_pem, 0o644)
    devices_dir = out / "devices"
    if devices_dir.is_dir():
        for stale in devices_dir.iterdir():
            if stale.name not in h.devices:
                w.remove_tree(stale)


# ---- the command ---------------------------------------------------------------------------------


def provision(out: Path, ns: argparse.Namespace) -> tuple[Household, Writer]:
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    out.chmod(0o700)
    state_path = out / STATE_FILE
    h = Household.load(state_path)
    ports = {k: v for k, v in {
        "hub": ns.hub_port, "ai_server": ns.ai_port, "mqtt": ns.mqtt_port, "mqtt_local": ns.mqtt_local_port,
    }.items() if v is not None}
    for name, port in ports.items():
        if not (0 if name == "mqtt_local" else 1) <= port <= 65535:
            raise ProvisionError(f"--{name.replace('_', '-')}-port: {port} is not a port")
    if h is None:
        if not ns.hub or not ns.ai_server:
            raise ProvisionError(f"{out} has no household yet: give --hub and --ai-server (host names/addresses)")
        hub = parse_hosts(ns.hub, "--hub")
        h = Household(
            hub=hub,
            ai_server=parse_hosts(ns.ai_server, "--ai-server"),
            broker=parse_hosts(ns.broker, "--broker") if ns.broker else hub,
            ports={**DEFAULT_PORTS, **ports},
            in_place=ns.in_place,
        )
    else:
        if ns.hub:
            h.hub = parse_hosts(ns.hub, "--hub")
        if ns.ai_server:
            h.ai_server = parse_hosts(ns.ai_server, "--ai-server")
        if ns.broker:
            h.broker = parse_hosts(ns.broker, "--broker")
        h.ports.update(ports)
        h.in_place = h.in_place or ns.in_place
    for user in broker.SERVICE_USERS:
        h.mqtt.setdefault(user, broker.new_password())
    revoke = set(ns.revoke_device or ())
    for device_id, room in (parse_device(v) for v in (ns.device or []) + (ns.add_device or [])):
        if device_id in revoke:
            raise ProvisionError(f"{device_id}: both added and revoked")
        if device_id in h.devices:
            if room:
                h.devices[device_id]["room"] = room
        else:
            h.devices[device_id] = {"room": room, "token": new_token(), "mqtt_password": broker.new_password()}
    for device_id in revoke:
        if h.devices.pop(device_id, None) is None:
            raise ProvisionError(f"--revoke-device {device_id}: no such device (have: {', '.join(h.devices)})")
    w = Writer()
    # Every folder made below is the owner's only (each file gets its own mode on top).
    umask = os.umask(0o077)
    try:
        # The state first: if anything below fails, a re-run regenerates the same secrets.
        w.write(state_path, h.dump(), 0o600)
        write_household(w, out, h)
    finally:
        os.umask(umask)
    return h, w


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="naila init",
        description="Provision a household: CA, certificates, tokens, broker users and ACL, one env file "
        "per machine and a naila.conf per device. Re-run to add or revoke devices; nothing else changes.",
    )
    p.add_argument("-o", "--out", type=Path, default=Path("naila-household"),
                   help="output folder (mode 0700; keep it, it holds the CA key; default ./naila-household)")
    p.add_argument("--hub", help="the hub's host names/addresses, comma-separated (first = what devices dial), "
                   "e.g. naila-hub.local,192.168.1.10")
    p.add_argument("--ai-server", help="the AI server's host names/addresses (first = what the hub dials)")
    p.add_argument("--broker", help="the MQTT broker's host names/addresses (default: the hub's)")
    p.add_argument("--device", action="append", metavar="ID[=ROOM]", help="a device (repeatable)")
    p.add_argument("--add-device", action="append", metavar="ID[=ROOM]", help="same as --device")
    p.add_argument("--revoke-device", action="append", metavar="ID",
                   help="remove a device's hub token and broker user (repeatable)")
    p.add_argument("--hub-port", type=int, help=f"hub HTTPS port (default {DEFAULT_PORTS['hub']})")
    p.add_argument("--ai-port", type=int, help=f"AI server gRPC port (default {DEFAULT_PORTS['ai_server']})")
    p.add_argument("--mqtt-port", type=int, help=f"broker TLS port (default {DEFAULT_PORTS['mqtt']})")
    p.add_argument("--mqtt-local-port", type=int,
                   help=f"broker plaintext port on 127.0.0.1 only, 0 = none (default {DEFAULT_PORTS['mqtt_local']})")
    p.add_argument("--in-place", action="store_true",
                   help="env files and mosquitto.conf name the files where they are written (the whole household "
                   "on one machine, for trying it out); default: where install-service.sh puts them")
    return p


def main(argv: Sequence[str]) -> int:
    ns = _parser().parse_args(list(argv))
    out: Path = ns.out
    try:
        h, w = provision(out, ns)
    except (ProvisionError, OSError) as exc:
        print(f"naila init: {exc}", file=sys.stderr)
        return 2
    for path in w.written:
        print(f"naila init: wrote {path}")
    for path in w.removed:
        print(f"naila init: removed {path}")
    print(f"naila init: {len(w.unchanged)} file(s) unchanged; devices: {', '.join(h.devices) or 'none'}")
    if ns.revoke_device:
        print("naila init: revoked " + ", ".join(ns.revoke_device) + ": install hub/ and broker/ again "
              "(scripts/install-service.sh hub|broker) so the hub and the broker forget them")
    elif w.written:
        print(f"naila init: next: copy each machine's folder and run scripts/install-service.sh there "
              f"(docs/deployment.md); keep {out / 'ca'} off the machines")
    return 0
