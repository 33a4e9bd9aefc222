import logging
from pathlib import Path

import pytest

from poold.config import ConfigError, Secret, load, parse_duration, resolve_config_path

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    path.chmod(0o600)
    return path


MINIMAL = '[library]\nroot = "lib"\nmanifest = "m.json"\n'


def test_example_config_loads_and_documents_every_key():
    config = load(REPO / "config.example.toml")
    assert config.library.root == Path.home() / "Music" / "POOL"
    assert config.requests.cooldown == 7 * 86400
    assert config.watch.settle_seconds == 10
    text = (REPO / "config.example.toml").read_text()
    from poold.config import _Parser

    for section, keys in _Parser.SECTIONS.items():
        assert f"[{section}]" in text
        for key in keys:
            assert f"{key} =" in text or f"# {key} =" in text, f"[{section}] {key} is not documented"


def test_defaults_and_relative_paths(tmp_path):
    config = load(write(tmp_path, MINIMAL))
    assert config.library.root == tmp_path / "lib"
    assert config.library.manifest == tmp_path / "m.json"
    assert ".mp3" in config.library.extensions and ".mp4" in config.library.extensions
    assert config.pool.base_url == "https://api.promoonly.com"
    assert config.requests.batch_size == 50 and config.requests.dry_run is False
    assert config.pool.api_key is None


def test_home_expands(tmp_path):
    config = load(write(tmp_path, '[library]\nroot = "~/x"\nmanifest = "m.json"\n'))
    assert config.library.root == Path.home() / "x"


@pytest.mark.parametrize("text, fragments", [
    ('[library]\nroot = "lib"\n', ["[library]", "manifest", "missing required"]),
    (MINIMAL + "colour = 3\n", [":4:", "[library] colour", "unknown key"]),
    (MINIMAL + "[requests]\nbatch_size = \"ten\"\n", [":5:", "[requests] batch_size", "whole number"]),
    (MINIMAL + "[requests]\nbatch_size = 0\n", ["batch_size", "at least 1"]),
    (MINIMAL + "[requests]\ndry_run = 1\n", ["dry_run", "true or false"]),
    (MINIMAL + "[requests]\ncooldown = \"soon\"\n", ["cooldown", "duration"]),
    (MINIMAL + "[pool]\nuserid = \"abc\"\n", ["[pool] userid", "whole number"]),
    (MINIMAL + "[pool]\napi_key = \"k\"\n", ["api_key and api_secret go together"]),
    (MINIMAL + "[pool]\nbase_url = \"http://api.example.com\"\n", ["base_url", "https://"]),
    (MINIMAL + "[watch]\nmode = \"fast\"\n", ["[watch] mode"]),
    (MINIMAL + "[guard]\nmax_missing_fraction = 2\n", ["max_missing_fraction"]),
    (MINIMAL + "[nonsense]\nx = 1\n", ["unknown section [nonsense]"]),
    ("[library\nroot=", ["not valid TOML"]),
])
def test_errors_name_file_line_and_key(tmp_path, text, fragments):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load(path)
    message = str(error.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load(tmp_path / "nope.toml")


def test_loopback_http_is_allowed(tmp_path):
    config = load(write(tmp_path, MINIMAL + '[pool]\nbase_url = "http://127.0.0.1:8080/"\n'))
    assert config.pool.base_url == "http://127.0.0.1:8080"


def test_secret_sources_in_order(tmp_path, monkeypatch):
    (tmp_path / "key").write_text("key-from-file\n")
    (tmp_path / "key").chmod(0o600)
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "api_secret").write_text("secret-from-credential\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    path = write(tmp_path, MINIMAL + '[pool]\nuserid = 5\napi_key_file = "key"\ntoken = "inline-token"\n')
    config = load(path)
    assert config.pool.api_key.reveal() == "key-from-file"
    assert config.pool.api_secret.reveal() == "secret-from-credential"
    assert config.pool.token.reveal() == "inline-token"
    monkeypatch.setenv("POOLD_TOKEN", "env-token")
    assert load(path).pool.token.reveal() == "env-token"


def test_secrets_never_show_in_repr(tmp_path):
    config = load(write(tmp_path, MINIMAL + '[pool]\nuserid = 5\napi_key = "very-secret-key"\napi_secret = "very-secret-secret"\n'))
    assert "very-secret" not in repr(config)
    assert repr(Secret("abcdefgh")) == "Secret('***')" and "abcdefgh" not in f"{Secret('abcdefgh')}"


def test_warns_when_secret_file_readable_by_others(tmp_path, caplog):
    path = write(tmp_path, MINIMAL + '[pool]\nuserid = 5\ntoken = "some-token-value"\n')
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        load(path)
    assert "other users can read it" in caplog.text
    caplog.clear()
    path.chmod(0o600)
    with caplog.at_level(logging.WARNING):
        load(path)
    assert "other users can read it" not in caplog.text


def test_config_path_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("POOLD_CONFIG", str(tmp_path / "env.toml"))
    assert resolve_config_path("explicit.toml") == Path("explicit.toml")
    assert resolve_config_path(None) == tmp_path / "env.toml"
    monkeypatch.delenv("POOLD_CONFIG")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert resolve_config_path(None) == tmp_path / "xdg" / "poold" / "config.toml"


@pytest.mark.parametrize("value, seconds", [(30, 30.0), ("10s", 10.0), ("30m", 1800.0), ("6h", 21600.0),
                                            ("7d", 604800.0), ("1.5h", 5400.0), ("soon", None), (-1, None), (True, None)])
def test_parse_duration(value, seconds):
    assert parse_duration(value) == seconds


def test_secret_files_are_read_when_first_needed(tmp_path):
    """A missing or empty key file does not stop the config loading (a plain audit needs
    no secret); revealing it raises ConfigError naming the key, its line and the file."""
    path = write(tmp_path, MINIMAL + '[pool]\nuserid = 5\napi_key_file = "key"\napi_secret_file = "secret"\n')
    (tmp_path / "secret").write_text("\n")
    config = load(path)
    assert config.pool.can_mint
    with pytest.raises(ConfigError) as missing:
        config.pool.api_key.reveal()
    assert str(missing.value).startswith(f"{path}:6: [pool] api_key_file: cannot read {tmp_path / 'key'}: ")
    with pytest.raises(ConfigError, match=r"\[pool\] api_secret_file: .*secret is empty"):
        config.pool.api_secret.reveal()
    (tmp_path / "key").write_text("key-written-later\n")
    (tmp_path / "key").chmod(0o600)
    assert config.pool.api_key.reveal() == "key-written-later"
    (tmp_path / "key").write_text("changed-again\n")
    assert config.pool.api_key.reveal() == "key-written-later", "read once, then kept"
