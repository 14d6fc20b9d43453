"""Kafka client settings (issue 15): security settings reach the producer as well as the
consumer, come from a file or the environment, keep their text, and never show."""

from __future__ import annotations

import logging

import pytest

from promptcal.commands.serve import _parse_option
from promptcal.core.errors import InvalidInputError
from promptcal.stream.clients import client_configs, load_client_settings, redacted
from promptcal.stream.settings import WorkerSettings

SECRET = "007-s3cr3t"


def _settings(**client) -> WorkerSettings:
    return WorkerSettings(
        bootstrap="broker:9093",
        group_id="g",
        output="/out",
        consumer_overrides={"session.timeout.ms": "6000"},
        client_settings=client,
    )


def test_file_then_environment(tmp_path):
    path = tmp_path / "client.properties"
    path.write_text(
        "# the cluster's settings\n"
        "security.protocol=SASL_SSL\n"
        "sasl.mechanism = SCRAM-SHA-512\n"
        "sasl.username=promptcal\n"
        "sasl.password=from-the-file\n"
        "\n"
        "ssl.ca.location=/etc/ssl/ca.pem\n"
    )
    environ = {"PROMPTCAL_KAFKA_SASL_PASSWORD": SECRET, "HOME": "/root", "PROMPTCAL_KAFKA_": "x"}
    settings = load_client_settings(path, environ)
    assert settings == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "promptcal",
        "sasl.password": SECRET,  # the environment wins
        "ssl.ca.location": "/etc/ssl/ca.pem",
    }
    assert load_client_settings(None, {"PROMPTCAL_KAFKA_SASL_PASSWORD": "1e3"}) == {
        "sasl.password": "1e3"
    }


@pytest.mark.parametrize("text", ["no equals sign", "Bad_Name=1", "=value"])
def test_malformed_files_are_refused(tmp_path, text):
    path = tmp_path / "bad.properties"
    path.write_text(text)
    with pytest.raises(InvalidInputError, match=r"bad\.properties:1"):
        load_client_settings(path, {})
    with pytest.raises(InvalidInputError, match=r"missing\.properties"):
        load_client_settings(tmp_path / "missing.properties", {})


def test_both_clients_get_the_security_settings():
    settings = _settings(
        **{"security.protocol": "SASL_SSL", "sasl.password": SECRET, "sasl.mechanism": "PLAIN"}
    )
    consumer, producer = client_configs(settings, **{"max.poll.interval.ms": 400_000})
    for config in (consumer, producer):
        assert config["security.protocol"] == "SASL_SSL"
        assert config["sasl.password"] == SECRET and config["sasl.mechanism"] == "PLAIN"
        assert config["bootstrap.servers"] == "broker:9093"
    assert consumer["group.id"] == "g" and consumer["session.timeout.ms"] == "6000"
    assert consumer["max.poll.interval.ms"] == 400_000 and "group.id" not in producer
    assert producer["acks"] == "all" and producer["message.timeout.ms"] == 10_000


def test_secrets_never_show(caplog):
    settings = _settings(**{"sasl.password": SECRET, "sasl.username": "promptcal"})
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("promptcal.test").info("settings %s / %r", settings, settings)
    assert SECRET not in repr(settings) and SECRET not in str(settings)
    assert SECRET not in caplog.text and SECRET not in settings.model_dump_json()
    assert settings.client_overrides()["sasl.password"] == SECRET
    shown = redacted({"sasl.password": SECRET, "ssl.key.password": "k", "client.id": "w1"})
    assert shown == {"sasl.password": "***", "ssl.key.password": "***", "client.id": "w1"}


@pytest.mark.parametrize(
    ("text", "value"),
    [("sasl.password=007", "007"), ("x=1e3", "1e3"), ("x=true", "true"), ("x=a=b", "a=b")],
)
def test_consumer_options_keep_their_text(text, value):
    """``007`` used to become the integer 7, ``1e3`` the float 1000.0."""
    assert _parse_option(text)[1] == value
