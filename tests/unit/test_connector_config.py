"""Connector configs: each kind validates its settings with clear errors, and secrets are never echoed."""

from __future__ import annotations

import json
import time
from datetime import UTC, date, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bus.connectors_runtime import backoff
from bus.errors import ConnectorConfigInvalid, ConnectorUnknownKind
from connectors import registry
from connectors._shape import RecordShaper, convert
from connectors.base import MASK, RetryPolicy, mask_config, mask_text
from connectors.http_sink import sign, verify_signature
from connectors.mqtt_source import check_filter
from connectors.sql_source import decode_value, encode_value

SECRET = "s3cr3t-Hunter2-value"

VALID = {
    "file-source": {"path": "/data/in", "format": "csv"},
    "sql-source": {"url": "sqlite:////data/x.db", "table": "licences", "incremental_column": "id"},
    "mqtt-source": {"topics": ["sensors/+/air"]},
    "http-sink": {"url": "https://psb.example.gov/hook", "secret": "0123456789abcdef"},
    "sql-sink": {"url": "postgresql://psb:pw@db.psb.gov/psb", "table": "licences"},
    "file-sink": {"directory": "/data/out"},
}


@pytest.mark.parametrize("kind", sorted(VALID))
def test_each_kind_accepts_a_minimal_config_and_fills_defaults(kind: str) -> None:
    cls = registry.connector_class(kind)
    cfg = cls.validate_config(VALID[kind])
    dumped = cfg.model_dump()
    assert dumped["batch_size"] >= 1 and dumped["retry"]["max_attempts"] >= 1
    assert cls.kind == kind and cls.role in ("source", "sink")


def test_registry_names_the_kinds_on_an_unknown_one() -> None:
    with pytest.raises(ConnectorUnknownKind) as err:
        registry.connector_class("ftp-source")
    assert err.value.code == "connector.unknown_kind"
    assert "file-source" in err.value.detail and "http-sink" in err.value.detail


def _invalid(kind: str, config: dict) -> ConnectorConfigInvalid:
    with pytest.raises(ConnectorConfigInvalid) as err:
        registry.connector_class(kind).validate_config(config)
    assert err.value.code == "connector.config_invalid" and err.value.status == 422
    return err.value


BAD = [
    ("file-source", {"path": "relative/dir", "format": "csv"}, "path", "absolute"),
    ("file-source", {"path": "/in", "format": "xml"}, "format", "jsonl"),
    (
        "file-source",
        {"path": "/in", "format": "csv", "encoding": "klingon-8"},
        "encoding",
        "unknown text encoding",
    ),
    ("file-source", {"path": "/in", "format": "csv", "delimiter": ";;"}, "delimiter", "at most 1"),
    ("file-source", {"format": "csv"}, "path", "required"),
    ("file-source", {"path": "/in", "format": "csv", "colour": "red"}, "colour", "Extra inputs"),
    ("file-source", {"path": "/in", "format": "csv", "batch_size": 0}, "batch_size", "greater than or equal"),
    (
        "file-source",
        {"path": "/in", "format": "csv", "retry": {"max_attempts": 0}},
        "retry.max_attempts",
        ">= 1".replace(">= 1", "greater than or equal"),
    ),
    (
        "sql-source",
        {"url": "not a url", "table": "t", "incremental_column": "id"},
        "url",
        "not a SQLAlchemy URL",
    ),
    (
        "sql-source",
        {"url": "oracle+nodriver://h/db", "table": "t", "incremental_column": "id"},
        "url",
        "no database driver",
    ),
    (
        "sql-source",
        {"url": "sqlite:///relative.db", "table": "t", "incremental_column": "id"},
        "url",
        "absolute",
    ),
    (
        "sql-source",
        {"url": "sqlite:////x.db", "table": "t; drop table x", "incremental_column": "id"},
        "table",
        "plain SQL identifier",
    ),
    ("sql-source", {"url": "sqlite:////x.db", "table": "t"}, "incremental_column", "required"),
    ("mqtt-source", {"topics": []}, "topics", "at least 1"),
    ("mqtt-source", {"topics": ["a/#/b"]}, "topics", "'#' must be"),
    ("mqtt-source", {"topics": ["a/b+"]}, "topics", "'+' must be"),
    ("mqtt-source", {"topics": ["a"], "qos": 3}, "qos", "Input should be"),
    ("mqtt-source", {"topics": ["a"], "port": 70000}, "port", "less than or equal"),
    ("http-sink", {"url": "ftp://psb.gov/x", "secret": "0123456789abcdef"}, "url", "http:// or https://"),
    ("http-sink", {"url": "https://psb.gov/x", "secret": "short"}, "secret", "at least 16"),
    ("http-sink", {"url": "https://u:p@psb.gov/x", "secret": "0123456789abcdef"}, "url", "credentials"),
    (
        "http-sink",
        {"url": "https://psb.gov/x", "secret": "0123456789abcdef", "headers": {"X-Databus-Batch": "1"}},
        "headers",
        "set by the connector",
    ),
    (
        "sql-sink",
        {"url": "sqlite:////x.db", "table": "t", "id_column": "id column"},
        "id_column",
        "identifier",
    ),
    ("file-sink", {"directory": "out"}, "directory", "absolute"),
    ("file-sink", {"directory": "/out", "prefix": "../escape"}, "prefix", "letters, digits"),
    ("file-sink", {"directory": "/out", "max_bytes": 10}, "max_bytes", "greater than or equal"),
]


@pytest.mark.parametrize(
    ("kind", "config", "field", "words"), BAD, ids=[f"{k}-{f}-{i}" for i, (k, _, f, _) in enumerate(BAD)]
)
def test_bad_configs_name_the_field_and_say_what_is_wrong(
    kind: str, config: dict, field: str, words: str
) -> None:
    err = _invalid(kind, config)
    fields = [e["field"] for e in err.extra["errors"]]
    assert any(f == field or f.startswith(field + ".") for f in fields), fields
    assert words in err.detail, err.detail
    assert kind in err.detail


def test_config_must_be_an_object() -> None:
    with pytest.raises(ConnectorConfigInvalid):
        registry.connector_class("file-sink").validate_config(["/out"])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "config"),
    [
        ("sql-source", {"url": f"postgresql://u:{SECRET}@db.gov/x", "table": "t", "incremental_column": 5}),
        (
            "sql-source",
            {"url": f"postgresql://u:{SECRET}@db.gov:notaport/x", "table": "t", "incremental_column": "id"},
        ),
        ("http-sink", {"url": "https://psb.gov/x", "secret": {"nested": SECRET}}),
        (
            "http-sink",
            {"url": "https://psb.gov/x", "secret": SECRET, "headers": {"Authorization": ["Bearer", SECRET]}},
        ),
        ("mqtt-source", {"topics": ["a"], "password": [SECRET]}),
        ("sql-sink", {"url": f"mysql+nodriver://root:{SECRET}@db/x", "table": "t"}),
    ],
)
def test_secrets_are_never_echoed_in_errors(kind: str, config: dict) -> None:
    """R14: a refused config names the problem without repeating passwords, tokens or keys."""
    err = _invalid(kind, config)
    body = json.dumps(err.to_problem())
    assert SECRET not in body


MASKING = [
    ({"password": "pw"}, {"password": MASK}),
    (
        {"secret": "x", "token": "y", "api_key": "z", "client-secret": "w"},
        {"secret": MASK, "token": MASK, "api_key": MASK, "client-secret": MASK},
    ),
    (
        {"headers": {"Authorization": "Bearer t", "Accept": "json"}},
        {"headers": {"Authorization": MASK, "Accept": "json"}},
    ),
    ({"url": "postgresql://psb:pw@db:5432/x"}, {"url": f"postgresql://psb:{MASK}@db:5432/x"}),
    ({"url": "sqlite:////data/x.db"}, {"url": "sqlite:////data/x.db"}),
    ({"url": "https://psb.gov/hook?a=1"}, {"url": "https://psb.gov/hook?a=1"}),
    ({"password": None}, {"password": None}),
    (
        {"nested": [{"password": "pw"}, "mqtt://u:pw@h"]},
        {"nested": [{"password": MASK}, f"mqtt://u:{MASK}@h"]},
    ),
]


@pytest.mark.parametrize(("config", "shown"), MASKING)
def test_mask_config_hides_secret_keys_and_url_passwords(config: dict, shown: dict) -> None:
    assert mask_config(config) == shown


secret_words = st.sampled_from(["password", "secret", "token", "api_key", "Authorization", "db_password"])
values = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=8, max_size=30)


@given(key=secret_words, value=values, depth=st.integers(0, 3))
def test_masked_configs_never_contain_a_secret_value(key: str, value: str, depth: int) -> None:
    config: dict = {key: value, "url": f"postgresql://user:{value}@host/db"}
    for _ in range(depth):
        config = {"inner": config, "list": [config]}
    assert value not in json.dumps(mask_config(config))


@given(user=st.text("abc", min_size=1, max_size=5), pw=st.text("xyz!$%", min_size=1, max_size=12))
def test_mask_text_hides_any_url_password(user: str, pw: str) -> None:
    text = f"could not connect to postgresql+psycopg://{user}:{pw}@db.gov:5432/psb: timeout"
    masked = mask_text(text)
    assert f":{pw}@" not in masked and f"{user}:{MASK}@db.gov" in masked


# --- mapping rows to the dataset schema --------------------------------------------------------------
SCHEMA = {
    "type": "record",
    "name": "R",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "n", "type": "long"},
        {"name": "score", "type": ["null", "double"], "default": None},
        {"name": "ok", "type": "boolean", "default": True},
        {"name": "colour", "type": {"type": "enum", "name": "C", "symbols": ["RED", "GREEN"]}},
    ],
}

CONVERSIONS = [
    ("42", "long", 42),
    ("42.0", "long", 42),
    (7, "int", 7),
    ("", ["null", "long"], None),
    ("3.5", "double", 3.5),
    ("yes", "boolean", True),
    ("F", "boolean", False),
    (0, "boolean", False),
    (12, "string", "12"),
    (datetime(2026, 1, 15, 8, 30, tzinfo=UTC), "string", "2026-01-15T08:30:00+00:00"),
    (date(2026, 1, 15), "string", "2026-01-15"),
    ({"a": 1}, "string", '{"a": 1}'),
    (
        "2026-01-15T08:30:00Z",
        {"type": "long", "logicalType": "timestamp-millis"},
        datetime(2026, 1, 15, 8, 30, tzinfo=UTC),
    ),
    ("2026-01-15", {"type": "int", "logicalType": "date"}, date(2026, 1, 15)),
    ("GREEN", {"type": "enum", "name": "C", "symbols": ["RED", "GREEN"]}, "GREEN"),
]


@pytest.mark.parametrize(("value", "ftype", "expected"), CONVERSIONS)
def test_values_are_converted_to_the_field_type(value: object, ftype: object, expected: object) -> None:
    assert convert(value, ftype) == expected


@pytest.mark.parametrize(
    ("value", "ftype", "words"),
    [
        ("4.5", "long", "not a whole number"),
        ("abc", "long", "is not a number"),
        (True, "long", "boolean is not a number"),
        ("maybe", "boolean", "not a boolean"),
        (None, "string", "required"),
        ("BLUE", {"type": "enum", "name": "C", "symbols": ["RED"]}, "not one of"),
    ],
)
def test_values_that_cannot_fit_say_why(value: object, ftype: object, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        convert(value, ftype)


def test_shaper_renames_converts_defaults_and_drops_unknown_columns() -> None:
    shaper = RecordShaper(SCHEMA, {"licence": "id", "count": "n"}, key_field="id")
    value, key = shaper.shape({"licence": "L1", "count": "3", "colour": "RED", "extra": "dropped"})
    assert value == {"id": "L1", "n": 3, "score": None, "ok": True, "colour": "RED"}
    assert key == "L1"


def test_shaper_names_the_missing_or_bad_field() -> None:
    shaper = RecordShaper(SCHEMA)
    with pytest.raises(ValueError, match="field 'n' is missing"):
        shaper.shape({"id": "L1", "colour": "RED"})
    with pytest.raises(ValueError, match="field 'n'"):
        shaper.shape({"id": "L1", "n": "many", "colour": "RED"})


def test_shaper_refuses_a_mapping_onto_fields_the_schema_lacks() -> None:
    with pytest.raises(ValueError, match=r"mapping targets \['licence_number'\]"):
        RecordShaper(SCHEMA, {"no": "licence_number"})
    with pytest.raises(ValueError, match="key_field"):
        RecordShaper(SCHEMA, key_field="nope")


# --- positions, signatures, backoff ------------------------------------------------------------------
@pytest.mark.parametrize("value", [5, "L0001", datetime(2026, 1, 1, 8, tzinfo=UTC), date(2026, 1, 1), None])
def test_sql_positions_keep_their_type_through_json(value: object) -> None:
    assert decode_value(json.loads(json.dumps(encode_value(value)))) == value


def test_webhook_signature_verifies_and_detects_tampering_and_staleness() -> None:
    body = b'{"records":[]}'
    header = sign("0123456789abcdef", body)
    assert verify_signature("0123456789abcdef", body, header)
    assert not verify_signature("0123456789abcdef", body + b" ", header)
    assert not verify_signature("another-secret-xxxx", body, header)
    assert not verify_signature("0123456789abcdef", body, None)
    assert not verify_signature("0123456789abcdef", body, "t=abc,v1=00")
    old = sign("0123456789abcdef", body, timestamp=int(time.time()) - 3600)
    assert not verify_signature("0123456789abcdef", body, old)


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("sensors/+/air", True),
        ("#", True),
        ("a/b/#", True),
        ("+", True),
        ("a/#/b", False),
        ("a+", False),
        ("", False),
        ("a/b#", False),
    ],
)
def test_mqtt_topic_filters(name: str, ok: bool) -> None:
    if ok:
        assert check_filter(name) == name
    else:
        with pytest.raises(ValueError):
            check_filter(name)


@given(initial=st.floats(0.01, 5), cap=st.floats(0.01, 120), attempt=st.integers(1, 60))
def test_backoff_stays_within_the_policy(initial: float, cap: float, attempt: int) -> None:
    policy = RetryPolicy(max_attempts=5, initial_backoff=initial, max_backoff=cap)
    wait = backoff(policy, attempt)
    assert 0 <= wait <= max(cap, initial)
