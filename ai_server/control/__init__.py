"""The AI server's MQTT control plane (spec §3.2, §5, §8.5-8.9, §9.1, §15.2).

:class:`~ai_server.control.plane.ControlPlane` (plane.py, the adapter) takes every message from the
broker link through the gate (inbound.py: rate limit, size, schema, topic agreement) to its part, one
module each: presence (server status, broadcast), registry (devices), commands, media (snapshots,
clips), uploads, chat, speech (speaking on a device through the hub), alerts; media_check.py checks
media content; errors.py holds what callers catch. ai_server/assembly.py builds them.

Nothing is re-exported here: importing one part (say ``ai_server.control.errors``) must not import
the plane and, through it, every other part. Import from the module that defines a name.
"""
