"""Typed settings (provider/settings.py): parsed and checked once, every bad variable named in
the one error that stops the start. In process: no server is needed to read an environment."""

from __future__ import annotations

import dataclasses

import pytest

from qr_oidc.provider.settings import DEFAULTS, ConfigError, Settings, load


def test_defaults_are_typed_and_frozen():
    settings = load(environ={})
    assert settings.port == 8000 and isinstance(settings.port, int)
    assert settings.long_poll_max == 25.0 and isinstance(settings.long_poll_max, float)
    assert settings.issuer == "http://127.0.0.1:8000"
    assert settings.demo is False
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.port = 1  # type: ignore[misc]
    # every variable an operator may set is listed with its default, the internal ones are not
    assert "DEMO" not in DEFAULTS and DEFAULTS["TICKET_TTL"] == 300


def test_environment_then_overrides():
    settings = load({"poll_interval": 5}, environ={"QR_OIDC_POLL_INTERVAL": "3",
                                                    "QR_OIDC_LONG_POLL_MAX": "2.5",
                                                    "QR_OIDC_ISSUER": "https://id.example/"})
    assert settings.poll_interval == 5
    assert settings.long_poll_max == 2.5
    assert settings.issuer == "https://id.example" and settings.secure


def test_every_bad_variable_gets_its_own_line():
    with pytest.raises(ConfigError) as caught:
        load(environ={"QR_OIDC_PORT": "eighty", "QR_OIDC_TICKET_TTL": "-1",
                      "QR_OIDC_RATE_TICKET_IP": "lots", "QR_OIDC_ISSUER": "http://id.example",
                      "QR_OIDC_EXPIRED_RETENTION": "60", "QR_OIDC_DEMO": "true"})
    lines = str(caught.value).splitlines()
    assert len(lines) == 5, lines
    for name in ("PORT", "TICKET_TTL", "RATE_TICKET_IP", "ISSUER", "EXPIRED_RETENTION"):
        assert sum(line.startswith(f"QR_OIDC_{name} ") for line in lines) == 1, (name, lines)
    assert not any("DEMO" in line for line in lines)  # internal: the environment cannot set it


@pytest.mark.parametrize("name, raw", [("WORKERS", "1.5"), ("KEY_REFRESH", "nan"),
                                       ("KEY_REFRESH", "inf"), ("POLL_INTERVAL", "0"),
                                       ("DATABASE_URL", "sqlite:///:memory:"),
                                       ("PASSWORD_COST", "11"), ("PASSWORD_COST", "21")])
def test_bad_values(name, raw):
    with pytest.raises(ConfigError, match=f"QR_OIDC_{name}"):
        load(environ={f"QR_OIDC_{name}": raw})


def test_unknown_override_is_an_error():
    with pytest.raises(ConfigError, match="QR_OIDC_NOPE is not a setting"):
        load({"NOPE": 1}, environ={})


def test_replace_keeps_the_rest():
    settings = load(environ={"QR_OIDC_PORT": "9000"}).replace(demo=True)
    assert isinstance(settings, Settings) and settings.demo and settings.port == 9000


def test_the_password_cost_takes_12_to_20():
    assert load(environ={}).password_cost == 15
    assert load(environ={"QR_OIDC_PASSWORD_COST": "12"}).password_cost == 12
    assert load(environ={"QR_OIDC_PASSWORD_COST": "20"}).password_cost == 20
