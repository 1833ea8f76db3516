"""Highway's settings: one typed object read from environment variables and a `.env` file.

The environment variable names are Highway's public interface (see interface.md), so each
field is bound to its exact name with `validation_alias`. Build a `Settings` directly with
those names too, e.g. `Settings(HIGHWAY_AUDIO_MODE="pcm24k")`: pydantic ignores Python field
names passed to the constructor, because enabling them would also make the environment
source accept variables such as `voice` or `database_url`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as PydanticSettingsError

__all__ = ["ENV_NAMES", "Settings", "SettingsError", "load_settings", "redact_url"]

_E164 = re.compile(r"\+[1-9]\d{1,14}")


class SettingsError(Exception):
    """The settings are invalid. The message is one line, names the variables and holds no
    secret values, so the CLI can print it as is."""


def _url_check(schemes: tuple[str, ...], *, base: bool) -> Callable[[str], str]:
    """A validator for URLs with one of `schemes` and a host.

    A `base` URL gets paths appended ("/media-stream/..."), so it may not carry a query or
    fragment, and a trailing '/' is dropped so that the joined path has no '//'.
    """

    def check(value: str) -> str:
        parts = urlsplit(value)
        try:
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            raise ValueError("has an invalid port") from None
        if parts.scheme.lower() not in schemes or not parts.hostname:
            wanted = " or ".join(f"{scheme}://" for scheme in schemes)
            raise ValueError(f"must be a URL starting with {wanted} and naming a host")
        if base:
            if parts.query or parts.fragment:
                raise ValueError("must be a base URL, without '?' or '#' parts")
            value = urlunsplit(parts._replace(path=parts.path.rstrip("/")))
        return value

    return check


def _database_url(value: str) -> str:
    if value.startswith("postgres://"):
        # Heroku-style alias; SQLAlchemy and psycopg documentation use "postgresql://".
        value = "postgresql://" + value.removeprefix("postgres://")
    if value.startswith("sqlite:///"):
        if value == "sqlite:///":
            raise ValueError("must name a database file after sqlite:///")
        return value
    if value.startswith("postgresql://"):
        return value
    # The value itself is not repeated: a mistyped URL may still carry a password.
    raise ValueError("must start with sqlite:/// or postgresql://")


def _e164(value: str) -> str:
    if not _E164.fullmatch(value):
        raise ValueError("must be an E.164 phone number such as +14155550123")
    return value


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


HttpUrl = Annotated[str, AfterValidator(_url_check(("http", "https"), base=True))]
WsUrl = Annotated[str, AfterValidator(_url_check(("ws", "wss"), base=False))]
Seconds = Annotated[float, Field(gt=0)]


class Settings(BaseSettings):
    """Every setting Highway reads, with the defaults from interface.md."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        case_sensitive=True,
        # `OPENAI_API_KEY=` in a .env file means "unset" (offline mode), not an empty key.
        env_ignore_empty=True,
        # A .env file is often shared with other tools; their variables are not our business.
        extra="ignore",
        str_strip_whitespace=True,
    )

    # repr=False: a PostgreSQL URL usually carries a password.
    database_url: Annotated[str, AfterValidator(_database_url)] = Field(
        "sqlite:///highway.db",
        validation_alias="HIGHWAY_DATABASE_URL",
        repr=False,
    )
    api_key: SecretStr | None = Field(None, validation_alias="HIGHWAY_API_KEY")
    public_url: HttpUrl = Field("http://127.0.0.1:8000", validation_alias="HIGHWAY_PUBLIC_URL")

    openai_api_key: SecretStr | None = Field(None, validation_alias="OPENAI_API_KEY")
    openai_url: WsUrl = Field(
        "wss://api.openai.com/v1/realtime", validation_alias="HIGHWAY_OPENAI_URL"
    )
    openai_model: str = Field("gpt-realtime", min_length=1, validation_alias="HIGHWAY_OPENAI_MODEL")
    voice: str = Field("marin", min_length=1, validation_alias="HIGHWAY_VOICE")
    audio_mode: Annotated[Literal["pcmu", "pcm24k"], BeforeValidator(_lower)] = Field(
        "pcmu", validation_alias="HIGHWAY_AUDIO_MODE"
    )

    twilio_account_sid: str | None = Field(None, validation_alias="TWILIO_ACCOUNT_SID")
    twilio_auth_token: SecretStr | None = Field(None, validation_alias="TWILIO_AUTH_TOKEN")
    twilio_phone_number: Annotated[str, AfterValidator(_e164)] | None = Field(
        None, validation_alias="TWILIO_PHONE_NUMBER"
    )
    twilio_api_url: HttpUrl = Field(
        "https://api.twilio.com", validation_alias="HIGHWAY_TWILIO_API_URL"
    )

    # Durations are floats so tests can use sub-second limits.
    max_call_seconds: Seconds = Field(600, validation_alias="HIGHWAY_MAX_CALL_SECONDS")
    idle_timeout_seconds: Seconds = Field(15, validation_alias="HIGHWAY_IDLE_TIMEOUT_SECONDS")
    keepalive_seconds: Seconds = Field(10, validation_alias="HIGHWAY_KEEPALIVE_SECONDS")
    # How long any one database query may take before the request gets a 503.
    db_timeout_seconds: Seconds = Field(5, validation_alias="HIGHWAY_DB_TIMEOUT_SECONDS")
    max_concurrent_calls: int = Field(200, gt=0, validation_alias="HIGHWAY_MAX_CONCURRENT_CALLS")
    # How long live calls may go on after SIGTERM before they are closed with 1001.
    shutdown_grace_seconds: Seconds = Field(30, validation_alias="HIGHWAY_SHUTDOWN_GRACE_SECONDS")
    # OpenAI ends a Realtime session at 60 minutes; the bridge moves to a new one before.
    openai_session_seconds: Seconds = Field(
        55 * 60, validation_alias="HIGHWAY_OPENAI_SESSION_SECONDS"
    )
    # Server VAD: how loud counts as speech (0-1), audio kept from before it, and how much
    # silence ends a turn.
    vad_threshold: float = Field(0.5, ge=0, le=1, validation_alias="HIGHWAY_VAD_THRESHOLD")
    vad_prefix_padding_ms: int = Field(300, ge=0, validation_alias="HIGHWAY_VAD_PREFIX_PADDING_MS")
    vad_silence_ms: int = Field(500, gt=0, validation_alias="HIGHWAY_VAD_SILENCE_MS")

    # Logs: `auto` is readable lines on a terminal and JSON otherwise (Docker, systemd).
    log_format: Annotated[Literal["auto", "json", "console"], BeforeValidator(_lower)] = Field(
        "auto", validation_alias="HIGHWAY_LOG_FORMAT"
    )
    log_level: Annotated[Literal["debug", "info", "warning", "error"], BeforeValidator(_lower)] = (
        Field("info", validation_alias="HIGHWAY_LOG_LEVEL")
    )

    @property
    def offline(self) -> bool:
        """True when no OpenAI key is configured, so no call can reach the AI service."""
        return self.openai_api_key is None or not self.openai_api_key.get_secret_value()

    @property
    def twilio_configured(self) -> bool:
        """True when Highway can place calls: account SID, auth token and caller ID are set."""
        token = self.twilio_auth_token.get_secret_value() if self.twilio_auth_token else ""
        return bool(self.twilio_account_sid and token and self.twilio_phone_number)

    @property
    def uses_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite:///")


# Field name -> environment variable name, for error messages and test fixtures.
_ENV_NAME_OF_FIELD: dict[str, str] = {
    name: str(field.validation_alias) for name, field in Settings.model_fields.items()
}
ENV_NAMES: tuple[str, ...] = tuple(_ENV_NAME_OF_FIELD.values())


def _one_line(error: ValidationError) -> str:
    """Summarise a ValidationError as one line naming each bad variable, without inputs."""
    problems = []
    for detail in error.errors(include_input=False, include_url=False):
        loc = str(detail["loc"][0]) if detail["loc"] else "?"
        name = _ENV_NAME_OF_FIELD.get(loc, loc)
        message = detail["msg"].removeprefix("Value error, ")
        problems.append(f"invalid setting {name}: {message}")
    return "; ".join(problems)


def load_settings(env_file: str | Path | None = ".env") -> Settings:
    """Read and validate the settings from the environment and `env_file` (if it exists).

    Raises SettingsError with a one-line message on any invalid value.
    """
    try:
        return Settings(_env_file=env_file)  # type: ignore[call-arg]
    except ValidationError as error:
        raise SettingsError(_one_line(error)) from None
    except (PydanticSettingsError, OSError, UnicodeDecodeError) as error:
        # For example an unreadable .env file; the message is pydantic's or the OS's.
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise SettingsError(f"cannot read settings: {first_line}") from None


def redact_url(url: str) -> str:
    """`url` with any password replaced by '***', for logging a database URL."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))
