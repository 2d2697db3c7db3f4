#!/usr/bin/python3
"""naila-config: check /boot/firmware/naila.conf and apply it. Runs at every boot and
whenever the file changes (naila-config.path).

* Every value is checked; problems are printed on the console(s) and written to
  naila-status.txt next to naila.conf, and the device agent does not start (it has
  ConditionPathExists=/etc/naila/device.env, which is only written from a valid file).
* System settings whose own values are valid (Wi-Fi, SSH key, hostname, updates) are applied
  even when another value is wrong, so the device stays reachable to fix the rest.
* naila-ca.crt next to naila.conf (written by `naila init`) is the household CA: it is installed
  as /etc/naila/ca.crt and becomes DEVICE_HUB_CA and MQTT_CA_FILE, so the hub's HTTPS and the
  broker's TLS certificates are checked against it. It is public; it stays on the card.
* Secrets (WIFI_PASSPHRASE, MQTT_PASSWORD, HUB_TOKEN) are moved off the FAT partition:
  stored in /etc/naila/secrets.env (root, 0600), the agent's ones in /etc/naila/device.env
  (root:naila, 0640), and their values in naila.conf are overwritten in place. An empty
  value keeps the stored secret; "-" deletes it.

Standard library only (Debian's python3), so it runs before and without the agent's venv.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import dataclasses
import difflib
import grp
import hashlib
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from urllib.parse import urlsplit

PROG = "naila-config"

# --------------------------------------------------------------------------- the file format

SECRET_KEYS = ("WIFI_PASSPHRASE", "MQTT_PASSWORD", "HUB_TOKEN")
CLEAR = "-"  # a secret set to "-" deletes the stored value

# Keys the image understands itself (not passed through verbatim).
IMAGE_KEYS = (
    "DEVICE_ID",
    "HUB_URL",
    "HUB_TOKEN",
    "MQTT_URL",
    "MQTT_USERNAME",
    "MQTT_PASSWORD",
    "WIFI_SSID",
    "WIFI_PASSPHRASE",
    "WIFI_COUNTRY",
    "SSH_AUTHORIZED_KEY",
    "HOSTNAME",
    "UNATTENDED_UPGRADES",
    "ALSA_CARD",
)
REQUIRED_KEYS = ("DEVICE_ID", "HUB_URL")
# The agent's own variables for these are derived from the image keys.
RENAMED = {
    "DEVICE_HUB_URL": "HUB_URL",
    "DEVICE_HUB_TOKEN": "HUB_TOKEN",
    "MQTT_HOST": "MQTT_URL",
    "MQTT_PORT": "MQTT_URL",
    "MQTT_TLS": "MQTT_URL",
}
# Other agent settings (see `naila config`) are passed through to device.env.
PASSTHROUGH_PREFIXES = ("DEVICE_", "AUDIO_", "VIDEO_", "WEBRTC_", "MQTT_")
SSH_KEY_EXTRA = re.compile(r"^SSH_AUTHORIZED_KEY_[1-9][0-9]?$")

# Same rule as shared/ids.py (tests/unit/test_ids.py checks they agree).
SAFE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
HOSTNAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
COUNTRY_RE = re.compile(r"^[A-Z]{2}$")
ALSA_CARD_RE = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
TOKEN_RE = re.compile(r"^[\x21-\x7e]{1,4096}$")
# Where the household CA from the card is installed (a path on the device, whatever --root is).
CA_PATH = "/etc/naila/ca.crt"
CA_MAX_BYTES = 65536
PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----\r?\n([A-Za-z0-9+/=\r\n]+)-----END CERTIFICATE-----")
SSH_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)
TRUE_WORDS = ("yes", "true", "on", "1")
FALSE_WORDS = ("no", "false", "off", "0")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclasses.dataclass(frozen=True)
class Entry:
    key: str
    value: str
    line: int


@dataclasses.dataclass
class Problem:
    key: str  # "" for file-level problems
    message: str
    line: int = 0
    section: str = "agent"  # agent | wifi | ssh | hostname | upgrades | file

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        what = f"{self.key}: " if self.key else ""
        return f"{where}{what}{self.message}"


def parse_conf(text: str) -> tuple[dict[str, Entry], list[Problem]]:
    """KEY=VALUE lines; '#' comments; blank lines; optional matching quotes around the value.

    Everything after the first '=' is the value (no inline comments), trimmed; quote it to
    keep leading or trailing spaces. Keys are case-insensitive. Windows line ends and a
    UTF-8 byte-order mark (Notepad) are fine.
    """
    entries: dict[str, Entry] = {}
    problems: list[Problem] = []
    text = text.removeprefix("\ufeff")
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip().upper()
        if not sep or not re.fullmatch(r"[A-Z_][A-Z0-9_]*", key):
            problems.append(Problem("", "expected KEY=VALUE (or a # comment)", n, "file"))
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        if key in entries:
            problems.append(Problem(key, f"given twice (also on line {entries[key].line})", n, section_of(key)))
            continue
        entries[key] = Entry(key, value, n)
    return entries, problems


def is_safe_id(value: str) -> bool:
    """shared.ids.is_safe_id, standard library only: it becomes a topic level and a file name."""
    return SAFE_ID.fullmatch(value) is not None and value not in (".", "..")


def section_of(key: str) -> str:
    if key.startswith("WIFI_"):
        return "wifi"
    if key.startswith("SSH_"):
        return "ssh"
    if key == "HOSTNAME":
        return "hostname"
    if key == "UNATTENDED_UPGRADES":
        return "upgrades"
    return "agent"


# --------------------------------------------------------------------------- value checks
# Each returns an error message, or None when the value is fine.


def check_url(value: str, schemes: tuple[str, ...], *, allow_path: bool) -> str | None:
    if CONTROL.search(value) or " " in value:
        return "must not contain spaces or control characters"
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme not in schemes:
        return "must start with " + " or ".join(f"{s}://" for s in schemes)
    if not parts.hostname:
        return "has no host name"
    if parts.username is not None or parts.password is not None:
        return "must not contain a user name or password"
    if port == 0:
        return "port must be 1-65535"
    if parts.query or parts.fragment:
        return "must not have a ?query or #fragment"
    if not allow_path and parts.path not in ("", "/"):
        return "must not have a path (just scheme://host[:port])"
    return None


def wifi_psk(ssid: str, passphrase: str) -> str:
    """The 256-bit WPA key as wpa_passphrase computes it (64 hex digits)."""
    if re.fullmatch(r"[0-9A-Fa-f]{64}", passphrase):
        return passphrase.lower()
    return hashlib.pbkdf2_hmac("sha1", passphrase.encode(), ssid.encode(), 4096, 32).hex()


def check_wifi_passphrase(value: str) -> str | None:
    if re.fullmatch(r"[0-9A-Fa-f]{64}", value):
        return None
    if not re.fullmatch(r"[\x20-\x7e]*", value):
        return "may only contain printable ASCII characters"
    if not 8 <= len(value) <= 63:
        return f"must be 8-63 characters (it has {len(value)})"
    return None


def check_ssh_key(value: str) -> str | None:
    fields = value.split()
    if len(fields) < 2:
        return "expected 'TYPE BASE64 [comment]', e.g. the contents of ~/.ssh/id_ed25519.pub"
    kind, b64 = fields[0], fields[1]
    if kind not in SSH_KEY_TYPES:
        if kind.startswith(("from=", "command=", "no-", "restrict")):
            return "options before the key are not supported"
        if "PRIVATE KEY" in value:
            return "this is a PRIVATE key: use the .pub file"
        return f"unknown key type {kind!r} (use {', '.join(SSH_KEY_TYPES[:3])}, ...)"
    try:
        blob = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        return "the key data is not valid base64 (copied incompletely?)"
    if len(blob) < 4 or blob[4 : 4 + int.from_bytes(blob[:4], "big")] != kind.encode():
        return "the key data does not match its type (copied incompletely?)"
    return None


def default_hostname(device_id: str) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", device_id.lower()).strip("-")[:63].strip("-")
    return name if HOSTNAME_RE.match(name) else "naila"


# --------------------------------------------------------------------------- validation


@dataclasses.dataclass
class Wifi:
    ssid: str
    passphrase: str | None  # None: open network
    country: str | None


@dataclasses.dataclass
class Result:
    problems: list[Problem]
    warnings: list[str]
    env: dict[str, str]  # -> /etc/naila/device.env (only used when problems is empty)
    secrets: dict[str, str]  # -> /etc/naila/secrets.env (stored secrets after this run)
    wipe: list[str]  # secret keys whose values must be removed from naila.conf
    wifi: Wifi | None
    ssh_keys: list[str]
    hostname: str | None
    unattended_upgrades: bool

    def ok(self, section: str | None = None) -> bool:
        """No problems at all (None), or none in one section ("file" problems count for all)."""
        if section is None:
            return not self.problems
        return not any(p.section in (section, "file") for p in self.problems)


def validate(
    entries: dict[str, Entry],
    stored: dict[str, str],
    known_agent_vars: Iterable[str] | None = None,
    parse_problems: Iterable[Problem] = (),
    ca_file: str | None = None,
) -> Result:
    """Check every entry; never raises. `stored` holds the secrets kept from earlier runs.

    `known_agent_vars` (the variables `naila config` lists) makes typos in pass-through
    settings an error; without it any DEVICE_/AUDIO_/VIDEO_/WEBRTC_/MQTT_ key passes.
    `ca_file` (the installed household CA) becomes DEVICE_HUB_CA and, over TLS, MQTT_CA_FILE
    unless naila.conf sets them itself.
    """
    problems = list(parse_problems)
    warnings: list[str] = []
    known = set(known_agent_vars) if known_agent_vars is not None else None
    env: dict[str, str] = {}
    secrets = dict(stored)
    wipe: list[str] = []

    def bad(key: str, message: str) -> None:
        line = entries[key].line if key in entries else 0
        problems.append(Problem(key, message, line, section_of(key)))

    def get(key: str) -> str:
        return entries[key].value if key in entries else ""

    # Secrets first: whatever happens, a secret written on the card is moved off it.
    secret_checks: dict[str, Callable[[str], str | None]] = {
        "WIFI_PASSPHRASE": check_wifi_passphrase,
        "MQTT_PASSWORD": lambda v: None if not CONTROL.search(v) else "must not contain control characters",
        "HUB_TOKEN": lambda v: None if TOKEN_RE.match(v) else "must be printable ASCII without spaces",
    }
    for key in SECRET_KEYS:
        value = get(key)
        if value == "":
            continue
        wipe.append(key)
        if value == CLEAR:
            secrets.pop(key, None)
            continue
        msg = secret_checks[key](value)
        if msg:
            bad(key, f"{msg}; the value was removed from the card, write it again")
        else:
            secrets[key] = value

    for key in REQUIRED_KEYS:
        if not get(key):
            bad(key, "is required" + (" (it is empty)" if key in entries else ""))

    # Agent: identity, hub, broker.
    device_id = get("DEVICE_ID")
    if device_id and not is_safe_id(device_id):
        bad("DEVICE_ID", f"{device_id!r}: must be 1-64 of letters, digits, '_', '.', '-'")
    elif device_id:
        env["DEVICE_ID"] = device_id

    hub_url = get("HUB_URL")
    hub_host = None
    if hub_url:
        msg = check_url(hub_url, ("http", "https"), allow_path=True)
        if msg:
            bad("HUB_URL", f"{hub_url!r} {msg}")
        else:
            env["DEVICE_HUB_URL"] = hub_url.rstrip("/")
            hub_host = urlsplit(hub_url).hostname
    if secrets.get("HUB_TOKEN"):
        env["DEVICE_HUB_TOKEN"] = secrets["HUB_TOKEN"]
        if hub_url.startswith("http://"):
            warnings.append("HUB_URL is http://: the token and the call setup cross the network in clear "
                            "text (naila init writes an https:// URL and naila-ca.crt)")

    mqtt_url = get("MQTT_URL")
    if mqtt_url:
        msg = check_url(mqtt_url, ("mqtt", "mqtts"), allow_path=False)
        if msg:
            if "user name or password" in msg:
                msg += ": use MQTT_USERNAME and MQTT_PASSWORD"
            bad("MQTT_URL", f"{mqtt_url!r} {msg}")
        else:
            parts = urlsplit(mqtt_url)
            tls = parts.scheme == "mqtts"
            env["MQTT_HOST"] = parts.hostname or ""
            env["MQTT_PORT"] = str(parts.port or (8883 if tls else 1883))
            env["MQTT_TLS"] = "true" if tls else "false"
    elif hub_host:
        # The broker usually runs on the hub machine.
        env.update(MQTT_HOST=hub_host, MQTT_PORT="1883", MQTT_TLS="false")
        warnings.append(f"MQTT_URL not set: using mqtt://{hub_host}:1883 (the hub's host)")

    if ca_file:
        if env.get("DEVICE_HUB_URL", "").startswith("https://"):
            env["DEVICE_HUB_CA"] = ca_file
        if env.get("MQTT_TLS") == "true":
            env["MQTT_CA_FILE"] = ca_file

    username = get("MQTT_USERNAME")
    if username:
        if CONTROL.search(username) or len(username) > 256:
            bad("MQTT_USERNAME", "must be at most 256 characters, no control characters")
        else:
            env["MQTT_USERNAME"] = username
    if secrets.get("MQTT_PASSWORD"):
        if not username:
            bad("MQTT_PASSWORD", "is set but MQTT_USERNAME is not (MQTT needs a user name with a password)")
        env["MQTT_PASSWORD"] = secrets["MQTT_PASSWORD"]

    alsa_card = get("ALSA_CARD")
    if alsa_card:
        if ALSA_CARD_RE.match(alsa_card):
            env["ALSA_CARD"] = alsa_card
        else:
            bad("ALSA_CARD", "must be a card index or name from `aplay -l` (letters, digits, _ . -)")

    # Wi-Fi.
    wifi = None
    ssid = get("WIFI_SSID")
    country = get("WIFI_COUNTRY").upper()
    if country and not COUNTRY_RE.match(country):
        bad("WIFI_COUNTRY", f"{country!r}: must be a two-letter country code, e.g. DE, GB, US")
    if ssid:
        if CONTROL.search(ssid) or not 1 <= len(ssid.encode()) <= 32:
            bad("WIFI_SSID", "must be 1-32 bytes without control characters")
        else:
            passphrase = secrets.get("WIFI_PASSPHRASE")
            if passphrase is None:
                warnings.append(f"WIFI_PASSPHRASE not set: joining {ssid!r} as an open network")
            wifi = Wifi(ssid, passphrase, country or None)
    elif "WIFI_PASSPHRASE" in secrets and get("WIFI_PASSPHRASE") not in ("", CLEAR):
        bad("WIFI_PASSPHRASE", "is set but WIFI_SSID is not")

    # SSH keys.
    ssh_keys: list[str] = []
    for key in sorted(k for k in entries if k == "SSH_AUTHORIZED_KEY" or SSH_KEY_EXTRA.match(k)):
        value = get(key)
        if not value:
            continue
        msg = check_ssh_key(value)
        if msg:
            bad(key, msg)
        else:
            ssh_keys.append(" ".join(value.split()))

    # Hostname.
    hostname = get("HOSTNAME").lower()
    if hostname and not HOSTNAME_RE.match(hostname):
        bad("HOSTNAME", f"{hostname!r}: 1-63 of a-z, 0-9 and '-', not starting or ending with '-'")
        hostname = ""
    if not hostname and device_id:
        hostname = default_hostname(device_id)

    # Security updates.
    unattended = True
    flag = get("UNATTENDED_UPGRADES").lower()
    if flag in FALSE_WORDS:
        unattended = False
    elif flag and flag not in TRUE_WORDS:
        bad("UNATTENDED_UPGRADES", f"{flag!r}: must be yes or no")

    # Everything else: renamed agent variables, pass-through agent settings, typos.
    for key, entry in sorted(entries.items()):
        if key in IMAGE_KEYS or SSH_KEY_EXTRA.match(key):
            continue
        if key in RENAMED:
            bad(key, f"set {RENAMED[key]} instead in naila.conf")
        elif key.startswith(PASSTHROUGH_PREFIXES) and (known is None or key in known):
            if entry.value == "":
                continue  # empty = not set: the agent's default applies
            if CONTROL.search(entry.value):
                bad(key, "must not contain control characters")
            else:
                env[key] = entry.value
        else:
            vocabulary = list(IMAGE_KEYS) + sorted(known or ())
            close = difflib.get_close_matches(key, vocabulary, n=1, cutoff=0.75)
            hint = f" (did you mean {close[0]}?)" if close else ""
            bad(key, f"unknown setting{hint}")

    return Result(
        problems=sorted(problems, key=lambda p: (p.line or 10**9, p.key)),
        warnings=warnings,
        env=env,
        secrets=secrets,
        wipe=wipe,
        wifi=wifi,
        ssh_keys=ssh_keys,
        hostname=hostname or None,
        unattended_upgrades=unattended,
    )


# --------------------------------------------------------------------------- rendering

_BARE = re.compile(r"[A-Za-z0-9_./:@%+,=-]*")


def env_quote(value: str) -> str:
    """A value for a systemd EnvironmentFile (and this module's parse_env)."""
    if _BARE.fullmatch(value):
        return value
    return '"' + re.sub(r'(["\\`$])', r"\\\1", value) + '"'


def render_env(values: dict[str, str], header: str) -> str:
    lines = [f"# {line}" for line in header.splitlines()]
    lines += [f"{k}={env_quote(v)}" for k, v in sorted(values.items())]
    return "\n".join(lines) + "\n"


def parse_env(text: str) -> dict[str, str]:
    """Read back what render_env wrote."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        out[key] = value
    return out


def render_wpa(wifi: Wifi) -> str:
    lines = [
        "# Generated by naila-config from /boot/firmware/naila.conf: edit that file instead.",
        "ctrl_interface=DIR=/run/wpa_supplicant GROUP=netdev",
        "update_config=0",
    ]
    if wifi.country:
        lines.append(f"country={wifi.country}")
    lines += ["network={", f"\tssid={wifi.ssid.encode().hex()}", "\tscan_ssid=1"]
    if wifi.passphrase is None:
        lines.append("\tkey_mgmt=NONE")
    else:
        lines += ["\tkey_mgmt=WPA-PSK WPA-PSK-SHA256", f"\tpsk={wifi_psk(wifi.ssid, wifi.passphrase)}"]
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_auto_upgrades(enabled: bool) -> str:
    v = "1" if enabled else "0"
    return (
        "// Written by naila-config from UNATTENDED_UPGRADES in /boot/firmware/naila.conf.\n"
        f'APT::Periodic::Update-Package-Lists "{v}";\n'
        f'APT::Periodic::Unattended-Upgrade "{v}";\n'
    )


def wipe_secrets(text: str, keys: Iterable[str]) -> str:
    """naila.conf with the values of `keys` emptied, each with a note above it."""
    keys = set(keys)
    newline = "\r\n" if "\r\n" in text else "\n"
    bom = "\ufeff" if text.startswith("\ufeff") else ""
    out: list[str] = []
    for raw in text.removeprefix("\ufeff").splitlines():
        key = raw.partition("=")[0].strip().upper()
        if "=" in raw and not raw.lstrip().startswith("#") and key in keys:
            note = f"# {key}: stored on the device. Leave empty to keep it, '-' to delete it."
            if not out or out[-1] != note:
                out.append(note)
            indent = raw[: len(raw) - len(raw.lstrip())]
            out.append(f"{indent}{key}=")
        else:
            out.append(raw)
    return bom + newline.join(out) + newline


def render_status(problems: Iterable[Problem], warnings: Iterable[str], summary: str, when: str) -> str:
    lines = [f"NAILA device configuration check, {when}", "", summary]
    lines += [f"  ERROR {p}" for p in problems]
    lines += [f"  note: {w}" for w in warnings]
    lines += [
        "",
        "Edit naila.conf on this partition (see the comments in it), put the card back and",
        "power on: the file is checked again at every boot, and within seconds when it is",
        "changed on the running device. Passwords are removed from naila.conf once stored.",
    ]
    return "\r\n".join(lines) + "\r\n"  # read on Windows PCs too


# --------------------------------------------------------------------------- applying


@dataclasses.dataclass
class Paths:
    root: Path = Path("/")

    def p(self, rel: str) -> Path:
        return self.root / rel.lstrip("/")

    @property
    def ca_on_card(self) -> Path:
        return self.p("/boot/firmware/naila-ca.crt")

    @property
    def ca(self) -> Path:
        return self.p(CA_PATH)

    @property
    def conf(self) -> Path:
        return self.p("/boot/firmware/naila.conf")

    @property
    def status(self) -> Path:
        return self.p("/boot/firmware/naila-status.txt")

    @property
    def device_env(self) -> Path:
        return self.p("/etc/naila/device.env")

    @property
    def secrets_env(self) -> Path:
        return self.p("/etc/naila/secrets.env")

    @property
    def ssh_keys(self) -> Path:
        return self.p("/etc/naila/ssh/root")

    @property
    def wpa(self) -> Path:
        return self.p("/etc/wpa_supplicant/wpa_supplicant-wlan0.conf")

    @property
    def auto_upgrades(self) -> Path:
        return self.p("/etc/apt/apt.conf.d/20auto-upgrades")

    @property
    def hostname(self) -> Path:
        return self.p("/etc/hostname")

    @property
    def hosts(self) -> Path:
        return self.p("/etc/hosts")

    @property
    def naila_cli(self) -> Path:
        return self.p("/opt/naila/venv/bin/naila")


def write_file(path: Path, content: str, mode: int | None, gid: int = 0, *, chown: bool = True) -> bool:
    """Atomically write `content` with `mode` (owner root:gid); True if anything changed.

    mode None: leave permissions alone (the FAT partition has no per-file modes)."""
    data = content.encode()
    try:
        st = path.stat()
        same_meta = mode is None or (
            (st.st_mode & 0o7777) == mode and (not chown or (st.st_uid, st.st_gid) == (0, gid))
        )
        if same_meta and path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode is None:
        # FAT: write in place. A renamed file's new directory entry gets its size only when
        # the inode is written back later, so after a power cut it would read as empty.
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(path.parent)
        return True
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        if chown:
            os.fchown(fd, 0, gid)
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return True


def fsync_dir(path: Path) -> None:
    """Make a rename durable: the Pi is usually switched off by pulling the plug, and on the
    FAT partition an unsynced directory block would lose the new file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_file(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    fsync_dir(path.parent)
    return True


def overwrite_in_place(path: Path, new_text: str) -> None:
    """Rewrite a file on the FAT partition over its own clusters, so the old bytes (the
    secrets) are overwritten rather than left in freed clusters. A crash half-way leaves
    valid KEY=VALUE text (the padding is blank lines)."""
    new = new_text.encode()
    with open(path, "r+b") as f:
        old_len = os.fstat(f.fileno()).st_size
        f.write(new + b"\n" * max(0, old_len - len(new)))
        f.flush()
        os.fsync(f.fileno())
        f.truncate(len(new))
        f.flush()
        os.fsync(f.fileno())


class Console:
    """Messages for the journal (stdout) and, for the important ones, every active console
    (serial and HDMI), so a problem is visible without logging in."""

    def __init__(self, consoles: list[Path] | None = None) -> None:
        self.consoles = consoles if consoles is not None else self._active()

    @staticmethod
    def _active() -> list[Path]:
        try:
            names = Path("/sys/class/tty/console/active").read_text().split()
        except OSError:
            return []
        return [Path("/dev") / n for n in names]

    def info(self, msg: str, *, loud: bool = False) -> None:
        print(f"{PROG}: {msg}", flush=True)
        if loud:
            for dev in self.consoles:
                try:
                    with open(dev, "w") as tty:
                        tty.write(f"{PROG}: {msg}\r\n")
                except OSError:
                    pass


def systemctl(*args: str) -> int:
    return subprocess.run(["systemctl", *args], check=False).returncode


def agent_known_vars(cli: Path) -> set[str] | None:
    """The variable names of the agent's settings table (`naila config`), if it runs."""
    if not cli.exists():
        return None
    try:
        out = subprocess.run([str(cli), "config"], capture_output=True, text=True, timeout=180, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    names = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", out.stdout, re.MULTILINE))
    return names or None


def agent_check(cli: Path, env: dict[str, str]) -> str | None:
    """Let the agent's own settings models judge the environment (`naila config --check`)."""
    if not cli.exists():
        return None
    clean = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", **env}
    try:
        out = subprocess.run(
            [str(cli), "config", "--check"], capture_output=True, text=True, timeout=180, env=clean, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"could not run `naila config --check`: {exc}"
    if out.returncode == 0:
        return None
    text = (out.stderr or out.stdout).strip().splitlines()
    return text[-1] if text else f"`naila config --check` exited with {out.returncode}"


def check_ca(data: bytes) -> str | None:
    """naila-ca.crt must be PEM certificates (the household CA), nothing else."""
    if len(data) > CA_MAX_BYTES:
        return f"is {len(data)} bytes: a CA certificate is a few hundred"
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        return "is not a PEM certificate (binary data): copy ca.crt from naila init's output"
    if "PRIVATE KEY" in text:
        return "contains a PRIVATE KEY: copy only ca.crt (never ca.key) to the card"
    blocks = PEM_CERT.findall(text)
    if not blocks:
        return "has no -----BEGIN CERTIFICATE----- block: copy ca.crt from naila init's output"
    for body in blocks:
        try:
            base64.b64decode("".join(body.split()), validate=True)
        except (binascii.Error, ValueError):
            return "has a damaged certificate (not valid base64)"
    return None


def install_ca(paths: Paths, live: bool) -> tuple[Problem | None, bool]:
    """Install naila-ca.crt from the card; (problem, whether a CA is installed on the device).

    Without a card copy, a CA installed earlier stays in use.
    """
    try:
        data = paths.ca_on_card.read_bytes()
    except FileNotFoundError:
        return None, paths.ca.exists()
    msg = check_ca(data)
    if msg:
        return Problem("", f"naila-ca.crt {msg}", 0, "agent"), paths.ca.exists()
    write_file(paths.ca, data.decode("ascii").replace("\r\n", "\n"), 0o644, chown=live)
    return None, True


def set_hostname(paths: Paths, name: str, live: bool) -> bool:
    changed = write_file(paths.hostname, name + "\n", 0o644, chown=live)
    try:
        hosts = paths.hosts.read_text()
    except FileNotFoundError:
        hosts = "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n"
    lines = [ln for ln in hosts.splitlines() if not ln.startswith("127.0.1.1")]
    lines.append(f"127.0.1.1\t{name}")
    changed |= write_file(paths.hosts, "\n".join(lines) + "\n", 0o644, chown=live)
    if live and socket.gethostname() != name:
        socket.sethostname(name)
        changed = True
    return changed


def naila_gid() -> int:
    try:
        return grp.getgrnam("naila").gr_gid
    except KeyError:
        return 0


def run(paths: Paths, console: Console, *, live: bool = True) -> int:
    """Check and apply. `live` False (tests): no systemctl, no chown, no hostname syscall."""
    ctl: Callable[..., int] = systemctl if live else (lambda *a: 1 if a[0] == "is-active" else 0)
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())

    def status(problems: list[Problem], summary: str) -> None:
        warnings = result.warnings if result is not None else []
        try:
            write_file(paths.status, render_status(problems, warnings, summary, when), None)
        except OSError as exc:
            console.info(f"cannot write {paths.status}: {exc}")

    try:
        raw = paths.conf.read_bytes()
    except FileNotFoundError:
        if paths.device_env.exists():
            console.info(f"{paths.conf} not found: keeping the configuration already on the device", loud=True)
            return 0
        banner(console, [f"{paths.conf} not found: put naila.conf (see naila.conf.example) on the boot partition"])
        return 1
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    stored = parse_env(paths.secrets_env.read_text()) if paths.secrets_env.exists() else {}
    if text is None:
        result = None
        problems = [Problem("", "naila.conf is not UTF-8 text: save it as UTF-8", 0, "file")]
    else:
        entries, parse_problems = parse_conf(text)
        cli = paths.naila_cli
        ca_problem, has_ca = install_ca(paths, live)
        result = validate(entries, stored, agent_known_vars(cli) if live else None, parse_problems,
                          CA_PATH if has_ca else None)
        if ca_problem is not None:
            result.problems.append(ca_problem)
        problems = result.problems

    if result is not None and result.wipe and text is not None:
        # Store first, then remove from the card.
        write_file(
            paths.secrets_env,
            render_env(result.secrets, "Secrets moved off naila.conf (root only)."),
            0o600,
            chown=live,
        )
        overwrite_in_place(paths.conf, wipe_secrets(text, result.wipe))
        console.info("moved " + ", ".join(result.wipe) + " off the boot partition into /etc/naila", loud=True)

    if result is not None:
        for w in result.warnings:
            console.info(f"note: {w}")
        apply_system(paths, result, console, ctl, live)

    agent_problem = None
    if result is not None and result.ok():
        agent_problem = agent_check(paths.naila_cli, result.env) if live else None
        if agent_problem:
            problems = [Problem("", f"the device agent rejects it: {agent_problem}", 0, "agent")]

    if problems:
        if remove_file(paths.device_env):
            console.info(f"removed {paths.device_env}: the agent waits for a valid naila.conf")
        # Only a running agent is stopped: at boot its start job must stay queued, so that
        # systemd records it as skipped by its condition (no device.env), not as stopped.
        if ctl("is-active", "--quiet", "naila-device.service") == 0:
            ctl("stop", "--no-block", "naila-device.service")
        banner(console, [str(p) for p in problems])
        status(problems, f"NOT OK: {len(problems)} problem(s); the NAILA agent is waiting for a fix:")
        return 1

    assert result is not None
    header = "Generated by naila-config from /boot/firmware/naila.conf: edit that file instead."
    changed = write_file(paths.device_env, render_env(result.env, header), 0o640, naila_gid(), chown=live)
    scheme = "mqtts" if result.env.get("MQTT_TLS") == "true" else "mqtt"
    mqtt = f"{scheme}://{result.env['MQTT_HOST']}:{result.env['MQTT_PORT']}"
    console.info(
        f"configuration OK: device {result.env['DEVICE_ID']}, hub {result.env['DEVICE_HUB_URL']}, mqtt {mqtt}"
        + ("" if changed else " (unchanged)"),
        loud=True,
    )
    if changed:
        ctl("restart", "--no-block", "naila-device.service")
        console.info("starting naila-device.service", loud=True)
    else:
        ctl("start", "--no-block", "naila-device.service")
    status([], "OK: the NAILA device agent is configured and starting.")
    return 0


def apply_system(paths: Paths, result: Result, console: Console, ctl: Callable[..., int], live: bool) -> None:
    if result.ok("hostname") and result.hostname and set_hostname(paths, result.hostname, live):
        console.info(f"hostname set to {result.hostname}")
    if result.ok("ssh"):
        if result.ssh_keys:
            if write_file(paths.ssh_keys, "\n".join(result.ssh_keys) + "\n", 0o644, chown=live):
                console.info(f"SSH: {len(result.ssh_keys)} authorized key(s) for root installed", loud=True)
        elif remove_file(paths.ssh_keys):
            console.info("SSH: authorized keys removed (no SSH_AUTHORIZED_KEY)", loud=True)
    if result.ok("wifi"):
        # wpa_supplicant@wlan0 is started by udev when wlan0 appears (80-naila-wlan.rules) and
        # skipped without this file; (re)start it here for changes at run time.
        unit = "wpa_supplicant@wlan0.service"
        wlan_present = paths.p("/sys/class/net/wlan0").exists()
        if result.wifi is not None:
            if write_file(paths.wpa, render_wpa(result.wifi), 0o600, chown=live):
                if wlan_present:
                    ctl("restart", "--no-block", unit)
                where = "" if wlan_present else " (no wlan0 interface yet)"
                console.info(f"Wi-Fi: configured for {result.wifi.ssid!r}{where}", loud=True)
        elif remove_file(paths.wpa):
            ctl("stop", "--no-block", unit)
            console.info("Wi-Fi: turned off (no WIFI_SSID)", loud=True)
    if result.ok("upgrades") and write_file(
        paths.auto_upgrades, render_auto_upgrades(result.unattended_upgrades), 0o644, chown=live
    ):
        console.info(f"unattended security upgrades: {'on' if result.unattended_upgrades else 'off'}")


def banner(console: Console, problems: list[str]) -> None:
    console.info("=" * 66, loud=True)
    console.info("CONFIGURATION PROBLEM in /boot/firmware/naila.conf:", loud=True)
    for p in problems:
        console.info(f"  {p}", loud=True)
    console.info("The NAILA device agent will NOT start until this is fixed: edit naila.conf", loud=True)
    console.info("on the SD card's boot partition (details: naila-status.txt next to it).", loud=True)
    console.info("=" * 66, loud=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("/"), help="apply under this directory (testing)")
    parser.add_argument("--check", type=Path, help="only check this file and print the problems")
    ns = parser.parse_args(argv)
    if ns.check:
        entries, parse_problems = parse_conf(ns.check.read_text(encoding="utf-8"))
        ca = ns.check.parent / "naila-ca.crt"
        result = validate(entries, {}, None, parse_problems, CA_PATH if ca.exists() else None)
        msg = check_ca(ca.read_bytes()) if ca.exists() else None
        if msg:
            result.problems.append(Problem("", f"{ca.name} {msg}", 0, "agent"))
        for p in result.problems:
            print(f"{ns.check}: {p}")
        for w in result.warnings:
            print(f"{ns.check}: note: {w}")
        return 1 if result.problems else 0
    live = ns.root == Path("/")
    return run(Paths(ns.root), Console(None if live else []), live=live)


if __name__ == "__main__":
    sys.exit(main())
