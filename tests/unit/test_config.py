from __future__ import annotations

from pathlib import Path

import pytest

from nurture.config import find_config_file, load_settings, resolve_database_url
from nurture.errors import ConfigError, ProjectError


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("NURTURE_"):
            monkeypatch.delenv(name)


def test_config_is_found_in_a_parent_directory(tmp_path: Path) -> None:
    config = write(tmp_path / "nurture.toml", "")
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    assert find_config_file(nested) == config


def test_no_config_names_the_directory_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ProjectError, match=r"no nurture.toml in .* run `nurture init DIR`"):
        find_config_file(tmp_path)


def test_nurture_config_variable_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(tmp_path / "elsewhere.toml", "")
    monkeypatch.setenv("NURTURE_CONFIG", str(config))
    assert find_config_file(Path("/")) == config


def test_defaults_give_sqlite_in_the_project_directory(tmp_path: Path) -> None:
    config = load_settings(write(tmp_path / "nurture.toml", ""))
    assert config.database_url == f"sqlite:///{tmp_path / 'nurture.db'}"
    assert config.settings.smtp.host == ""
    assert config.outbox_dir == tmp_path / "outbox"


def test_relative_sqlite_path_is_taken_from_the_project(tmp_path: Path) -> None:
    assert resolve_database_url("sqlite:///data/n.db", tmp_path) == (
        f"sqlite:///{tmp_path / 'data' / 'n.db'}"
    )
    assert resolve_database_url("sqlite:////abs/n.db", tmp_path) == "sqlite:////abs/n.db"


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "nurture.toml", '[smtp]\nhost = "file-host"\nport = 25\n')
    monkeypatch.setenv("NURTURE_DATABASE_URL", "postgresql+psycopg://u:p@db:5432/n")
    monkeypatch.setenv("NURTURE_SMTP_HOST", "env-host")
    monkeypatch.setenv("NURTURE_SMTP_PORT", "2525")
    monkeypatch.setenv("NURTURE_SMTP_MAX_CONNECTIONS", "9")
    config = load_settings(path)
    assert config.database_url == "postgresql+psycopg://u:p@db:5432/n"
    assert config.settings.smtp.host == "env-host"
    assert config.settings.smtp.port == 2525
    assert config.settings.smtp.max_connections == 9


def test_bad_value_from_the_environment_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "nurture.toml", "")
    monkeypatch.setenv("NURTURE_SMTP_PORT", "smtp")
    with pytest.raises(ConfigError, match=r"^NURTURE_SMTP_PORT: .*integer.*'smtp'"):
        load_settings(path)


def test_bad_value_in_the_file_names_section_and_key(tmp_path: Path) -> None:
    path = write(tmp_path / "nurture.toml", "[smtp]\nport = 70000\n")
    with pytest.raises(ConfigError, match=r"nurture.toml: \[smtp\] port: .*65535"):
        load_settings(path)


def test_unknown_key_gets_a_did_you_mean(tmp_path: Path) -> None:
    path = write(tmp_path / "nurture.toml", '[smtp]\nhots = "x"\n')
    with pytest.raises(
        ConfigError, match=r"\[smtp\] hots: unknown setting \(did you mean 'host'\?\)"
    ):
        load_settings(path)


def test_unknown_section_gets_a_did_you_mean(tmp_path: Path) -> None:
    path = write(tmp_path / "nurture.toml", "[databse]\nurl = ''\n")
    with pytest.raises(
        ConfigError, match=r"unknown section \[databse\] \(did you mean 'database'\?\)"
    ):
        load_settings(path)


def test_invalid_toml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path / "nurture.toml", '[smtp]\nhost = "a"\nport = \n')
    with pytest.raises(ConfigError, match=r"invalid TOML: .*line 3"):
        load_settings(path)


def test_bad_default_timezone_is_named(tmp_path: Path) -> None:
    path = write(tmp_path / "nurture.toml", '[project]\ndefault_timezone = "Mars/Base"\n')
    with pytest.raises(ConfigError, match=r"\[project\] default_timezone: unknown timezone"):
        load_settings(path)


def test_unparsable_database_url_is_named(tmp_path: Path) -> None:
    path = write(tmp_path / "nurture.toml", '[database]\nurl = "pg sql://admin:Hunter2Pw@db/x"\n')
    with pytest.raises(ConfigError, match=r"\[database\] url: cannot parse") as caught:
        load_settings(path)
    assert "Hunter2Pw" not in str(caught.value)  # the URL may hold a password


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("[smtp]\npassword = 98765432123\n", "[smtp] password"),
        ("[api]\nkey = 98765432123\n", "[api] key"),
        ("[api.keys]\ncrm = 98765432123\n", "[api] keys"),
        ("[tracking]\nsecret = 98765432123\n", "[tracking] secret"),
        ("[sales]\nwebhook_url = 98765432123\n", "[sales] webhook_url"),
        (
            '[[webhooks]]\nname = "crm"\nurl = "https://crm.example/in"\n'
            'events = ["*"]\nsecret = 98765432123\n',
            "[[webhooks]] entry 1: secret",
        ),
        (
            '[[webhooks]]\nname = "crm"\nurl = 98765432123\nevents = ["*"]\nsecret = "s"\n',
            "[[webhooks]] entry 1: url",
        ),
    ],
)
def test_a_wrong_secret_is_named_but_never_printed(tmp_path: Path, text: str, names: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path / "nurture.toml", text))
    assert names in str(caught.value)
    assert "98765432123" not in str(caught.value)


def test_public_url_keeps_scheme_host_and_path_only() -> None:
    from nurture.config import public_url

    assert public_url("https://u:p@crm.example:8443/in/hook?token=t#f") == (
        "https://crm.example:8443/in/hook")  # fmt: skip
    assert public_url("http://[::1]:9/x?k=1") == "http://[::1]:9/x"
    assert public_url("http://[bad") == "(a URL that cannot be read)"


@pytest.mark.parametrize("where", ["file", "environment"])
def test_the_api_key_needs_16_characters_as_named_keys_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    if where == "file":
        path = write(tmp_path / "nurture.toml", '[api]\nkey = "a"\n')
    else:
        path = write(tmp_path / "nurture.toml", "")
        monkeypatch.setenv("NURTURE_API_KEY", "short-key")
    needs = r"(\[api\] key|NURTURE_API_KEY): a key needs at least 16 characters"
    with pytest.raises(ConfigError, match=needs) as caught:
        load_settings(path)
    assert "short-key" not in str(caught.value)
    monkeypatch.setenv("NURTURE_API_KEY", "a-long-enough-key-0123")
    assert load_settings(path).settings.api.named_keys() == {"default": "a-long-enough-key-0123"}
