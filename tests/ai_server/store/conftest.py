"""Store fixtures: the control plane on mosquitto (test_plane_policies.py)."""

from __future__ import annotations

from tests.ai_server.control.conftest import control_server, mqtt_settings, watch  # noqa: F401  (fixtures)
