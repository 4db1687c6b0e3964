"""Which databases may be configured for backup: a name becomes the backup's object name, so it must be one the
events and the store accept (contracts.envelope.DATABASE_PATTERN), refused when the worker starts otherwise."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from workers.engines.settings import DatabaseSettings


def test_the_app_service_databases_and_ordinary_names_are_accepted():
    assert DatabaseSettings().databases == ["appservice_hosting", "appservice_metering"]
    assert DatabaseSettings(databases=["db-1", "Hosting.2024", "x" * 123]).databases[2] == "x" * 123


@pytest.mark.parametrize("name", ["../appservice_hosting", "a/b", "a\\b", ".hidden", "", " ", "x" * 124,
                                  "tab\tname", "appservice hosting"])
def test_a_name_the_backup_cannot_carry_is_refused_with_the_rule(name):
    with pytest.raises(ValidationError) as err:
        DatabaseSettings(databases=["appservice_hosting", name])
    assert "cannot be backed up" in str(err.value) and "letters, digits" in str(err.value)


def test_names_must_be_unique():
    with pytest.raises(ValidationError, match="unique"):
        DatabaseSettings(databases=["db1", "db1"])
