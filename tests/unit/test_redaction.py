"""Secret removal: env values, URL passwords, secret-named fields, key=value text."""

from __future__ import annotations

import json

from agent_runtime.config.model import PipelineConfig
from agent_runtime.observability.redaction import MASK, Redactor, is_secret_name

CANARY = "canary-5ecr3t-Zq81x"


def test_env_values_of_secret_named_variables_are_masked_everywhere_in_text() -> None:
    redactor = Redactor.from_env(
        {
            "MY_API_KEY": CANARY,
            "HOME": "/home/someone",
            "DB_PASSWORD": "hunter2hunter2",
            "DEBUG": "1",
        }
    )
    out = redactor.text(f"calling with {CANARY} from /home/someone; pw hunter2hunter2")
    assert CANARY not in out and "hunter2hunter2" not in out
    assert "/home/someone" in out  # not a secret-named variable


def test_short_env_values_are_not_treated_as_secrets() -> None:
    redactor = Redactor.from_env({"KEYTIMEOUT": "1", "SOME_TOKEN": "yes"})
    assert redactor.text("yes 1 one") == "yes 1 one"


def test_url_passwords_are_masked_and_collected_from_any_env_value() -> None:
    redactor = Redactor.from_env({"AGENT_RUNTIME_REDIS_URL": f"redis://app:{CANARY}@db:6379/0"})
    assert CANARY in redactor.secrets
    text = redactor.text(f"connect failed: redis://app:{CANARY}@db:6379/0 and {CANARY}")
    assert CANARY not in text
    assert "redis://app:***@db:6379/0" in text
    # an unknown URL's password is masked by pattern alone
    assert Redactor().text("rediss://:p4ssw0rd-x@host/1") == "rediss://:***@host/1"


def test_secret_named_fields_are_masked_whatever_their_value() -> None:
    data = {
        "api_key": "abc",
        "Authorization": "Bearer xyz",
        "nested": [{"password": 1234}],
        "max_tokens": 100,
        "token_count": 7,
        "text": "hello",
    }
    clean = Redactor()(data)
    assert clean["api_key"] == MASK and clean["Authorization"] == MASK
    assert clean["nested"][0]["password"] == MASK
    assert clean["max_tokens"] == 100 and clean["token_count"] == 7 and clean["text"] == "hello"


def test_key_value_text_bearer_tokens_and_api_key_shapes_are_masked() -> None:
    redactor = Redactor()
    text = redactor.text(
        'error: {"api_key": "k-123456", password=hunter2 '
        "Authorization: Bearer abcdefgh12345 key sk-ant-0123456789abcdefXYZ"
    )
    for secret in ("k-123456", "hunter2", "abcdefgh12345", "sk-ant-0123456789abcdefXYZ"):
        assert secret not in text
    assert "max_tokens=5" in redactor.text("max_tokens=5")


def test_config_secrets_are_collected() -> None:
    config = PipelineConfig.model_validate(
        {
            "redis_url": f"redis://:{CANARY}@h:1/0",
            "agents": {
                "a": {
                    "class": "x:Y",
                    "config": {"provider": {"api_key": "cfg-key-998877"}, "model": "m1"},
                }
            },
        }
    )
    redactor = Redactor().with_config(config)
    assert CANARY in redactor.secrets and "cfg-key-998877" in redactor.secrets
    assert "m1" not in redactor.secrets


def test_json_bytes_are_left_untouched_when_clean_and_rewritten_when_not() -> None:
    redactor = Redactor((CANARY,))
    clean = b'{"text": "hello"}'
    assert redactor.json_bytes(clean) == (clean, False)
    dirty = json.dumps({"payload": {"text": f"use {CANARY}"}}).encode()
    out, changed = redactor.json_bytes(dirty)
    assert changed and CANARY.encode() not in out and json.loads(out)["payload"]["text"]
    garbage = b"\xff\xfe not json " + CANARY.encode()
    out, changed = redactor.json_bytes(garbage)
    assert changed and CANARY.encode() not in out


def test_secret_names() -> None:
    for name in (
        "api_key",
        "OPENAI_API_KEY",
        "x-api-key",
        "db_password",
        "client_secret",
        "token",
        "access_token",
        "authorization",
    ):
        assert is_secret_name(name), name
    for name in ("max_tokens", "tokens", "keys", "message_type", "author"):
        assert not is_secret_name(name), name
