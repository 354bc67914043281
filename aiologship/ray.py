"""Ray cluster coordination for aiologship copies (``pip install aiologship[ray]``).

Importing this module never imports Ray; every function that needs Ray imports
it when called. What it gives users:

- :func:`detect_role` / :class:`Role`: standalone, head or worker, as
  ``LogManager`` sees this process;
- :func:`copy_disabled_by_env`: the ``RAY_DISABLE_HDFS_COPY`` override;
- :func:`list_copies` / :func:`stop_copy`: the copier actors of the whole
  cluster, from any node;
- :func:`describe_cluster`: nodes, which is the head, which is this one, and
  where each copier actor runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._copiers._coordination import (
    ENV_DISABLE,
    HEAD_RESOURCE,
    Role,
    _ray_if_initialized,
    copy_disabled_by_env,
    current_node_id,
    detect_role,
)
from ._copiers._ray_copier import NAMESPACE, copier_infos
from ._copiers._ray_copier import list_copies as _list_copies
from ._copiers._ray_copier import stop_copy as _stop_copy
from ._exceptions import CopyError

__all__ = [
    "ENV_DISABLE",
    "NAMESPACE",
    "ClusterDescription",
    "CopierPlacement",
    "NodeDescription",
    "Role",
    "copy_disabled_by_env",
    "describe_cluster",
    "detect_role",
    "list_copies",
    "stop_copy",
]


@dataclass(frozen=True, slots=True)
class CopierPlacement:
    """Where one copier actor runs."""

    actor_name: str
    copy_name: str
    scope: str
    pid: int
    state: str


@dataclass(frozen=True, slots=True)
class NodeDescription:
    node_id: str
    address: str
    alive: bool
    is_head: bool
    is_current: bool
    resources: dict[str, float]
    copiers: tuple[CopierPlacement, ...] = ()


@dataclass(frozen=True, slots=True)
class ClusterDescription:
    """What :func:`describe_cluster` returns; ``str()`` gives a readable table."""

    role: Role
    nodes: tuple[NodeDescription, ...] = field(default=())

    @property
    def head(self) -> NodeDescription | None:
        return next((n for n in self.nodes if n.is_head and n.alive), None)

    @property
    def current(self) -> NodeDescription | None:
        return next((n for n in self.nodes if n.is_current), None)

    def __str__(self) -> str:
        if not self.nodes:
            return f"role: {self.role} (Ray not initialized in this process)"
        lines = [f"role of this process: {self.role}"]
        for node in self.nodes:
            marks = [m for m, on in (("head", node.is_head), ("current", node.is_current)) if on]
            if not node.alive:
                marks.append("dead")
            tag = f" [{', '.join(marks)}]" if marks else ""
            lines.append(f"node {node.node_id[:12]} {node.address}{tag}")
            for c in node.copiers:
                lines.append(f"    copier {c.copy_name!r} ({c.scope}, pid {c.pid}, {c.state})")
        return "\n".join(lines)


def describe_cluster(timeout: float = 10.0) -> ClusterDescription:
    """The cluster's nodes, marking the head and the current node, with the copier
    actors each one runs. Outside Ray: the standalone role and no nodes. Blocks
    (GCS and actor calls): from async code run it in a worker thread."""
    ray = _ray_if_initialized()
    if ray is None:
        return ClusterDescription(role=Role.STANDALONE)
    role = detect_role()
    here = current_node_id()
    placements: dict[str, list[CopierPlacement]] = {}
    for info in copier_infos(timeout):
        placements.setdefault(info["node_id"], []).append(
            CopierPlacement(
                actor_name=info["actor_name"],
                copy_name=info["copy_name"],
                scope=info["scope"],
                pid=info["pid"],
                state=info["state"],
            )
        )
    nodes = []
    for node in ray.nodes():
        resources = dict(node.get("Resources") or {})
        node_id = node["NodeID"]
        nodes.append(
            NodeDescription(
                node_id=node_id,
                address=str(node.get("NodeManagerAddress", "")),
                alive=bool(node.get("Alive")),
                is_head=HEAD_RESOURCE in resources,
                is_current=node_id == here,
                resources=resources,
                copiers=tuple(placements.get(node_id, ())),
            )
        )
    nodes.sort(key=lambda n: (not n.is_head, not n.alive, n.node_id))
    return ClusterDescription(role=role, nodes=tuple(nodes))


def list_copies(timeout: float = 10.0) -> list[Any]:
    """``CopyStatus`` of every copier actor in the cluster, whichever node started it.
    Copiers that do not answer within ``timeout`` (restarting) are left out with a
    warning. Raises CopyError outside Ray."""
    _require_ray()
    return _list_copies(timeout)


def stop_copy(copy_name: str, timeout: float = 60.0) -> list[Any]:
    """Stop ``copy_name`` cluster-wide: a final copy cycle, then the actor (or one
    per node for scope="node") is killed for good. Returns the final statuses."""
    _require_ray()
    return _stop_copy(copy_name, timeout)


def _require_ray() -> None:
    if _ray_if_initialized() is None:
        raise CopyError("Ray is not initialized in this process (call ray.init() first)")
