"""Credential redaction for destination URIs and for text taken from a server.

Every URI that reaches a log record, a status, or an exception message goes
through :func:`redact` first, so a password in ``s3://key:secret@bucket`` or a
``?secret_key=`` query parameter never leaves the process. Every message a
server (or a client library quoting a request) hands us goes through
:func:`scrub` before it becomes an exception message, so a ``delegation=``
token or an ``Authorization`` header a NameNode echoes never does either.

:func:`redact` works on the raw text, before any URI parser sees it: a password
holding ``#``, ``/``, ``?`` or ``@`` makes ``urllib`` split the URI in the
wrong place (``hdfs://alice:9876/5@nn/x`` parses as host ``alice``, port
9876), so the parse cannot be trusted to find the password. The user info is
everything between ``scheme://`` and the *last* ``@`` of the URI; a password
is what follows its first ``:``. A URI where that reading and the parser's
disagree is refused by :func:`ambiguous_userinfo` (the caller asks for the
password to be percent-encoded).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

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
# Also hidden in server text (not in our own URIs, where they are not secrets): the
# identity WebHDFS requests carry and Hadoop's signed auth cookie
# (https://hadoop.apache.org/docs/stable/hadoop-project-dist/hadoop-common/HttpAuthentication.html).
_SERVER_TEXT_KEYS = frozenset({"user.name", "doas", "hadoop.auth"})

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# key=value pairs as a query string or a message quotes them. The value stops at the
# next pair, whitespace or quote; hadoop.auth's value holds '&'-joined fields, so it
# takes the rest of the run.
_PAIR = re.compile(r"(?P<key>[A-Za-z][A-Za-z0-9_.-]*)=(?P<value>[^&\s\"'<>;,)}\]]*)")
_HADOOP_AUTH = re.compile(r"(?i)(hadoop\.auth=)\"?[^\s\";,]*")
_AUTH_HEADER = re.compile(r"(?i)(\b(?:proxy-)?authorization\b[\"']?\s*[:=]\s*[\"']?)[^\"'\r\n,;}]*")
# A credential after an auth scheme; it holds a digit or base64 padding/symbols, which
# keeps prose ("Basic authentication failed") intact.
_AUTH_SCHEME = re.compile(
    r"(?i)\b(basic|bearer|negotiate|digest)\s+(?=[A-Za-z0-9+/=._~-]*[0-9+/=])[A-Za-z0-9+/=._~-]{6,}"
)
# "key": "value" as a JSON answer quotes it (GETDELEGATIONTOKEN's "urlString").
_JSON_PAIR = re.compile(
    r"(?P<head>(?P<q>[\"'])(?P<key>[A-Za-z][A-Za-z0-9_.-]*)(?P=q)\s*:\s*(?P<vq>[\"']))"
    r"(?P<value>[^\"']*)(?P=vq)"
)
# user:password@ inside a URL quoted by a message.
_URL_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@?#]*):[^\s@]*@")


def split_userinfo(uri: str) -> tuple[str, str, str | None, str] | None:
    """``(scheme://, user, password or None, rest after the last '@')`` of the raw text,
    or None when it has no user info. No parser is involved, so a password holding
    reserved characters is found whole."""
    match = _SCHEME.match(uri)
    if match is None:
        return None
    after = uri[match.end() :]
    userinfo, at, rest = after.rpartition("@")
    if not at:
        return None
    user, colon, password = userinfo.partition(":")
    return match.group(), user, password if colon else None, rest


def ambiguous_userinfo(uri: str) -> bool:
    """Whether a ``@`` lies past the authority a URI parser would see (in the path,
    query or fragment) while a ``:`` before it can start a password: the parser and
    :func:`split_userinfo` then disagree on host and password."""
    match = _SCHEME.match(uri)
    if match is None:
        return False
    after = uri[match.end() :]
    last_at = after.rfind("@")
    if last_at < 0:
        return False
    authority_end = next((i for i, c in enumerate(after) if c in "/?#"), len(after))
    return last_at > authority_end and ":" in after[:last_at]


def _is_secret_key(key: str) -> bool:
    norm = key.strip().lower().replace("-", "_")
    return norm in _SECRET_KEYS or norm.endswith(("_secret", "_token", "_password", "_key"))


def redact(uri: str) -> str:
    """Return ``uri`` with the password of its user info and every secret query
    value replaced by ``***``. Plain paths come back unchanged."""
    split = split_userinfo(uri)
    if split is not None:
        scheme, user, password, rest = split
        if password is not None:
            uri = f"{scheme}{user}:{REDACTED}@{rest}"
    if "://" not in uri:
        return uri
    try:
        parts = urlsplit(uri)
    except ValueError:
        # Malformed (an unbalanced IPv6 bracket, NFKC-unsafe characters): hide
        # anything that looks like a secret pair rather than echo the input.
        return _PAIR.sub(_hide_pair, uri)
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = "&".join(
            f"{quote(k, safe='')}={REDACTED if _is_secret_key(k) else quote(v, safe='/:,')}"
            for k, v in pairs
        )
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def _hide_json_pair(match: re.Match[str]) -> str:
    key = match["key"]
    if _is_secret_key(key) or key.lower() in _SERVER_TEXT_KEYS or key == "urlString":
        return f"{match['head']}{REDACTED}{match['vq']}"
    return match.group()


def _hide_pair(match: re.Match[str]) -> str:
    key = match["key"]
    if _is_secret_key(key) or key.lower() in _SERVER_TEXT_KEYS:
        return f"{key}={REDACTED}"
    return match.group()


def scrub(text: str, uri: str | None = None) -> str:
    """Remove secrets from ``text``, a message from a server, a client library or
    pyarrow: ``key=value`` pairs with a secret key (``delegation=``, ``token=``,
    ``user.name=``...), ``Authorization`` headers and their credentials,
    ``user:password@`` in quoted URLs and, when ``uri`` is given, every secret of
    that URI (its password, raw and decoded, and its secret query values)."""
    if uri is not None:
        text = _scrub_known(text, uri)
    text = _HADOOP_AUTH.sub(rf"\g<1>{REDACTED}", text)
    text = _AUTH_HEADER.sub(rf"\g<1>{REDACTED}", text)
    text = _AUTH_SCHEME.sub(rf"\g<1> {REDACTED}", text)
    text = _URL_USERINFO.sub(rf"\g<head>:{REDACTED}@", text)
    text = _JSON_PAIR.sub(_hide_json_pair, text)
    return _PAIR.sub(_hide_pair, text)


def _scrub_known(text: str, uri: str) -> str:
    redacted = redact(uri)
    if redacted == uri:
        return text
    text = text.replace(uri, redacted)
    secrets: list[str] = []
    split = split_userinfo(uri)
    password = split[2] if split is not None else None
    if split is not None and password:
        user = split[1]
        # user:password@ goes whatever the password's length; a bare password only
        # from 3 characters on (a shorter one would mangle unrelated words).
        text = text.replace(f"{user}:{password}@", f"{user}:{REDACTED}@")
        secrets += [password, unquote(password)]
    try:
        query = urlsplit(uri).query
    except ValueError:
        query = ""
    pairs = parse_qsl(query, keep_blank_values=True)
    secrets.extend(v for k, v in pairs if _is_secret_key(k))
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) >= 3:
            text = text.replace(secret, REDACTED)
    return text
