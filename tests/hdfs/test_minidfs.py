"""The mini-cluster harness itself: its JSON-line protocol and its configuration files."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from typing import Any

import pytest

# Loaded by tests/hdfs/conftest.py from tests/minidfs/minidfs.py.
minidfs = sys.modules["aiologship_tests_minidfs"]

pytestmark = pytest.mark.timeout(120)


def test_status_describes_the_running_cluster(hdfs: Any) -> None:
    state = hdfs.command("status")
    assert state["namenode_up"] is True
    assert len(state["datanodes"]) == 2 and state["stopped_datanodes"] == []
    assert state["uri"] == f"hdfs://127.0.0.1:{hdfs.rpc_port}"
    assert hdfs.rpc_port != hdfs.http_port


def test_site_files_name_the_cluster(hdfs: Any) -> None:
    def props(name: str) -> dict[str, str]:
        root = ET.parse(hdfs.conf_dir / name).getroot()
        return {p.findtext("name") or "": p.findtext("value") or "" for p in root}

    assert props("core-site.xml")["fs.defaultFS"] == hdfs.uri
    hdfs_site = props("hdfs-site.xml")
    assert hdfs_site["dfs.namenode.http-address"] == f"127.0.0.1:{hdfs.http_port}"
    assert hdfs_site["dfs.replication"] == "1"


def test_bad_commands_answer_with_an_error_and_the_cluster_stays(hdfs: Any) -> None:
    with pytest.raises(minidfs.MiniDfsError, match="unknown command"):
        hdfs.command("explode")
    with pytest.raises(minidfs.MiniDfsError, match="not stopped"):
        hdfs.command("start-datanode 1")
    assert hdfs.command("status")["namenode_up"] is True
