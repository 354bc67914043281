"""hdfs:// destinations. Placeholder until the HDFS drivers land (issue 4)."""

from __future__ import annotations

from typing import Any

from .._config import HdfsDriver
from .._exceptions import DestinationError


def open_hdfs(uri: str, redacted: str, *, driver: HdfsDriver, user: str | None) -> Any:
    """Return ``(pyarrow.fs.FileSystem, base_path, can_append)`` for an hdfs:// URI."""
    raise DestinationError(redacted, "hdfs:// destinations are not supported yet")
