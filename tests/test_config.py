"""Settings: environment variables, *_FILE secrets, validation sentences."""

from __future__ import annotations

import logging
import re
import ssl
from pathlib import Path

import pytest
import trustme

from etl.config import Settings, load_settings, unknown_variables
from etl.errors import ConfigError

BASE = {"VSPC_URL": "https://vspc.example.com:1280", "VSPC_API_KEY": "key-123456"}


def settings(**env: str) -> Settings:
    return load_settings(environ={**env}, dotenv=False)


def source_error(**env: str) -> str:
    with pytest.raises(ConfigError) as info:
        settings(**env).validate_source()
    return str(info.value)


def test_defaults_follow_the_contract() -> None:
    s = settings(**BASE)
    assert s.vspc_page_size == 500
    assert s.vspc_verify_tls is True
    assert s.vspc_max_delete_ratio == 0.5
    assert s.database_url is None
    assert s.source == "vspc.example.com"
    s.validate_source()


def test_source_overrides_host() -> None:
    assert settings(**BASE, VSPC_SOURCE="acme-prod").source == "acme-prod"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"VSPC_API_KEY": "k1234"}, "VSPC_URL is not set"),
        ({"VSPC_URL": "vspc.example.com", "VSPC_API_KEY": "k1234"}, "is not an http(s) URL"),
        ({"VSPC_URL": "ftp://vspc.example.com", "VSPC_API_KEY": "k1234"}, "is not an http(s) URL"),
        ({"VSPC_URL": "https://vspc:99999999", "VSPC_API_KEY": "k1234"}, "has an invalid port"),
        ({"VSPC_URL": "https://vspc.example.com"}, "no VSPC credentials"),
        (
            {"VSPC_URL": "https://h", "VSPC_API_KEY": "k1234", "VSPC_USERNAME": "u"},
            "both VSPC_API_KEY and VSPC_USERNAME/VSPC_PASSWORD are set",
        ),
        ({"VSPC_URL": "https://h", "VSPC_USERNAME": "u"}, "VSPC_USERNAME is set but VSPC_PASSWORD"),
        ({"VSPC_URL": "https://h", "VSPC_PASSWORD": "p"}, "VSPC_PASSWORD is set but VSPC_USERNAME"),
        (
            {**BASE, "VSPC_CA_BUNDLE": "/nonexistent/ca.pem"},
            "VSPC_CA_BUNDLE '/nonexistent/ca.pem' does not exist",
        ),
    ],
)
def test_source_validation_says_what_is_wrong(env: dict[str, str], message: str) -> None:
    assert message in source_error(**env)


def test_unreadable_ca_bundle(tmp_path: Path) -> None:
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate")
    assert "cannot be read as a PEM certificate file" in source_error(
        **BASE, VSPC_CA_BUNDLE=str(bogus)
    )


def test_ca_bundle_gives_ssl_context(tmp_path: Path) -> None:
    ca = trustme.CA()
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    verify = settings(**BASE, VSPC_CA_BUNDLE=str(path)).tls_verify()
    assert isinstance(verify, ssl.SSLContext)


def test_http_url_is_accepted_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        settings(VSPC_URL="http://127.0.0.1:1280", VSPC_API_KEY="k1234").validate_source()
    assert "plain http" in caplog.text


def test_verify_false_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert settings(**BASE, VSPC_VERIFY_TLS="false").tls_verify() is False
    assert "NOT verified" in caplog.text


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"VSPC_PAGE_SIZE": "abc"}, "VSPC_PAGE_SIZE: Input should be a valid integer"),
        ({"VSPC_PAGE_SIZE": "0"}, "VSPC_PAGE_SIZE: Input should be greater than or equal to 1"),
        ({"VSPC_MAX_DELETE_RATIO": "2"}, "VSPC_MAX_DELETE_RATIO: Input should be less than"),
        ({"VSPC_VERIFY_TLS": "maybe"}, "VSPC_VERIFY_TLS: Input should be a valid boolean"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL: Value error, must be one of DEBUG"),
    ],
)
def test_malformed_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings(**BASE, **env)
    assert str(info.value).startswith(message)


def test_secret_files(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("from-a-file-9876\n")
    s = settings(VSPC_URL="https://h", VSPC_API_KEY_FILE=str(key))
    assert s.vspc_api_key is not None
    assert s.vspc_api_key.get_secret_value() == "from-a-file-9876"
    assert "from-a-file-9876" not in repr(s)


def test_secret_file_problems(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="VSPC_PASSWORD_FILE '/nope' cannot be read"):
        settings(VSPC_PASSWORD_FILE="/nope")
    key = tmp_path / "key"
    key.write_text("x")
    with pytest.raises(ConfigError, match="both VSPC_API_KEY and VSPC_API_KEY_FILE are set"):
        settings(VSPC_API_KEY="a", VSPC_API_KEY_FILE=str(key))


def test_database_password_is_a_secret_and_never_echoed() -> None:
    url = "postgresql://etl:s3cret-pw@db:5432/warehouse"
    s = settings(DATABASE_URL=url, VSPC_PASSWORD="pw-xyz1")
    assert set(s.secrets()) == {"s3cret-pw", "pw-xyz1"}
    assert "s3cret-pw" not in repr(s)
    with pytest.raises(ConfigError) as info:
        settings(DATABASE_URL=url, VSPC_PAGE_SIZE="x")
    assert "s3cret-pw" not in str(info.value)


def test_env_file_and_precedence(tmp_path: Path) -> None:
    env_file = tmp_path / "prod.env"
    env_file.write_text("VSPC_PAGE_SIZE=250\nVSPC_SOURCE=from-file\n")
    s = load_settings(
        {"vspc_source": "from-flag"},
        environ={"VSPC_PAGE_SIZE": "300"},
        env_file=env_file,
    )
    assert s.vspc_page_size == 300  # environment beats the file
    assert s.vspc_source == "from-flag"  # flags beat everything
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(environ={}, env_file=tmp_path / "missing.env")


@pytest.mark.parametrize(
    ("env", "notices"),
    [
        (
            {"VSPC_PAGESIZE": "10"},
            [
                "VSPC_PAGESIZE in the environment is not a vspc-etl setting and is ignored: "
                "did you mean VSPC_PAGE_SIZE?"
            ],
        ),
        (
            {"sync_intervall": "5m", "HTTP_PROT": "80", "DATABASE_ULR": "postgresql://h/db"},
            [
                "DATABASE_ULR in the environment is not a vspc-etl setting and is ignored: "
                "did you mean DATABASE_URL?",
                "HTTP_PROT in the environment is not a vspc-etl setting and is ignored: "
                "did you mean HTTP_PORT?",
                "SYNC_INTERVALL in the environment is not a vspc-etl setting and is ignored: "
                "did you mean SYNC_INTERVAL?",
            ],
        ),
        (
            {"VSPC_COLOUR": "blue"},
            [
                "VSPC_COLOUR in the environment is not a vspc-etl setting and is ignored "
                "(the README lists the settings)"
            ],
        ),
        # ours, someone else's (proxies, compose, Grafana), or without our prefixes: silent
        ({"VSPC_API_KEY_FILE": "/run/secrets/k", "VSPC_PAGE_SIZE": "10"}, []),
        ({"HTTP_PROXY": "http://proxy:3128", "VSPC_ETL_TAG": "1.0", "VSPC_DB_HOST": "db"}, []),
        ({"PATH": "/bin", "LOG_LEVL": "DEBUG", "HTTPS_PROXY": "http://proxy:3128"}, []),
    ],
)
def test_unknown_variables_get_a_did_you_mean(
    env: dict[str, str], notices: list[str], tmp_path: Path
) -> None:
    if "VSPC_API_KEY_FILE" in env:
        (tmp_path / "k").write_text("key-123456")
        env = {**env, "VSPC_API_KEY_FILE": str(tmp_path / "k")}
    assert settings(**env).notices == notices


def test_unknown_variables_in_the_env_file_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "prod.env"
    path.write_text("VSPC_URL=https://vspc.example.com\nVSPC_APIKEY=k1234\n")
    loaded = load_settings(environ={}, env_file=path)
    assert loaded.notices == [
        f"VSPC_APIKEY in the env file {str(path)!r} is not a vspc-etl setting and is ignored: "
        "did you mean VSPC_API_KEY?"
    ]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"vspc_page_size": 0}, "--page-size: Input should be greater than or equal to 1 (got 0)"),
        ({"sync_interval": "soon"}, "--interval: Value error, must be a duration such as 900"),
        ({"log_level": "LOUD"}, "--log-level: Value error, must be one of DEBUG, INFO"),
    ],
)
def test_a_value_from_a_flag_is_named_by_its_flag(
    overrides: dict[str, object], message: str
) -> None:
    flags = {
        "vspc_page_size": "--page-size",
        "sync_interval": "--interval",
        "log_level": "--log-level",
    }
    with pytest.raises(ConfigError) as info:
        load_settings(overrides, environ={"VSPC_PAGE_SIZE": "5"}, dotenv=False, flags=flags)
    assert str(info.value).startswith(message)
    # The same value from the environment is named by its variable.
    variable = next(iter(overrides)).upper()
    with pytest.raises(ConfigError, match=f"^{variable}: "):
        load_settings(environ={variable: str(next(iter(overrides.values())))}, dotenv=False)


def test_a_url_from_a_flag_is_named_by_its_flag() -> None:
    given = load_settings(
        {"vspc_url": "vspc.example.com"},
        environ={"VSPC_API_KEY": "k1234"},
        dotenv=False,
        flags={"vspc_url": "--vspc-url"},
    )
    with pytest.raises(ConfigError) as info:
        given.validate_source()
    assert str(info.value) == (
        "--vspc-url 'vspc.example.com' is not an http(s) URL with a host, "
        "e.g. https://vspc.example.com:1280"
    )
    assert given.label("vspc_api_key") == "VSPC_API_KEY"


def test_the_plain_http_warning_is_said_once_per_process(caplog: pytest.LogCaptureFixture) -> None:
    url = "http://127.0.0.1:1281"
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            settings(VSPC_URL=url, VSPC_API_KEY="k1234").validate_source()
    assert caplog.text.count("plain http") == 1


def test_no_variable_the_container_setup_sets_is_warned_about() -> None:
    import yaml

    root = Path(__file__).resolve().parent.parent
    compose = yaml.safe_load((root / "docker-compose.yml").read_text())
    names = {
        name
        for service in compose["services"].values()
        for name in (service.get("environment") or {})
    }
    dockerfile = (root / "Dockerfile").read_text()
    names |= set(re.findall(r"^\s*(?:ENV\s+)?([A-Z][A-Z0-9_]+)=", dockerfile, re.M))
    assert {"DATABASE_URL_FILE", "VSPC_DB_HOST", "HTTP_PORT"} <= names  # the files were read
    assert unknown_variables(names, "the container") == []
