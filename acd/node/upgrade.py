"""Raising the cluster's core version (`acd upgrade finalize`, `POST /v1/cluster/upgrade`).

The active core version (acd.core.versions) is raised by one record in the log,
`ActivateCoreVersion`, which only the primary writes, and only once every node runs a binary
that supports the new version: the primary checks its own range, then asks its peer's API
(`GET /v1/version`, checked to answer as that node of this cluster). A peer that does not
answer refuses the step: a version a node cannot apply would stop it at its next record.

Refusals are `UpgradeRefused` with a stable code: `version_unsupported` (this node's binary),
`peer_unsupported`, `peer_unreachable`, `core_version_downgrade`; a node that is not the
writable primary raises the node's own `NotPrimary`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

from acd.core import Rejection
from acd.core import commands as c
from acd.core.versions import RELEASE, describe, supported_core_versions
from acd.tools import identity

if TYPE_CHECKING:
    from acd.node.node import Node

PEER_TIMEOUT = 2.0


class UpgradeRefused(Exception):
    """The version was not raised; nothing was written."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def local_versions(node: Node) -> dict[str, Any]:
    """This node's binary, the core versions it supports and the one its state runs."""
    low, high = supported_core_versions()
    return {
        "name": node.name, "cluster": node.settings.cluster.name, "binary_version": RELEASE, "core_versions": [low, high],
        "active_core_version": node.center.state.core_version,
    }


async def peer_versions(node: Node, peer: str) -> dict[str, Any]:
    """What the peer's `GET /v1/version` answers, checked to come from that node of this cluster."""
    settings = node.settings
    address = settings.node(peer).api
    try:
        async with identity.async_client(settings, timeout=PEER_TIMEOUT) as http:
            response = await http.get(identity.base_url(settings, address) + "/v1/version")
    except httpx.HTTPError as error:
        raise UpgradeRefused("peer_unreachable", f"node {peer} could not be asked its versions: {identity.reason(error, address, settings)}") from None
    try:
        view = response.json()
    except ValueError:
        view = None
    if response.status_code != 200 or not isinstance(view, dict):
        raise UpgradeRefused("peer_unreachable", f"node {peer} ({address}) answered HTTP {response.status_code} to /v1/version")
    mismatch = identity.mismatch(settings, peer, view)
    if mismatch:
        raise UpgradeRefused("peer_unreachable", mismatch)
    versions = view.get("core_versions")
    if not (isinstance(versions, list) and len(versions) == 2 and all(isinstance(v, int) for v in versions)):
        raise UpgradeRefused("peer_unreachable", f"node {peer} ({address}) did not say which core versions it supports")
    return view


async def finalize(node: Node, requested: int | None, actor: str) -> dict[str, Any]:
    """Raise the active core version to `requested` (default: the highest every node supports)."""
    refusal = node.writable_error()
    if refusal is not None:
        raise refusal
    mine = local_versions(node)
    low, high = mine["core_versions"]
    peers = [await peer_versions(node, other.name) for other in node.settings.nodes if other.name != node.name]
    active = node.center.state.core_version
    target = requested if requested is not None else min([high, *(peer["core_versions"][1] for peer in peers)])
    if target < active:
        raise UpgradeRefused("core_version_downgrade", f"the active core version is {active}; it cannot go back to {target}")
    if not low <= target <= high:
        raise UpgradeRefused(
            "version_unsupported",
            f"node {node.name} runs binary {RELEASE}, which supports core versions {describe((low, high))}, not {target}: upgrade it first",
        )
    for peer in peers:
        peer_low, peer_high = peer["core_versions"]
        if not peer_low <= target <= peer_high:
            raise UpgradeRefused(
                "peer_unsupported",
                f"node {peer['name']} runs binary {peer.get('binary_version')}, which supports core versions "
                f"{describe((peer_low, peer_high))}, not {target}: upgrade it first",
            )
    # A peer's binary as it answered; its active version follows the log (it applies the record too).
    binaries = [{key: peer.get(key) for key in ("name", "cluster", "binary_version", "core_versions")} for peer in peers]
    if target == active:
        return {"changed": False, "active_core_version": active, "previous_core_version": active, "lsn": node.lsn, "nodes": [mine, *binaries]}
    result = await node.submit(c.ActivateCoreVersion(version=target, actor=actor))
    if isinstance(result, Rejection):
        raise UpgradeRefused(result.code, result.message)
    return {
        "changed": True, "active_core_version": node.center.state.core_version, "previous_core_version": active,
        "lsn": result.lsn, "nodes": [local_versions(node), *binaries],
    }
