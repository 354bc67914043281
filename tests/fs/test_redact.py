from __future__ import annotations

import pytest

from aiologship._fs import redact
from aiologship._fs._redact import scrub


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("/var/log/app", "/var/log/app"),
        ("file:///var/log/app", "file:///var/log/app"),
        ("hdfs://namenode:9000/logs", "hdfs://namenode:9000/logs"),
        ("hdfs://alice@namenode:9000/logs", "hdfs://alice@namenode:9000/logs"),
        ("s3://AKIA:s3cr3t@bucket/logs", "s3://AKIA:***@bucket/logs"),
        ("webhdfs://u:p@w@host/x", "webhdfs://u:***@host/x"),
        (
            "s3://bucket/logs?region=eu-west-1&secret_key=abc123&session_token=tok",
            "s3://bucket/logs?region=eu-west-1&secret_key=***&session_token=***",
        ),
        ("hdfs://nn/x?delegation=TOKEN42", "hdfs://nn/x?delegation=***"),
        ("abfs://c@acct/x?sig=zzz&sv=2020", "abfs://c@acct/x?sig=***&sv=2020"),
    ],
)
def test_redact(uri: str, expected: str) -> None:
    assert redact(uri) == expected


def test_redact_malformed_uri_still_hides_userinfo() -> None:
    shown = redact("hdfs://user:pa55word@[::1/x")
    assert "pa55word" not in shown


def test_scrub_removes_secrets_quoted_by_an_error_message() -> None:
    uri = "s3://AKIA:s3cr3tvalue@bucket/x?session_token=tok123"
    message = f"failed to open {uri}: password s3cr3tvalue rejected, token tok123"
    cleaned = scrub(message, uri)
    assert "s3cr3tvalue" not in cleaned
    assert "tok123" not in cleaned
    assert "bucket" in cleaned


# -- passwords with reserved characters --------------------------------------------------

# Each shape is a URI a user may type with a raw (not percent-encoded) password; "{pw}"
# is where the password goes.
URI_SHAPES = [
    "hdfs://alice:{pw}@127.0.0.1:1/logs",
    "hdfs://alice:{pw}@namenode/x",
    "viewfs://alice:{pw}@cluster/x",
    "hdfs://alice:{pw}@127.0.0.1:1/logs?delegation=TOKEN42",
    "s3://KEY:{pw}@bucket/x",
    "file://alice:{pw}@localhost/x",
    "ftp://bob:{pw}@host/x",
]

HOSTILE_PASSWORDS = ["pa#ss", "ab/cd", "p?wd", "9876/5", "p@ss", "a:b", "100%", "pässwörd#/?@"]


@pytest.mark.parametrize("shape", URI_SHAPES)
@pytest.mark.parametrize("password", HOSTILE_PASSWORDS)
def test_redact_hides_a_raw_password_with_reserved_characters(shape: str, password: str) -> None:
    uri = shape.format(pw=password)
    shown = redact(uri)
    assert password not in shown
    assert "alice" in shown or "KEY" in shown or "bob" in shown  # the user stays


def test_redact_keeps_at_signs_of_a_path_without_userinfo() -> None:
    assert redact("hdfs://nn/logs/a@b") == "hdfs://nn/logs/a@b"
    assert redact("hdfs://alice@nn/logs") == "hdfs://alice@nn/logs"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (
            '{"RemoteException":{"message":"bad GET /webhdfs/v1/x?op=OPEN&delegation=HAAEdGVzdA'
            '&user.name=alice"}}',
            "HAAEdGVzdA",
        ),
        ("rejected /webhdfs/v1/x?op=OPEN&user.name=alice&delegation=T0K3N-abc_9", "T0K3N-abc_9"),
        ("request had token=s3cr3tTOKEN; refused", "s3cr3tTOKEN"),
        ("GET /x?user.name=mallory42 HTTP/1.1", "mallory42"),
        ("Authorization: Basic YWxpY2U6cGFzc3dvcmQ=\r\nHost: nn", "YWxpY2U6cGFzc3dvcmQ="),
        ("headers {'Authorization': 'Bearer eyJhbGciOiJIUzI1NiJ9.e30.x'}", "eyJhbGciOiJIUzI1NiJ9"),
        ("authorization=Negotiate YIIGhgYJKoZIhvcSAQICAQBuggZ1MIIGcaADAgEF", "YIIGhgYJKoZIhvcS"),
        ("failed for http://bob:hunter22@dn1:9864/x", "hunter22"),
        ("cookie hadoop.auth=u=alice&p=alice&t=simple&e=1&s=SIGNATURE1", "SIGNATURE1"),
        ('{"Token": {"urlString": "JQAIaG9ydG9ud29ya3MA"}}', "JQAIaG9ydG9ud29ya3MA"),
        ("{'delegation': 'T0K3Nvalue', 'path': '/x'}", "T0K3Nvalue"),
    ],
)
def test_scrub_removes_secrets_a_server_quotes(text: str, secret: str) -> None:
    cleaned = scrub(text)
    assert secret not in cleaned
    assert "***" in cleaned


@pytest.mark.parametrize(
    "text",
    [
        'Permission denied: user=mallory, access=WRITE, inode="/t/locked"',
        "Basic authentication failed for user alice",
        '{"exception": "FileNotFoundException", "message": "File /x does not exist."}',
    ],
)
def test_scrub_keeps_ordinary_server_text(text: str) -> None:
    assert scrub(text) == text
