"""HA name services through HADOOP_CONF_DIR: ``hdfs://mycluster/path`` where the first
NameNode of the pair is dead and the second is the mini-cluster's. Both drivers must find
the live one (hdfs-native fails over itself; webhdfs tries each web address in turn)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import pytest

from aiologship._config import HdfsDriver
from aiologship._fs import resolve_destination
from aiologship._fs._hdfs import parse_target
from aiologship._fs._hdfs._webhdfs import http_addresses

pytestmark = pytest.mark.timeout(120)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _site(path: Path, props: dict[str, str]) -> None:
    body = "".join(
        f"  <property><name>{k}</name><value>{v}</value></property>\n" for k, v in props.items()
    )
    path.write_text(f'<?xml version="1.0"?>\n<configuration>\n{body}</configuration>\n')


@pytest.fixture
def ha_conf(hdfs: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    dead_rpc, dead_http = _free_port(), _free_port()
    conf = tmp_path / "ha-conf"
    conf.mkdir()
    _site(conf / "core-site.xml", {"fs.defaultFS": "hdfs://mycluster"})
    _site(
        conf / "hdfs-site.xml",
        {
            "dfs.nameservices": "mycluster",
            "dfs.ha.namenodes.mycluster": "nn1,nn2",
            "dfs.namenode.rpc-address.mycluster.nn1": f"127.0.0.1:{dead_rpc}",
            "dfs.namenode.rpc-address.mycluster.nn2": f"127.0.0.1:{hdfs.rpc_port}",
            "dfs.namenode.http-address.mycluster.nn1": f"127.0.0.1:{dead_http}",
            "dfs.namenode.http-address.mycluster.nn2": f"127.0.0.1:{hdfs.http_port}",
            "dfs.client.failover.proxy.provider.mycluster": (
                "org.apache.hadoop.hdfs.server.namenode.ha.ConfiguredFailoverProxyProvider"
            ),
        },
    )
    monkeypatch.setenv("HADOOP_CONF_DIR", str(conf))
    return conf


def test_nameservice_parsed_from_conf(ha_conf: Path, hdfs: Any) -> None:
    target = parse_target("hdfs://mycluster/logs", "hdfs://mycluster/logs")
    assert (target.host, target.port, target.is_nameservice) == ("mycluster", None, True)
    addresses = http_addresses(target)
    assert len(addresses) == 2 and addresses[1] == f"127.0.0.1:{hdfs.http_port}"
    default = parse_target("hdfs:///logs", "hdfs:///logs")  # fs.defaultFS
    assert default.host == "mycluster"


@pytest.mark.parametrize("driver", [HdfsDriver.NATIVE, HdfsDriver.WEBHDFS], ids=str)
def test_failover_to_the_live_namenode(
    ha_conf: Path, hdfs: Any, hdfs_dir: str, driver: HdfsDriver
) -> None:
    dest = resolve_destination(f"hdfs://mycluster{hdfs_dir}", hdfs_driver=driver)
    fs = dest.filesystem
    fs.create_dir(hdfs_dir, recursive=True)
    with fs.open_output_stream(f"{hdfs_dir}/ha.log") as out:
        out.write(b"through the name service\n")
    with fs.open_append_stream(f"{hdfs_dir}/ha.log") as out:
        out.write(b"appended\n")
    info = fs.get_file_info(f"{hdfs_dir}/ha.log")
    assert info.type == pafs.FileType.File
    with fs.open_input_stream(f"{hdfs_dir}/ha.log") as f:
        assert f.read() == b"through the name service\nappended\n"
