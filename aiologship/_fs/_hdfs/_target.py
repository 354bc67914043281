"""The target of an hdfs:// destination, shared by every driver: the URI taken
apart (:class:`HdfsTarget`), the Hadoop configuration it resolves against
(``HADOOP_CONF_DIR`` / ``HADOOP_HOME``), HA name services, the effective user.

Layer rule: imports ``_exceptions`` only; drivers import this module, never the
other way round.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from ..._exceptions import DestinationError

DEFAULT_RPC_PORT = 8020
DEFAULT_HTTP_PORT = 9870
ENV_USER = "HADOOP_USER_NAME"


@dataclass(frozen=True, slots=True)
class HdfsTarget:
    """An hdfs:// URI taken apart. ``password`` and ``token`` never reach a message."""

    scheme: str
    host: str | None  # host or HA name service; None: fs.defaultFS
    port: int | None
    path: str
    user: str | None
    password: str | None = field(repr=False, default=None)
    token: str | None = field(repr=False, default=None)
    conf: dict[str, str] = field(default_factory=dict, repr=False)
    conf_dir: str | None = None

    @property
    def authority(self) -> str:
        """``host[:port]`` of the NameNode or the name service."""
        if self.host is None:
            return ""
        return self.host if self.port is None else f"{self.host}:{self.port}"

    @property
    def is_nameservice(self) -> bool:
        return self.host is not None and self.port is None and self.host in nameservices(self.conf)


def parse_target(uri: str, redacted: str, *, user: str | None = None) -> HdfsTarget:
    """Take an hdfs:// (or viewfs://) URI apart and read the Hadoop configuration."""
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        raise DestinationError(redacted, "malformed hdfs:// URI") from None
    if parts.scheme.lower() not in ("hdfs", "viewfs"):
        raise DestinationError(redacted, f"not an hdfs:// URI (scheme {parts.scheme!r})")
    conf_dir = hadoop_conf_dir()
    conf = read_hadoop_conf(conf_dir, redacted) if conf_dir else {}
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    token = query.pop("delegation", None) or query.pop("delegation_token", None)
    uri_user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    effective_user = uri_user or query.pop("user.name", None) or user or os.environ.get(ENV_USER)
    host = parts.hostname or None
    if host is None:
        host, port = _default_fs(conf, redacted)
    path = unquote(parts.path) or "/"
    if not path.startswith("/"):
        path = "/" + path
    return HdfsTarget(
        scheme=parts.scheme.lower(),
        host=host,
        port=port,
        path=path if path == "/" else path.rstrip("/"),
        user=effective_user or None,
        password=password,
        token=token,
        conf=conf,
        conf_dir=conf_dir,
    )


def _default_fs(conf: dict[str, str], redacted: str) -> tuple[str | None, int | None]:
    default = conf.get("fs.defaultFS") or conf.get("fs.default.name")
    if not default:
        return None, None
    try:
        parts = urlsplit(default)
        return parts.hostname or None, parts.port
    except ValueError:
        raise DestinationError(redacted, f"malformed fs.defaultFS {default!r}") from None


def hadoop_conf_dir() -> str | None:
    """``HADOOP_CONF_DIR``, else ``HADOOP_HOME/etc/hadoop``, if it exists."""
    conf_dir = os.environ.get("HADOOP_CONF_DIR")
    if not conf_dir and os.environ.get("HADOOP_HOME"):
        conf_dir = os.path.join(os.environ["HADOOP_HOME"], "etc", "hadoop")
    return conf_dir if conf_dir and os.path.isdir(conf_dir) else None


def read_hadoop_conf(conf_dir: str, redacted: str) -> dict[str, str]:
    """Properties of core-site.xml then hdfs-site.xml (later files win)."""
    conf: dict[str, str] = {}
    for name in ("core-site.xml", "hdfs-site.xml"):
        path = Path(conf_dir) / name
        if not path.is_file():
            continue
        try:
            root = ET.parse(path).getroot()
        except (ET.ParseError, OSError) as exc:
            raise DestinationError(redacted, f"cannot read {path}: {exc}") from None
        for prop in root.iter("property"):
            key = (prop.findtext("name") or "").strip()
            value = (prop.findtext("value") or "").strip()
            if key:
                conf[key] = value
    return conf


def nameservices(conf: dict[str, str]) -> list[str]:
    return [s.strip() for s in conf.get("dfs.nameservices", "").split(",") if s.strip()]


def namenode_addresses(conf: dict[str, str], service: str, kind: str) -> list[str]:
    """``host:port`` of each NameNode of an HA name service; ``kind`` is ``rpc`` or
    ``http`` (``dfs.namenode.<kind>-address.<service>.<nn>``)."""
    ids = [n.strip() for n in conf.get(f"dfs.ha.namenodes.{service}", "").split(",")]
    out = []
    for nn in ids:
        if nn and (addr := conf.get(f"dfs.namenode.{kind}-address.{service}.{nn}")):
            out.append(addr)
    return out
