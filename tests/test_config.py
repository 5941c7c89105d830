"""Settings: defaults, parsing, one clear line for a bad value, `.env` under the real environment."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from chatapp.config import DEFAULT_SYSTEM_PROMPT, ConfigError, load_config
from tests.support.live_server import clean_environment

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_mean_demo_mode() -> None:
    config = load_config({})
    assert config.demo and config.max_message_chars == 8000 and config.system_prompt == DEFAULT_SYSTEM_PROMPT


def test_values_are_parsed() -> None:
    config = load_config(
        {
            "OPENAI_API_KEY": " sk-abc ",
            "OPENAI_BASE_URL": "http://localhost:11434/v1/",
            "CHATAPP_MAX_MESSAGE_CHARS": "500",
            "CHATAPP_IDLE_TIMEOUT": "2.5",
            "CHATAPP_SYSTEM_PROMPT": "Line one\\nLine two",
            "CHATAPP_DEBUG": "yes",
        }
    )
    assert config.openai_api_key == "sk-abc" and config.openai_base_url == "http://localhost:11434/v1"
    assert config.max_message_chars == 500 and config.idle_timeout == 2.5 and config.debug
    assert config.system_prompt == "Line one\nLine two" and not config.demo


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("CHATAPP_MAX_MESSAGE_CHARS", "lots", "whole number"),
        ("CHATAPP_MAX_MESSAGE_CHARS", "0", "between 1 and 100000"),
        ("CHATAPP_IDLE_TIMEOUT", "-1", "between"),
        ("OPENAI_BASE_URL", "localhost:11434", "http:// or https://"),
        ("CHATAPP_DEBUG", "maybe", "true or false"),
    ],
)
def test_a_bad_value_names_the_setting(name: str, value: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config({name: value})
    assert str(caught.value).startswith(name) and says in str(caught.value)


def test_secrets_never_show_in_repr() -> None:
    config = load_config({"OPENAI_API_KEY": "sk-secret-value", "SECRET_KEY": "also-secret"})
    assert "sk-secret-value" not in repr(config) and "also-secret" not in repr(config)


def _start(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    code = "from chatapp import create_app; app = create_app(); print(app.config['CHATAPP'].openai_model)"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env={**clean_environment(), "PYTHONPATH": str(ROOT), **env},
        capture_output=True, text=True, timeout=60,
    )


def test_bad_value_stops_start_up_with_one_line(tmp_path: Path) -> None:
    result = _start(tmp_path, {"CHATAPP_MAX_MESSAGE_CHARS": "lots"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "chatapp: configuration error: CHATAPP_MAX_MESSAGE_CHARS must be a whole number between 1 and 100000; got 'lots'"
    ]


def test_dotenv_is_read_and_the_real_environment_wins(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("OPENAI_MODEL=from-dotenv\n")
    assert _start(tmp_path, {}).stdout.strip() == "from-dotenv"
    assert _start(tmp_path, {"OPENAI_MODEL": "from-environment"}).stdout.strip() == "from-environment"


def test_the_console_script_refuses_a_bad_value_with_status_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "chatapp", str(ROOT / "hypercorn.toml")], cwd=tmp_path,
        env={**clean_environment(), "PYTHONPATH": str(ROOT), "OPENAI_BASE_URL": "not a url"},
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "chatapp: configuration error: OPENAI_BASE_URL must be an http:// or https:// URL, "
        "such as http://localhost:11434/v1; got 'not a url'"
    )


def test_every_setting_is_documented_in_env_example_and_readme() -> None:
    from chatapp.config import SETTINGS

    example = set(re.findall(r"^([A-Z_]+)=", (ROOT / ".env.example").read_text(), re.M))
    readme = set(re.findall(r"^\| `([A-Z_]+)` \|", (ROOT / "README.md").read_text(), re.M))
    assert example == set(SETTINGS)
    assert readme == set(SETTINGS)


def test_production_requires_a_real_secret_key() -> None:
    with pytest.raises(ConfigError, match="SECRET_KEY must be set"):
        load_config({"CHATAPP_ENV": "production"})
    with pytest.raises(ConfigError, match="at least 32 characters"):
        load_config({"CHATAPP_ENV": "production", "SECRET_KEY": "short"})
    assert load_config({"CHATAPP_ENV": "production", "SECRET_KEY": "k" * 32}).production


def test_the_database_is_ours_first_then_the_platforms_and_an_empty_line_is_unset() -> None:
    url = "postgresql://chat:hunter2@db.internal:5432/chatapp"
    assert load_config({}).database == "chatapp.db"
    assert load_config({"DATABASE_URL": url}).database == url
    assert load_config({"DATABASE_URL": url, "CHATAPP_DATABASE": "team.db"}).database == "team.db"
    assert load_config({"CHATAPP_DATABASE": "team.db", "CHATAPP_DATABASE_URL": url}).database == url
    assert load_config({"CHATAPP_DATABASE_URL": "", "CHATAPP_DATABASE": "team.db"}).database == "team.db"
    assert load_config({"CHATAPP_DATABASE_URL": "sqlite:///srv/chat.db"}).database == "sqlite:///srv/chat.db"
    for wrong in ("mysql://chat@db/chatapp", "postgresql://chat:hunter2@db.internal"):
        with pytest.raises(ConfigError) as refused:
            load_config({"CHATAPP_DATABASE_URL": wrong})
        assert str(refused.value).startswith("CHATAPP_DATABASE_URL must ") and "hunter2" not in str(refused.value)
    assert "hunter2" not in repr(load_config({"CHATAPP_DATABASE_URL": url}))


def test_the_replica_is_named_by_its_setting_else_by_its_host() -> None:
    import socket

    assert load_config({}).replica == socket.gethostname()
    assert load_config({"CHATAPP_REPLICA": ""}).replica == socket.gethostname()  # an empty line from .env.example
    assert load_config({"CHATAPP_REPLICA": " app-2 "}).replica == "app-2"
    # A label value and a log field: no quotes, spaces or line breaks that could forge either.
    for wrong in ('app"} 1', "app 2", "app\n2", "-app", "a" * 101):
        with pytest.raises(ConfigError, match="^CHATAPP_REPLICA must be a name"):
            load_config({"CHATAPP_REPLICA": wrong})
