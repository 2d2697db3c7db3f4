"""The hub's web app: a browser device at ``/`` and a live dashboard at ``/dashboard`` (see routes)."""

from hub.web.routes import WebApp, add_web_app, device_tokens, read_access

__all__ = ["WebApp", "add_web_app", "device_tokens", "read_access"]
