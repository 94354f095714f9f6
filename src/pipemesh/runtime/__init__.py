"""The agent runtime: threads live here and nowhere else in the package."""

from __future__ import annotations

from pipemesh.runtime.agent import AgentBase, BroadcastResult, Delivery, MeshClient, SendResult

__all__ = ["AgentBase", "BroadcastResult", "Delivery", "MeshClient", "SendResult"]
