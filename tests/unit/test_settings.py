import pytest
from pydantic import ValidationError

from eventix_operator.settings import Settings, mask_url


def test_plain_postgres_urls_get_the_psycopg_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://u:p@h/db")
    assert Settings().require_database_url() == "postgresql+psycopg://u:p@h/db"


def test_prefixed_variable_wins_over_plain(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://plain/db")
    monkeypatch.setenv("EVENTIX_DATABASE_URL", "postgresql://prefixed/db")
    assert Settings().require_database_url().endswith("//prefixed/db")


def test_missing_url_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("EVENTIX_DATABASE_URL", raising=False)
    with pytest.raises(RuntimeError, match="DATABASE_URL is not set"):
        Settings().require_database_url()


def test_password_is_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:hunter2@db/x")
    masked = Settings().masked()
    assert "hunter2" not in str(masked)
    assert masked["database_url"] == "postgresql+psycopg://app:***@db/x"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:hunter2@db/x", "postgresql://app:***@db/x"),
        (
            "postgresql://app:p%40ss@db/x?sslmode=require",
            "postgresql://app:***@db/x?sslmode=require",
        ),
        ("postgresql://app@db/x?password=hunter2", "postgresql://app@db/x?password=***"),
        (
            "postgresql://db/x?sslmode=verify-full&sslpassword=hunter2&application_name=a",
            "postgresql://db/x?sslmode=verify-full&sslpassword=***&application_name=a",
        ),
        (
            "postgresql://app:hunter2@h1:5432,h2:5432/db?target_session_attrs=read-write",
            "postgresql://app:***@h1:5432,h2:5432/db?target_session_attrs=read-write",
        ),
        (
            "postgresql:///db?host=/run/pg&PASSWORD=hunter2",
            "postgresql:///db?host=/run/pg&PASSWORD=***",
        ),
        ("postgresql://app@db/x", "postgresql://app@db/x"),
    ],
)
def test_every_password_of_a_url_is_masked(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_invalid_values_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENTIX_WORKER_CONCURRENCY", "0")
    with pytest.raises(ValidationError, match="worker_concurrency"):
        Settings()
