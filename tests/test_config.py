"""Settings: the names and defaults of interface.md, sources, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from highway.config import ENV_NAMES, Settings, SettingsError, load_settings, redact_url

# interface.md's settings table: variable -> (Settings attribute, default).
DEFAULTS = {
    "HIGHWAY_DATABASE_URL": ("database_url", "sqlite:///highway.db"),
    "HIGHWAY_API_KEY": ("api_key", None),
    "HIGHWAY_PUBLIC_URL": ("public_url", "http://127.0.0.1:8000"),
    "OPENAI_API_KEY": ("openai_api_key", None),
    "HIGHWAY_OPENAI_URL": ("openai_url", "wss://api.openai.com/v1/realtime"),
    "HIGHWAY_OPENAI_MODEL": ("openai_model", "gpt-realtime"),
    "HIGHWAY_VOICE": ("voice", "marin"),
    "HIGHWAY_AUDIO_MODE": ("audio_mode", "pcmu"),
    "TWILIO_ACCOUNT_SID": ("twilio_account_sid", None),
    "TWILIO_AUTH_TOKEN": ("twilio_auth_token", None),
    "TWILIO_PHONE_NUMBER": ("twilio_phone_number", None),
    "HIGHWAY_TWILIO_API_URL": ("twilio_api_url", "https://api.twilio.com"),
    "HIGHWAY_MAX_CALL_SECONDS": ("max_call_seconds", 600),
    "HIGHWAY_IDLE_TIMEOUT_SECONDS": ("idle_timeout_seconds", 15),
    "HIGHWAY_KEEPALIVE_SECONDS": ("keepalive_seconds", 10),
    "HIGHWAY_MAX_CONCURRENT_CALLS": ("max_concurrent_calls", 200),
}
# Settings Highway adds to interface.md's (documented in the README).
ADDED = {
    "HIGHWAY_DB_TIMEOUT_SECONDS": ("db_timeout_seconds", 5),
    "HIGHWAY_SHUTDOWN_GRACE_SECONDS": ("shutdown_grace_seconds", 30),
    "HIGHWAY_OPENAI_SESSION_SECONDS": ("openai_session_seconds", 3300),
    "HIGHWAY_VAD_THRESHOLD": ("vad_threshold", 0.5),
    "HIGHWAY_VAD_PREFIX_PADDING_MS": ("vad_prefix_padding_ms", 300),
    "HIGHWAY_VAD_SILENCE_MS": ("vad_silence_ms", 500),
    "HIGHWAY_LOG_FORMAT": ("log_format", "auto"),
    "HIGHWAY_LOG_LEVEL": ("log_level", "info"),
}

SECRET_VALUES = {
    "HIGHWAY_API_KEY": "hw-key-4f1d9c",
    "OPENAI_API_KEY": "sk-test-8a7b6c5d",
    "TWILIO_AUTH_TOKEN": "twilio-token-3e2f1a",
    "HIGHWAY_DATABASE_URL": "postgresql://highway:pg-pass-9z8y@db.example:5432/highway",
}


def test_the_settings_are_those_of_interface_md_and_the_documented_additions():
    assert set(ENV_NAMES) == set(DEFAULTS) | set(ADDED)


def test_defaults_match_interface_md(clean_env: Path):
    settings = load_settings()

    for name, (attribute, default) in (DEFAULTS | ADDED).items():
        assert getattr(settings, attribute) == default, name
    assert settings.offline
    assert settings.uses_sqlite


def test_environment_overrides_every_default(clean_env: Path, monkeypatch: pytest.MonkeyPatch):
    values = {
        "HIGHWAY_DATABASE_URL": "postgresql://u@db.example:5432/highway",
        "HIGHWAY_API_KEY": "hw-key",
        "HIGHWAY_PUBLIC_URL": "https://highway.example",
        "OPENAI_API_KEY": "sk-test",
        "HIGHWAY_OPENAI_URL": "ws://127.0.0.1:9000/v1/realtime",
        "HIGHWAY_OPENAI_MODEL": "gpt-realtime-mini",
        "HIGHWAY_VOICE": "cedar",
        "HIGHWAY_AUDIO_MODE": "pcm24k",
        "TWILIO_ACCOUNT_SID": "AC0123456789abcdef0123456789abcdef",
        "TWILIO_AUTH_TOKEN": "token",
        "TWILIO_PHONE_NUMBER": "+14155550123",
        "HIGHWAY_TWILIO_API_URL": "http://127.0.0.1:9001",
        "HIGHWAY_MAX_CALL_SECONDS": "30",
        "HIGHWAY_IDLE_TIMEOUT_SECONDS": "0.5",
        "HIGHWAY_KEEPALIVE_SECONDS": "2",
        "HIGHWAY_MAX_CONCURRENT_CALLS": "7",
        "HIGHWAY_DB_TIMEOUT_SECONDS": "1.5",
        "HIGHWAY_SHUTDOWN_GRACE_SECONDS": "4",
        "HIGHWAY_OPENAI_SESSION_SECONDS": "60",
        "HIGHWAY_VAD_THRESHOLD": "0.7",
        "HIGHWAY_VAD_PREFIX_PADDING_MS": "200",
        "HIGHWAY_VAD_SILENCE_MS": "650",
        "HIGHWAY_LOG_FORMAT": "console",
        "HIGHWAY_LOG_LEVEL": "warning",
    }
    assert set(values) == set(DEFAULTS) | set(ADDED)  # every setting is exercised
    for name, value in values.items():
        monkeypatch.setenv(name, value)

    settings = load_settings()

    assert settings.database_url == "postgresql://u@db.example:5432/highway"
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "hw-key"
    assert settings.public_url == "https://highway.example"
    assert settings.openai_api_key is not None
    assert settings.openai_api_key.get_secret_value() == "sk-test"
    assert settings.openai_url == "ws://127.0.0.1:9000/v1/realtime"
    assert settings.openai_model == "gpt-realtime-mini"
    assert settings.voice == "cedar"
    assert settings.audio_mode == "pcm24k"
    assert settings.twilio_account_sid == "AC0123456789abcdef0123456789abcdef"
    assert settings.twilio_auth_token is not None
    assert settings.twilio_auth_token.get_secret_value() == "token"
    assert settings.twilio_phone_number == "+14155550123"
    assert settings.twilio_api_url == "http://127.0.0.1:9001"
    assert settings.max_call_seconds == 30
    assert settings.idle_timeout_seconds == 0.5
    assert settings.keepalive_seconds == 2
    assert settings.max_concurrent_calls == 7
    assert settings.db_timeout_seconds == 1.5
    assert settings.shutdown_grace_seconds == 4
    assert settings.openai_session_seconds == 60
    assert settings.vad_threshold == 0.7
    assert settings.vad_prefix_padding_ms == 200
    assert settings.vad_silence_ms == 650
    assert settings.log_format == "console"
    assert settings.log_level == "warning"
    assert not settings.offline
    assert not settings.uses_sqlite


def test_dotenv_file_is_read(clean_env: Path):
    (clean_env / ".env").write_text(
        "# comments and unrelated variables are fine\n"
        "SOME_OTHER_TOOL=1\n"
        "HIGHWAY_VOICE=cedar\n"
        "export HIGHWAY_AUDIO_MODE=pcm24k\n"
        "OPENAI_API_KEY=sk-from-dotenv\n"
    )

    settings = load_settings()

    assert settings.voice == "cedar"
    assert settings.audio_mode == "pcm24k"
    assert not settings.offline


def test_environment_beats_dotenv(clean_env: Path, monkeypatch: pytest.MonkeyPatch):
    (clean_env / ".env").write_text("HIGHWAY_VOICE=cedar\n")
    monkeypatch.setenv("HIGHWAY_VOICE", "alloy")

    assert load_settings().voice == "alloy"


def test_dotenv_can_be_skipped(clean_env: Path):
    (clean_env / ".env").write_text("HIGHWAY_VOICE=cedar\n")

    assert load_settings(env_file=None).voice == "marin"


def test_empty_openai_key_means_offline(clean_env: Path):
    # A template .env often carries "OPENAI_API_KEY=" with nothing after it.
    (clean_env / ".env").write_text("OPENAI_API_KEY=\n")

    settings = load_settings()

    assert settings.openai_api_key is None
    assert settings.offline


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("HIGHWAY_PUBLIC_URL", "https://highway.example/", "https://highway.example"),
        ("HIGHWAY_PUBLIC_URL", "https://highway.example/base//", "https://highway.example/base"),
        ("HIGHWAY_TWILIO_API_URL", "http://127.0.0.1:9001/", "http://127.0.0.1:9001"),
        ("HIGHWAY_OPENAI_URL", "wss://ai.example/realtime?v=2", "wss://ai.example/realtime?v=2"),
        ("HIGHWAY_DATABASE_URL", "postgres://u:p@h/db", "postgresql://u:p@h/db"),
        ("HIGHWAY_AUDIO_MODE", "PCM24K", "pcm24k"),
        ("HIGHWAY_VOICE", "  cedar \n", "cedar"),
    ],
)
def test_values_are_normalised(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
):
    monkeypatch.setenv(name, value)

    attribute = DEFAULTS[name][0]
    assert getattr(load_settings(), attribute) == expected


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("HIGHWAY_DATABASE_URL", "mysql://u:p@h/db", "must start with sqlite:/// or postgresql://"),
        ("HIGHWAY_DATABASE_URL", "highway.db", "must start with sqlite:/// or postgresql://"),
        ("HIGHWAY_DATABASE_URL", "sqlite:///", "must name a database file"),
        ("HIGHWAY_PUBLIC_URL", "highway.example", "must be a URL starting with http://"),
        ("HIGHWAY_PUBLIC_URL", "wss://highway.example", "must be a URL starting with http://"),
        ("HIGHWAY_TWILIO_API_URL", "https://", "naming a host"),
        ("HIGHWAY_PUBLIC_URL", "https://highway.example:80a", "invalid port"),
        ("HIGHWAY_PUBLIC_URL", "https://highway.example/?x=1", "without '?' or '#'"),
        ("HIGHWAY_OPENAI_URL", "https://api.openai.com", "must be a URL starting with ws://"),
        ("HIGHWAY_OPENAI_MODEL", "   ", "at least 1 character"),
        ("HIGHWAY_AUDIO_MODE", "mulaw", "Input should be 'pcmu' or 'pcm24k'"),
        ("TWILIO_PHONE_NUMBER", "4155550123", "E.164"),
        ("TWILIO_PHONE_NUMBER", "+1 415 555 0123", "E.164"),
        ("HIGHWAY_MAX_CALL_SECONDS", "0", "greater than 0"),
        ("HIGHWAY_IDLE_TIMEOUT_SECONDS", "-1", "greater than 0"),
        ("HIGHWAY_KEEPALIVE_SECONDS", "ten", "valid number"),
        ("HIGHWAY_MAX_CONCURRENT_CALLS", "2.5", "valid integer"),
        ("HIGHWAY_MAX_CONCURRENT_CALLS", "0", "greater than 0"),
    ],
)
def test_bad_value_gives_one_line_naming_the_variable(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str, reason: str
):
    monkeypatch.setenv(name, value)

    with pytest.raises(SettingsError) as caught:
        load_settings()

    message = str(caught.value)
    assert message.startswith(f"invalid setting {name}: ")
    assert reason in message
    assert "\n" not in message
    assert "input_value" not in message  # pydantic's own rendering would echo the value


def test_audio_mode_message_is_the_documented_one(clean_env: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HIGHWAY_AUDIO_MODE", "opus")

    with pytest.raises(SettingsError) as caught:
        load_settings()

    assert str(caught.value) == (
        "invalid setting HIGHWAY_AUDIO_MODE: Input should be 'pcmu' or 'pcm24k'"
    )


def test_bad_value_in_dotenv_names_the_variable(clean_env: Path):
    (clean_env / ".env").write_text("HIGHWAY_MAX_CONCURRENT_CALLS=lots\n")

    with pytest.raises(SettingsError, match=r"^invalid setting HIGHWAY_MAX_CONCURRENT_CALLS: "):
        load_settings()


def test_several_bad_values_share_one_line(clean_env: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HIGHWAY_AUDIO_MODE", "opus")
    monkeypatch.setenv("HIGHWAY_MAX_CALL_SECONDS", "-5")

    with pytest.raises(SettingsError) as caught:
        load_settings()

    message = str(caught.value)
    assert "\n" not in message
    problems = message.split("; ")
    assert len(problems) == 2
    assert any(p.startswith("invalid setting HIGHWAY_AUDIO_MODE: ") for p in problems)
    assert any(p.startswith("invalid setting HIGHWAY_MAX_CALL_SECONDS: ") for p in problems)


def test_undecodable_dotenv_is_a_settings_error(clean_env: Path):
    (clean_env / ".env").write_bytes(b"HIGHWAY_VOICE=\xff\xfe\n")

    with pytest.raises(SettingsError, match=r"^cannot read settings: ") as caught:
        load_settings()
    assert "\n" not in str(caught.value)


def _set_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRET_VALUES.items():
        monkeypatch.setenv(name, value)


def _secret_parts() -> list[str]:
    return [*SECRET_VALUES.values(), "pg-pass-9z8y"]


def test_secrets_stay_out_of_repr_and_str(clean_env: Path, monkeypatch: pytest.MonkeyPatch):
    _set_secrets(monkeypatch)

    settings = load_settings()

    assert settings.api_key is not None  # the secrets really were loaded
    for text in (repr(settings), str(settings)):
        for secret in _secret_parts():
            assert secret not in text


def test_secrets_stay_out_of_error_messages(clean_env: Path, monkeypatch: pytest.MonkeyPatch):
    _set_secrets(monkeypatch)
    monkeypatch.setenv("HIGHWAY_AUDIO_MODE", "opus")
    # A mistyped scheme: the URL still carries the password.
    monkeypatch.setenv("HIGHWAY_DATABASE_URL", "postgressql://highway:pg-pass-9z8y@db/highway")

    with pytest.raises(SettingsError) as caught:
        load_settings()

    message = str(caught.value)
    assert "HIGHWAY_DATABASE_URL" in message
    for secret in _secret_parts():
        assert secret not in message
    assert caught.value.__cause__ is None  # pydantic's error (with inputs) is not chained


def test_settings_can_be_built_with_the_environment_names(clean_env: Path):
    settings = Settings(HIGHWAY_VOICE="cedar", OPENAI_API_KEY="sk-x")  # type: ignore[call-arg]

    assert settings.voice == "cedar"
    assert not settings.offline


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:secret@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("sqlite:///highway.db", "sqlite:///highway.db"),
    ],
)
def test_redact_url_hides_only_the_password(url: str, expected: str):
    assert redact_url(url) == expected
