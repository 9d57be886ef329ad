import pytest
from pydantic import ValidationError

from eventix_operator.settings import Settings, mask_url, normalise_database_url


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


@pytest.mark.parametrize(
    ("url", "normalised"),
    [
        (
            "postgresql://app:pw@h1:5432,h2:5433/db?target_session_attrs=read-write",
            "postgresql+psycopg://app:pw@/db?host=h1,h2&port=5432,5433"
            "&target_session_attrs=read-write",
        ),
        ("postgres://app@h1,h2/db", "postgresql+psycopg://app@/db?host=h1,h2"),
        ("postgresql://app@h1,h2:6432/db", "postgresql+psycopg://app@/db?host=h1,h2&port=,6432"),
        (
            "postgresql://app@[::1]:5432,[::2]:5433/db",
            "postgresql+psycopg://app@/db?host=::1,::2&port=5432,5433",
        ),
        ("postgresql://app:pw@db:5432/x", "postgresql+psycopg://app:pw@db:5432/x"),
        ("postgresql+psycopg://app@/x?host=/run/pg", "postgresql+psycopg://app@/x?host=/run/pg"),
    ],
)
def test_libpq_multi_host_urls_become_sqlalchemy_urls(url: str, normalised: str) -> None:
    assert normalise_database_url(url) == normalised


def test_sqlalchemy_reads_a_multi_host_url_as_libpq_does() -> None:
    from sqlalchemy.dialects.postgresql.psycopg import dialect
    from sqlalchemy.engine import make_url

    url = make_url(normalise_database_url("postgresql://u:p@h1:5432,h2:5433/db?sslmode=require"))
    _, kwargs = dialect().create_connect_args(url)  # type: ignore[no-untyped-call]
    assert kwargs == {
        "host": "h1,h2", "port": "5432,5433", "dbname": "db", "user": "u", "password": "p",
        "sslmode": "require",
    }  # fmt: skip


def test_every_url_is_masked_in_the_effective_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:one@pooler/x")
    monkeypatch.setenv("EVENTIX_LISTEN_DATABASE_URL", "postgresql://app:two@db-rw/x")
    monkeypatch.setenv("EVENTIX_READ_DATABASE_URL", "postgresql://app:three@h1,h2/x")
    settings = Settings()
    masked = settings.masked()
    assert not [secret for secret in (":one@", ":two@", ":three@") if secret in str(masked)]
    assert masked["listen_database_url"] == "postgresql+psycopg://app:***@db-rw/x"
    assert masked["read_database_url"] == "postgresql+psycopg://app:***@/x?host=h1,h2"
    assert settings.listen_url() == "postgresql+psycopg://app:two@db-rw/x"


def test_without_a_listen_url_processes_listen_on_the_database_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://app@db/x")
    monkeypatch.delenv("EVENTIX_LISTEN_DATABASE_URL", raising=False)
    monkeypatch.delenv("EVENTIX_READ_DATABASE_URL", raising=False)
    settings = Settings()
    assert settings.listen_url() == settings.require_database_url()
    assert settings.read_url() is None


@pytest.mark.parametrize(
    ("value", "parsed"), [("auto", "auto"), ("false", False), ("0", False), ("true", True)]
)
def test_prepared_statements_setting(
    monkeypatch: pytest.MonkeyPatch, value: str, parsed: object
) -> None:
    monkeypatch.setenv("EVENTIX_DB_PREPARED_STATEMENTS", value)
    assert Settings().db_prepared_statements == parsed


def test_prepared_statements_setting_refuses_other_words(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENTIX_DB_PREPARED_STATEMENTS", "sometimes")
    with pytest.raises(ValidationError, match="db_prepared_statements"):
        Settings()


@pytest.mark.parametrize(
    ("size", "overflow", "cap", "limits"),
    [(10, 20, None, (10, 20)), (10, 20, 4, (4, 0)), (2, 20, 5, (2, 3)), (10, 0, 30, (10, 0))],
)
def test_the_connection_cap_bounds_pool_and_overflow(
    size: int, overflow: int, cap: int | None, limits: tuple[int, int]
) -> None:
    from eventix_operator.db.engine import pool_limits

    settings = Settings(db_pool_size=size, db_max_overflow=overflow, db_max_connections=cap)
    assert pool_limits(settings) == limits
