"""Where a team's journal is: a SQLite file, or a PostgreSQL database by its address."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from selfdrive.sdk.errors import ConfigError

SCHEMES = ("postgresql", "postgres")


def is_url(value: str) -> bool:
    """Whether a ``journal`` setting is an address (a database server's; checked by
    :meth:`JournalUrl.check`) rather than a SQLite file path."""
    return "://" in value


@dataclass(frozen=True)
class JournalUrl:
    """A validated ``postgresql://`` journal address, without a password."""

    url: str
    user: str | None
    host: str | None
    port: int | None
    database: str

    def __str__(self) -> str:
        return self.url

    @classmethod
    def parse(cls, value: str, *, key: str = "journal") -> JournalUrl:
        """Check what a team wrote; a :class:`ConfigError` naming ``key`` says what is wrong.

        A password in the address is refused, masked in the message: it would sit in the
        file and in every error that names the journal.
        """
        found = cls.check(value)
        if isinstance(found, str):
            raise ConfigError(f"{key}: {found}")
        return found

    @classmethod
    def check(cls, value: str) -> JournalUrl | str:
        """The address, or what is wrong with it."""
        try:
            parts = urlsplit(value)
            port = parts.port
        except ValueError as exc:
            return (f"not a PostgreSQL address ({exc}); expected "
                    f"postgresql://user@host:port/database")
        if parts.scheme.lower() not in SCHEMES:
            return (f"{parts.scheme!r} is not a journal scheme; use "
                    f"postgresql://user@host/database or a SQLite file path")
        if parts.password is not None:
            shown = value.replace(f":{parts.password}@", ":***@", 1)
            return (f"{shown} holds a password; a password never goes in selfdrive.toml: "
                    f"give it in PGPASSWORD or a password file (~/.pgpass, or PGPASSFILE)")
        database = unquote(parts.path.lstrip("/"))
        if not database or "/" in database:
            return f"{value} names no database; expected postgresql://user@host:port/database"
        return cls(url=value, user=unquote(parts.username) if parts.username else None,
                   host=parts.hostname, port=port, database=database)
