"""The household broker's files: mosquitto.conf, the ACL and the password file.

``naila init`` writes them; deploy/mosquitto/ holds the same two text files as shipped (a test
keeps them identical to :func:`mosquitto_conf` with its defaults and :data:`ACL`), so what is
tested, documented and generated is one thing. They live here, not only in deploy/, because a
wheel install has no deploy/ folder.

The password file is written directly in the format mosquitto 2.0 reads (``$7$``: PBKDF2-SHA512,
the same as ``mosquitto_passwd``), so provisioning does not need mosquitto on the machine that
runs it. The passwords are 192-bit random strings, so the iteration count guards nothing a
brute-force search could reach; mosquitto pays it on every CONNECT.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping

SERVICE_USERS = ("naila-hub", "naila-ai-server", "naila-app")
MQTT_TLS_PORT = 8883
MQTT_LOCAL_PORT = 1883
CONF_DIR = "/etc/mosquitto/naila"
PERSISTENCE_DIR = "/var/lib/mosquitto/"
_ITERATIONS = 1000  # mosquitto_passwd 2.0.15+ uses 1000 (2.0.11 uses 101); both read either
_SALT_BYTES = 12


def new_password() -> str:
    return secrets.token_urlsafe(24)  # 192 bits


def passwd_line(user: str, password: str, *, salt: bytes | None = None, iterations: int = _ITERATIONS) -> str:
    """One ``user:$7$iterations$salt$hash`` line of a mosquitto password file."""
    if ":" in user or "\n" in user:
        raise ValueError(f"user name {user!r} may not contain ':' or a line break")
    salt = salt if salt is not None else secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"{user}:$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def passwd_matches(line: str, user: str, password: str) -> bool:
    """Whether a password-file line is ``user`` with ``password`` (so a re-run keeps it)."""
    name, _, rest = line.partition(":")
    parts = rest.split("$")
    if name != user or len(parts) != 5 or parts[1] != "7":
        return False
    try:
        salt, want = base64.b64decode(parts[3]), base64.b64decode(parts[4])
        got = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, int(parts[2]))
    except ValueError:
        return False
    return hmac.compare_digest(got, want)


def passwd_file(users: Mapping[str, str], existing: str = "") -> str:
    """The password file for ``users`` (name -> password), keeping lines of ``existing`` that still match."""
    old = {line.partition(":")[0]: line for line in existing.splitlines() if ":" in line}
    lines = []
    for user, password in sorted(users.items()):
        line = old.get(user, "")
        lines.append(line if passwd_matches(line, user, password) else passwd_line(user, password))
    return "\n".join(lines) + "\n"


def mosquitto_conf(
    *,
    tls_port: int = MQTT_TLS_PORT,
    local_port: int | None = MQTT_LOCAL_PORT,
    conf_dir: str = CONF_DIR,
    persistence_dir: str = PERSISTENCE_DIR,
    extra: Iterable[str] = (),
) -> str:
    """The complete broker configuration; ``conf_dir`` holds passwd, acl and certs/."""
    local = (
        "# Plain MQTT for processes on the broker machine only (mosquitto_sub while debugging);\n"
        "# nothing on the LAN can reach it.\n"
        f"listener {local_port} 127.0.0.1\n"
        if local_port
        else "# No plaintext listener at all.\n"
    )
    return _CONF.format(
        tls_port=tls_port, local=local, conf_dir=conf_dir.rstrip("/"), persistence_dir=persistence_dir,
        extra="".join(f"{line}\n" for line in extra),
    )


_CONF = """\
# NAILA MQTT broker configuration (mosquitto >= 2.0), as written by `naila init`.
# Spec §5 (topic tree, QoS) and §15.2 (TLS, user name/password, per-device ACLs, limits).
# Installation: scripts/install-service.sh broker (docs/deployment.md); details: README.md here.
#
# This is a complete configuration: install it as /etc/mosquitto/mosquitto.conf (it replaces
# Debian's, which only sets persistence and logging and includes conf.d/).
# tests/integration/test_mosquitto_acl.py and test_mqtt_tls.py run a broker from this file,
# rewriting only listener ports and file paths, so what is tested is what ships.

# Authentication and ACLs below apply to every listener.
per_listener_settings false

# ---- Listeners ---------------------------------------------------------------------------------
# TLS with the household CA's broker certificate (naila init: broker/certs/). Passwords and SDP
# offers never cross the LAN in clear text. Clients: MQTT_TLS=true, MQTT_PORT=8883,
# MQTT_CA_FILE=<the household ca.crt>.
listener {tls_port}
cafile {conf_dir}/certs/ca.crt
certfile {conf_dir}/certs/server.crt
keyfile {conf_dir}/certs/server.key
tls_version tlsv1.2

{local}
# Commands and replies are small request/response messages: without TCP_NODELAY, Nagle's
# algorithm meets the clients' delayed ACKs and each hop can wait ~40 ms.
set_tcp_nodelay true

# ---- Authentication and access control --------------------------------------------------------
# No anonymous clients: every device and service has its own user (naila init).
allow_anonymous false
# naila init: broker/passwd; owner root, group mosquitto, mode 0640.
password_file {conf_dir}/passwd
# naila init: broker/acl (the same as deploy/mosquitto/acl).
acl_file {conf_dir}/acl

# ---- Persistence --------------------------------------------------------------------------------
# Retained device/server status, persistent sessions (the hub's and the AI server's, fixed client
# ids, clean session off) and their queued QoS 1 messages survive a broker restart.
persistence true
persistence_location {persistence_dir}
# Save every 10 s instead of mosquitto's 1800: a power cut loses at most 10 s of queued alerts
# and retained state. The database is small (statuses, queued messages), so the write is cheap.
autosave_interval 10

# ---- Limits (spec §15.2 "rate limiting": what a broker can bound) ---------------------------------
# The largest NAILA message is a media upload: 50 MB (MEDIA_MAX_UPLOAD_SIZE) as base64 is
# 66.7 MiB, plus a JSON envelope (shared.mqtt.limits.UPLOAD_MAX_PAYLOAD_BYTES = 69,970,604 bytes).
# 70 MiB leaves ~3 MiB for the topic and MQTT header. A client sending a bigger packet is
# disconnected; MQTT 5 clients are told the limit in CONNACK.
max_packet_size 73400320
# Per-client queue of QoS 1 messages beyond those in flight, kept while a persistent-session client
# is offline (the AI server restarting, the hub reconnecting): what arrives meanwhile is delivered
# when it is back, up to a thousand messages or three maximal uploads, whichever comes first; a
# stuck consumer cannot make the broker buffer without bound.
max_queued_messages 1000
max_queued_bytes 220200960
# Clients with shorter keep-alives are fine; MQTT 5 clients asking for longer are told 300 s, so
# a dead Pi's last will ("offline") is published within minutes, not hours.
max_keepalive 300
# Message rates per device are limited by the consumers (shared/rate_limit.py token buckets):
# mosquitto has no per-client publish rate limit.

# ---- Logging (audit: connects, disconnects, refused logins) -------------------------------------
# stderr goes to the journal under systemd: journalctl -u mosquitto
log_dest stderr
log_type error
log_type warning
log_type notice
log_type information
connection_messages true
log_timestamp_format %Y-%m-%dT%H:%M:%S

# ---- Certificate auth (optional; spec §15.2 "username/password or certificate auth") -------------
# Devices present a client certificate signed by the CA instead of a password; its CN is used as
# the MQTT user name, so the ACL's %u patterns apply to it unchanged (CN == device id). The
# password is not checked on this listener: any certificate the CA signs is a login, so keep the
# CA key offline and sign only CNs you mean (a CN of naila-ai-server is the AI server).
# Clients: MQTT_TLS=true, MQTT_PORT=8884, MQTT_CA_FILE, MQTT_CERT_FILE, MQTT_KEY_FILE.
# BEGIN CERT AUTH
#listener 8884
#cafile {conf_dir}/certs/ca.crt
#certfile {conf_dir}/certs/server.crt
#keyfile {conf_dir}/certs/server.key
#tls_version tlsv1.2
#require_certificate true
#use_identity_as_username true
# END CERT AUTH
{extra}"""


ACL = """\
# NAILA broker ACL (mosquitto acl_file syntax), spec §15.2 "ACLs per device".
# Written by `naila init` (naila/broker.py); deploy/mosquitto/acl is the same file.
#
# Once an acl_file is set, mosquitto denies every publish and every delivery that no line below
# allows: this file is a whitelist. Topic tree: shared/mqtt/topics.py (spec §5.1). Each client gets
# only what it uses (review finding L4).
#
# "write" lets a client publish (and leave a last will) on the topic; "read" lets it receive it.
# A denied publish is dropped silently for MQTT 3.1.1 clients (MQTT 5 clients get reason code
# 0x87 "not authorised" on QoS 1); a denied will is never published. mosquitto 2.0 accepts
# any SUBSCRIBE and checks "read" on every message it would deliver, so a subscription to
# someone else's topic (or to naila/#) just never delivers what the user may not read.
# tests/integration/test_mosquitto_acl.py checks this file as shipped.
#
# Rules that apply to every user are "pattern" lines: %u is replaced by the MQTT user name.
# "topic" lines apply to the user named by the "user" line above them; there are none before the
# first "user" line, so an anonymous client (refused anyway: allow_anonymous false) gets nothing.

# ---- Devices ----------------------------------------------------------------------------------
# One MQTT user per device, user name == device id (naila init creates them). A device only ever
# reaches topics under its own naila/devices/{id}/, so a stolen Pi cannot impersonate, command or
# listen to another device, and cannot publish server status, broadcasts, alerts or chat replies.
#
# The device is the WebRTC offerer (device_agent/webrtc_client.py makes the offer, the hub
# answers), so it writes signaling/offer and reads signaling/answer. The hub gathers every ICE
# candidate before it answers (no trickle), so ICE only goes from a device to the hub.
pattern write naila/devices/%u/status
pattern write naila/devices/%u/command/response
pattern write naila/devices/%u/signaling/offer
pattern write naila/devices/%u/signaling/ice
pattern write naila/devices/%u/media/snapshot
pattern write naila/devices/%u/media/recording
pattern write naila/devices/%u/events
pattern read naila/devices/%u/command
pattern read naila/devices/%u/signaling/answer
pattern read naila/devices/%u/media/request
# Not per device, but every device may listen. A pattern line, because "topic" lines here would
# belong to anonymous clients only; so every other user may read these two as well (harmless),
# and mosquitto warns at start that they contain no %u (expected).
pattern read naila/server/status
pattern read naila/server/broadcast
# The service users below match the %u patterns too (e.g. naila/devices/naila-hub/status): no
# real device has those ids, and naila init refuses a device id equal to a service user.

# ---- Hub (NUC): the WebRTC answerer for devices and the web page's image questions ------------
# It publishes only signaling answers, image uploads (hub/web/upload.py) and the dashboard's
# device commands (camera / microphone privacy, mute: hub/web/controls.py, the same commands the AI
# server sends for voice) and reads the answers to them; it never sends audio or video uploads or
# chat requests, and of the alerts it reads only naila/alerts/all (hub/mqtt_control.py).
user naila-hub
topic read naila/devices/+/status
topic read naila/devices/+/signaling/offer
topic write naila/devices/+/signaling/answer
topic read naila/devices/+/signaling/ice
# Several hubs on one broker (issue 21): each publishes its retained presence (and will) and
# reads the others', to agree which hub answers an offer and to show the whole household.
topic readwrite naila/hubs/+/status
# Server status: the pattern lines above.
topic write naila/uploads/+/image
topic read naila/chat/+/reply
topic read naila/alerts/all
topic write naila/devices/+/command
topic read naila/devices/+/command/response

# ---- AI server (GPU box): the trusted centre ----------------------------------------------------
# It consumes device status, command responses, media, uploads and chat requests, so it may read
# the whole tree (also handy to watch traffic with its credentials). It writes only what a server
# sends: commands and media requests to devices, its retained status (and will), broadcasts,
# alerts and chat replies. It does not take part in device signaling.
# Several AI servers (issue 21): each one's presence (and will) and the timers and reminders it
# owns, retained; another server clears a record when it adopts or cancels that alarm. Only this
# user reads or writes them (no other user's lines reach naila/servers/ or naila/alarms/).
user naila-ai-server
topic read naila/#
topic write naila/devices/+/command
topic write naila/devices/+/media/request
topic write naila/server/status
topic write naila/servers/+/status
topic write naila/alarms/+/+
topic write naila/server/broadcast
topic write naila/alerts/#
topic write naila/chat/+/reply

# ---- Web service / app client (spec §8.7: bridges HTTP uploads to MQTT) ---------------------------
# Sessions are bare ids chosen by the app, so it reads the replies of every session it could
# have opened: one user for the app service, never handed to a browser.
user naila-app
topic write naila/uploads/+/image
topic write naila/uploads/+/audio
topic write naila/uploads/+/video
topic write naila/chat/+/request
topic read naila/chat/+/reply
topic read naila/alerts/#
"""
