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
