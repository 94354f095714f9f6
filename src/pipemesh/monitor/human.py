"""The person at the dashboard as an agent on the mesh: send, reply, broadcast.

:class:`HumanAgent` joins the mesh under a name (``human-<user>`` by default)
the first time the person sends something, so merely watching registers
nothing, and leaves cleanly on :meth:`HumanAgent.close`. Every method returns
one sentence for the status line or raises a :class:`~pipemesh.errors.MeshError`
(or ``ValueError`` for a bad name, type or priority) whose text the dashboard
shows as it is. No Textual here, and no threads of its own: the agent's
threads live in :mod:`pipemesh.runtime`.
"""

from __future__ import annotations

import getpass
import re
from collections import deque
from typing import Any, Final

from pipemesh.home import MeshHome
from pipemesh.runtime.agent import AgentBase, Delivery, SendResult
from pipemesh.wire import MAX_BODY_BYTES, NAME_MAX, Message, validate_name

__all__ = ["HumanAgent", "default_human_name"]

ROLE: Final = "human"
_INBOX_KEEP: Final = 1000


def default_human_name() -> str:
    """``human-<user>``, with the login name cut to what an agent name may hold."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no $USER: a container, say
        user = "user"
    user = re.sub(r"[^A-Za-z0-9_.-]+", "-", user).strip(".-") or "user"
    return f"human-{user}"[:NAME_MAX].rstrip(".-")


class _Inbox(AgentBase):
    """An agent that keeps what it receives for the dashboard to show."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Set before AgentBase starts the router, which may deliver at once.
        self.arrived: deque[Message] = deque(maxlen=_INBOX_KEEP)
        super().__init__(*args, **kwargs)

    def on_message_received(self, msg: Message) -> None:
        self.arrived.append(msg)  # deque.append is atomic: the dashboard pops on its timer


class HumanAgent:
    """A named agent for a person, joined on first use.

    Args:
        home: the mesh home to join.
        name: the agent name (FROM of everything sent).
        send_timeout_s: how long a send waits on a full pipe (the dashboard
            waits with it, so keep it short).
        registry_lock_timeout_s: how long joining waits for the registry lock.
        max_body_bytes: largest body sent or received (the mesh's default limit).

    Raises:
        ValueError: ``name`` is not a valid agent name.
    """

    def __init__(
        self,
        home: MeshHome,
        name: str,
        *,
        send_timeout_s: float = 2.0,
        registry_lock_timeout_s: float = 5.0,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.home = home
        self.name = validate_name(name, "--as name")
        self.send_timeout_s = send_timeout_s
        self.registry_lock_timeout_s = registry_lock_timeout_s
        self.max_body_bytes = max_body_bytes
        self._agent: _Inbox | None = None
        self._closed = False

    @property
    def is_joined(self) -> bool:
        """True while the agent is registered on the mesh."""
        return self._agent is not None

    def join(self) -> AgentBase:
        """Join the mesh now (idempotent) and return the agent.

        Raises:
            NameTaken: a live agent already holds the name (start with ``--as OTHER``).
            RegistryLockTimeout: the registry stayed locked.
            TransportClosed: the dashboard is closing.
        """
        if self._closed:
            raise ValueError("the dashboard is closing; nothing more is sent")
        if self._agent is None:
            self._agent = _Inbox(
                self.name,
                ROLE,
                self.home.root,
                send_timeout_s=self.send_timeout_s,
                registry_lock_timeout_s=self.registry_lock_timeout_s,
                max_body_bytes=self.max_body_bytes,
            )
        return self._agent

    def send(self, to: str, body: str, *, msg_type: str, priority: int) -> str:
        """Send ``body`` to ``to``; return what happened, as one sentence."""
        to = to.strip()
        if not to:
            raise ValueError("say who to send to: type an agent name in To")
        result = self.join().send(to, body, priority, msg_type)
        return _sent(result, to)

    def reply(self, rec: dict[str, Any], body: str, *, msg_type: str, priority: int) -> str:
        """Answer the logged message ``rec``: to its sender, with ``RE`` set to its ID."""
        to, msg_id = str(rec.get("from", "")), str(rec.get("id", ""))
        if not to or not msg_id:
            raise ValueError("the selected row is not a message with a sender and an id")
        result = self.join().send(to, body, priority, msg_type, reply_to=msg_id)
        return _sent(result, to) + f" (reply to {msg_id})"

    def broadcast(self, body: str, *, msg_type: str, priority: int) -> str:
        """Send ``body`` to every other active agent; return the outcome per recipient."""
        agent = self.join()
        agent.refresh_peers()  # a person expects "everyone now", not the cached view
        result = agent.broadcast_message(body, priority, msg_type)
        parts = [f"broadcast {result.id}: delivered to {len(result.delivered)}"]
        if result.delivered:
            parts[0] += f" ({', '.join(sorted(result.delivered))})"
        if result.queued:
            parts.append(f"queued for {', '.join(sorted(result.queued))}")
        if result.failed:
            parts.append(
                "failed for "
                + "; ".join(f"{n}: {result.errors.get(n, 'failed')}" for n in sorted(result.failed))
            )
        if not result.outcomes:
            parts.append("no other agent is active, so nobody received it")
        return "; ".join(parts)

    def take_arrived(self) -> list[Message]:
        """Messages addressed to the person since the last call, oldest first."""
        agent = self._agent
        if agent is None:
            return []
        out: list[Message] = []
        while agent.arrived:
            out.append(agent.arrived.popleft())
        return out

    def close(self) -> None:
        """Leave the mesh (unregister, remove the pipes); idempotent."""
        self._closed = True
        agent, self._agent = self._agent, None
        if agent is not None:
            agent.close()


def _sent(result: SendResult, to: str) -> str:
    if result.delivery is Delivery.QUEUED:
        return f"queued {result.id} for {to} (durable and not reading: it gets it when it starts)"
    return f"sent {result.id} to {to}"
