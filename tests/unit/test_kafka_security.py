"""R14: the bus's own Kafka clients authenticate with the SASL settings (docker-compose: SCRAM-SHA-512)."""

from __future__ import annotations

import pytest

from bus.exchange.kafka import consumer_config, producer_config
from bus.settings import Settings

SASL_ENV = {
    "BUS_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
    "BUS_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "BUS_KAFKA_SASL_USERNAME": "bus",
    "BUS_KAFKA_SASL_PASSWORD": "s3cret-pw",
}


def test_r14_sasl_settings_reach_every_librdkafka_config(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in SASL_ENV.items():
        monkeypatch.setenv(k, v)
    settings = Settings()
    expected = {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "bus",
        "sasl.password": "s3cret-pw",
    }
    assert settings.kafka_security() == expected
    for conf in (producer_config("k:9092", settings), consumer_config("k:9092", "g", settings)):
        assert expected.items() <= conf.items()
    assert "s3cret-pw" not in repr(settings) and "s3cret-pw" not in str(settings.model_dump())


def test_r14_without_sasl_settings_the_configs_are_unchanged() -> None:
    settings = Settings()
    assert settings.kafka_security() == {}
    assert settings.kafka_acls is False
    for conf in (producer_config("k:9092", settings), consumer_config("k:9092", "g", settings)):
        assert not {k for k in conf if k.startswith(("sasl.", "security."))}


def test_r14_an_unknown_security_protocol_is_refused_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUS_KAFKA_SECURITY_PROTOCOL", "SASL_PLAIN")  # a typo must not fall back to PLAINTEXT
    with pytest.raises(ValueError, match="security_protocol"):
        Settings()
