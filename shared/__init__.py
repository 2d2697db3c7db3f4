"""Code shared by every NAILA deployable: the gRPC contract, configuration, MQTT topics and models.

Nothing here imports a deployable (hub, ai_server, device_agent).
"""

__version__ = "0.1.0"
