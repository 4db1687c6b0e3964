"""T-SQL building and quoting, ODBC connection strings, settings and the engine factory."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from tests.fixtures import closed_port
from tests.sqlsim import Login, Simulator, app_service_server
from workers.engines import DatabaseSettings, PostgresEngine, SqlServerEngine, build_engine
from workers.engines import sqlserver_sql as tsql
from workers.engines.base import stripe_paths
from workers.engines.odbc import clean_text, connection_string, error_numbers
from workers.runtime.errors import ConfigurationError, PermanentError, TransientError

SECRET = "pa;ss}word=1"


def settings(**values: object) -> DatabaseSettings:
    base: dict[str, object] = dict(server="sql01", username="backup", password=SECRET)
    base.update(values)
    return DatabaseSettings(**base)


@pytest.mark.parametrize("name, quoted", [("db", "[db]"), ("a]b", "[a]]b]"), ("x]; DROP DATABASE y--",
                                                                              "[x]]; DROP DATABASE y--]"),
                                          ("[x]", "[[x]]]"), ("ünïcode db", "[ünïcode db]")])
def test_quote_name_escapes_closing_brackets_like_quotename(name, quoted) -> None:
    # Given / When / Then
    assert tsql.quote_name(name) == quoted


@pytest.mark.parametrize("value, quoted", [("/a/b.bak", "N'/a/b.bak'"), ("O'Brien.bak", "N'O''Brien.bak'"),
                                           ("''", "N''''''")])
def test_literals_double_single_quotes(value, quoted) -> None:
    assert tsql.literal(value) == quoted


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "x\x00", ""])
def test_literals_refuse_control_characters(bad) -> None:
    with pytest.raises(PermanentError):
        tsql.literal(bad)


def test_url_devices_are_refused_with_a_hint() -> None:
    for devices in (["/a.bak", "s3://h/b/a.bak"], ["https://h/b/a.bak"]):
        with pytest.raises(PermanentError, match="URL") as caught:
            tsql.devices_clause(devices)
        assert "DATABASE_DIR" in caught.value.hint


def test_stripe_names_keep_the_extension_for_paths_and_unc() -> None:
    assert stripe_paths(r"\\fs\share\db.bak", 2) == [r"\\fs\share\db.stripe1of2.bak", r"\\fs\share\db.stripe2of2.bak"]
    assert stripe_paths("/s/k/db", 2) == ["/s/k/db.stripe1of2", "/s/k/db.stripe2of2"]
    assert stripe_paths("/x.y/db.bak", 1) == ["/x.y/db.bak"]


def test_plan_moves_uses_linux_separators_and_sanitises_file_names() -> None:
    # Given a Linux target directory and a database name that is not a safe file name
    files = [{"LogicalName": "data", "PhysicalName": "/var/opt/mssql/data/d.mdf", "Type": "D"},
             {"LogicalName": "fs", "PhysicalName": "/var/opt/mssql/fs", "Type": "S"},
             {"LogicalName": "log", "PhysicalName": "", "Type": "L", "FileID": 2}]
    # When / Then
    assert tsql.plan_moves("a/b:c", files, "/restore/", None) == [
        ("data", "/restore/a_b_c_data.mdf"), ("fs", "/restore/a_b_c_fs"), ("log", "/restore/a_b_c_log.ldf")]
    assert tsql.plan_moves("db", files, None, "/logs") == [("log", "/logs/db_log.ldf")]


def test_odbc_texts_are_cleaned_and_numbered() -> None:
    text = ("[42000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Cannot open backup device 'x'. "
            "Operating system error 5(Access is denied.). (3201) (SQLExecDirectW); [42000] [Microsoft][ODBC Driver "
            "18 for SQL Server][SQL Server]BACKUP DATABASE is terminating abnormally. (3013)")
    assert error_numbers(text) == [3201, 3013]
    assert clean_text(text) == ("Cannot open backup device 'x'. Operating system error 5(Access is denied.). "
                                "(3201); BACKUP DATABASE is terminating abnormally. (3013)")


def test_connection_string_braces_values_that_need_it() -> None:
    assert connection_string([("DRIVER", "FreeTDS"), ("UID", "a"), ("PWD", "x}y;z"), ("X", None)],
                             always_brace=["DRIVER"]) == "DRIVER={FreeTDS};UID=a;PWD={x}}y;z}"


def test_driver_18_connection_string(tmp_path) -> None:
    # Given the defaults with strict encryption and a login whose password needs braces
    server = app_service_server(tmp_path)
    server.logins["backup"] = Login("backup", SECRET, sysadmin=True)
    engine = SqlServerEngine(settings(encrypt="strict", port=14330), connect=Simulator(server).connect)
    # When / Then the string is braced where needed and an ODBC parser reads the password back intact
    engine.check("appservice_hosting")
    assert engine._connection_string == (
        "DRIVER={ODBC Driver 18 for SQL Server};SERVER=tcp:sql01,14330;DATABASE=master;Encrypt=strict;"
        "TrustServerCertificate=no;APP=appservice-dr;UID=backup;PWD={pa;ss}}word=1}")
    assert engine.server == "sql01,14330"


def test_freetds_named_instance_and_auth_variants() -> None:
    freetds = SqlServerEngine(settings(driver="FreeTDS", encrypt="no", trust_server_certificate=True))
    assert freetds._connection_string == ("DRIVER={FreeTDS};SERVER=sql01;PORT=1433;DATABASE=master;TDS_Version=7.4;"
                                          "ClientCharset=UTF-8;Encryption=request;UID=backup;PWD={pa;ss}}word=1}")
    kerberos = SqlServerEngine(settings(server=r"sql01\DR", auth="kerberos", username=None, password=None))
    assert "SERVER={sql01\\DR}" not in kerberos._connection_string
    assert "SERVER=sql01\\DR;" in kerberos._connection_string
    assert "Trusted_Connection=yes" in kerberos._connection_string
    assert kerberos.server == "sql01\\DR"
    msi = SqlServerEngine(settings(auth="entra-msi", username="client-id", password=None))
    assert msi._connection_string.endswith("Authentication=ActiveDirectoryMsi;UID=client-id")
    entra = SqlServerEngine(settings(auth="entra-password"))
    assert "UID=backup;PWD={pa;ss}}word=1};Authentication=ActiveDirectoryPassword" in entra._connection_string


@pytest.mark.parametrize("values, match", [(dict(driver="FreeTDS", auth="entra-msi"), "FreeTDS"),
                                           (dict(username=None), "username")])
def test_impossible_auth_combinations_fail_at_start_up(values, match) -> None:
    with pytest.raises(ConfigurationError, match=match):
        SqlServerEngine(settings(**values))


def test_real_pyodbc_with_freetds_to_a_closed_port_is_transient() -> None:
    # Given the real FreeTDS driver and a port nobody listens on
    engine = build_engine(settings(driver="FreeTDS", port=closed_port(), server="127.0.0.1", timeout=3))
    # When / Then the refused connection is worth retrying, and the password is not in the message
    with pytest.raises(TransientError) as caught:
        engine.check("master")
    assert SECRET not in caught.value.message + caught.value.hint


def test_missing_odbc_driver_fails_at_start_up() -> None:
    # Given a driver that is not installed here
    with pytest.raises(ConfigurationError, match="not installed") as caught:
        build_engine(settings(driver="ODBC Driver 99 for SQL Server"))
    assert "APPSVC_DR_DATABASE__DRIVER" in caught.value.hint


def test_factory_builds_the_configured_engine(tmp_path) -> None:
    sim = Simulator(app_service_server(tmp_path))
    assert isinstance(build_engine(settings(), connect=sim.connect), SqlServerEngine)
    assert isinstance(build_engine(settings(engine="postgres", username="postgres")), PostgresEngine)
    with pytest.raises(ConfigurationError, match="pg_dump"):
        build_engine(settings(engine="postgres", pg_dump="/nonexistent/pg_dump"))


def test_settings_defaults_validation_and_secret_redaction() -> None:
    # Given defaults
    default = DatabaseSettings()
    assert default.databases == ["appservice_hosting", "appservice_metering"]
    assert (default.engine, default.effective_port) == ("sqlserver", 1433)
    assert default.copy_only and default.verify and default.compression
    assert DatabaseSettings(engine="postgres").effective_driver == "PostgreSQL Unicode"
    # When / Then invalid values are refused and secrets never print
    for bad in (dict(max_transfer_size=100000), dict(stats_percent=0), dict(stripes=65), dict(databases=[]),
                dict(databases=["a", "a"]), dict(s3_access_key="AK"), dict(url_max_transfer_size=5242880),
                dict(log_backup_max_age_minutes=-1), dict(unknown=1)):
        with pytest.raises(ValidationError):
            DatabaseSettings(**bad)
    shown = repr(settings())
    assert SECRET not in shown
