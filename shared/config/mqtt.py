"""MQTT broker address and credentials, shared by all three deployables."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr

from shared.config.base import NailaSettings


class MqttSettings(NailaSettings):
    mqtt_host: str = Field("127.0.0.1", description="MQTT broker host")
    mqtt_port: Annotated[int, Field(ge=1, le=65535)] = Field(1883, description="MQTT broker port")
    mqtt_username: str | None = Field(None, description="MQTT user name (optional)")
    mqtt_password: SecretStr | None = Field(None, description="MQTT password (optional)")
    mqtt_tls: bool = Field(False, description="Use TLS to the broker")
    mqtt_ca_file: str | None = Field(None, description="CA certificate (PEM) of the broker; system CAs if unset")
    mqtt_cert_file: str | None = Field(None, description="Client certificate (PEM) for certificate auth (optional)")
    mqtt_key_file: str | None = Field(None, description="Private key of MQTT_CERT_FILE (optional)")
    # Off by default: without the host name check, any server holding a certificate from the same
    # CA could pose as the broker.
    mqtt_tls_insecure: bool = Field(
        False,
        description="Skip the broker host name check (the CA is still verified); only for a broker "
        "certificate whose names do not include MQTT_HOST",
    )
    mqtt_keepalive_s: Annotated[int, Field(ge=5, le=3600)] = Field(30, description="MQTT keep-alive, s")
