"""Credential redaction for destination URIs.

Every URI that reaches a log record, a status, or an exception message goes
through :func:`redact` first, so a password in ``s3://key:secret@bucket`` or a
``?secret_key=`` query parameter never leaves the process.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

REDACTED = "***"

# Query keys whose values are secrets (compared case-insensitively, with - and _
# treated alike). Kept broad: an over-redacted URI is harmless, a leaked one is not.
_SECRET_KEYS = frozenset(
    {
        "password",
        "passwd",
        "pass",
        "secret",
        "secret_key",
        "secret_access_key",
        "access_key",
        "access_key_id",
        "session_token",
        "token",
        "delegation",
        "delegation_token",
        "sas_token",
        "sig",
        "signature",
        "credential",
        "credentials",
        "account_key",
        "client_secret",
        "api_key",
        "apikey",
        "auth",
    }
)

_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/@?#]*)@")


def _is_secret_key(key: str) -> bool:
    norm = key.strip().lower().replace("-", "_")
    return norm in _SECRET_KEYS or norm.endswith(("_secret", "_token", "_password", "_key"))


def redact(uri: str) -> str:
    """Return ``uri`` with the password of its user info and every secret query
    value replaced by ``***``. Plain paths come back unchanged."""
    if "://" not in uri:
        return uri
    try:
        parts = urlsplit(uri)
    except ValueError:
        # Malformed (e.g. an unbalanced IPv6 bracket): still hide anything that
        # looks like user info rather than echo the input.
        return _USERINFO.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", uri)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, sep, _password = userinfo.partition(":")
        netloc = f"{user}:{REDACTED}@{hostport}" if sep else f"{user}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = "&".join(
            f"{quote(k, safe='')}={REDACTED if _is_secret_key(k) else quote(v, safe='/:,')}"
            for k, v in pairs
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def scrub(text: str, uri: str) -> str:
    """Remove the secrets of ``uri`` from ``text`` (an error message from pyarrow
    or a driver may quote the raw URI or one of its parts)."""
    redacted = redact(uri)
    if redacted == uri:
        return text
    text = text.replace(uri, redacted)
    try:
        parts = urlsplit(uri)
    except ValueError:
        return text
    secrets = []
    if parts.password:
        secrets.append(parts.password)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    secrets.extend(v for k, v in pairs if _is_secret_key(k))
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 3:
            text = text.replace(secret, REDACTED)
    return text
