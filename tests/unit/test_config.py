"""Configuration: environment, TOML file, validation messages, and secrets that never print."""
from __future__ import annotations

import os

import pytest

from workers.cli import main
from workers.config import load_settings
from workers.runtime.errors import ConfigurationError


def test_environment_overrides_file_and_defaults(tmp_path, monkeypatch):
    cfg = tmp_path / "dr.toml"
    cfg.write_text('stamp = "from-file"\n[broker]\nhost = "mq.example"\nport = 5671\n')
    monkeypatch.setenv("APPSVC_DR_BROKER__PORT", "5673")
    settings = load_settings(cfg)
    assert (settings.stamp, settings.broker.host, settings.broker.port) == ("from-file", "mq.example", 5673)
    assert "APPSVC_DR_CONFIG_FILE" not in os.environ  # loading a file changes nothing for later loads
    assert load_settings().broker.host == "127.0.0.1"
    monkeypatch.setenv("APPSVC_DR_CONFIG_FILE", str(cfg))
    assert load_settings().stamp == "from-file"


def test_every_problem_is_named_without_echoing_values(monkeypatch):
    monkeypatch.setenv("APPSVC_DR_WORKER__PREFETCH", "lots")
    monkeypatch.setenv("APPSVC_DR_RETRY__BACKOFF", "[-1]")
    with pytest.raises(ConfigurationError) as err:
        load_settings()
    assert "worker.prefetch" in err.value.message and "retry.backoff" in err.value.message
    assert "lots" not in err.value.message and "APPSVC_DR_" in err.value.hint


def test_missing_config_file_is_a_configuration_error(tmp_path):
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_secrets_never_print(monkeypatch, capsys):
    monkeypatch.setenv("APPSVC_DR_BROKER__PASSWORD", "hunter2-CANARY")
    monkeypatch.setenv("APPSVC_DR_NOTIFY__SMTP_PASSWORD", "smtp-CANARY")
    monkeypatch.setenv("APPSVC_DR_NOTIFY__WEBHOOK_URLS", '["https://hooks.example/T0K3N-CANARY"]')
    settings = load_settings()
    assert "CANARY" not in repr(settings) and "CANARY" not in str(settings)
    assert main(["config", "check"]) == 0
    out = capsys.readouterr()
    assert "CANARY" not in out.out + out.err and "configuration ok" in out.out


def test_config_check_reports_what_is_wrong(monkeypatch, capsys):
    monkeypatch.setenv("APPSVC_DR_STORE__KIND", "tape")
    assert main(["config", "check"]) == 2
    err = capsys.readouterr().err
    assert "store.kind" in err and "how to fix" in err


def test_config_check_connect_says_why_the_broker_is_unreachable(monkeypatch, capsys):
    monkeypatch.setenv("APPSVC_DR_BROKER__PORT", "1")
    assert main(["config", "check", "--connect"]) == 1
    assert "cannot reach RabbitMQ" in capsys.readouterr().out


def test_site_components_from_a_comma_list_or_json_and_wrong_ones_named(monkeypatch):
    assert load_settings().components == ("secrets", "databases", "fileshare")
    monkeypatch.setenv("APPSVC_DR_COMPONENTS", "secrets, databases")
    assert load_settings().components == ("secrets", "databases")
    monkeypatch.setenv("APPSVC_DR_COMPONENTS", '["fileshare"]')
    assert load_settings().components == ("fileshare",)
    for bad in ("secrets,secrets", "tapes", ""):
        monkeypatch.setenv("APPSVC_DR_COMPONENTS", bad)
        with pytest.raises(ConfigurationError) as err:
            load_settings()
        assert "components" in err.value.message


def test_a_site_runs_and_declares_only_the_workers_of_its_components():
    from workers.app import BUILTIN, site_workers, topology_of
    assert site_workers(("secrets", "databases", "fileshare", "functions")) == sorted(BUILTIN)
    assert site_workers(("secrets", "databases", "fileshare")) == sorted(set(BUILTIN) - {"functions"})
    assert site_workers(("databases",)) == ["catalog", "db-backup", "mirror", "notifier", "upload"]
    declared = dict(topology_of([], ("secrets",)))
    assert sorted(declared) == ["catalog", "mirror", "notifier", "secrets", "upload"]
    assert "backup-due" in declared["secrets"]
