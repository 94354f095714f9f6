"""An agent for tests that keeps every message its handler gets."""

from __future__ import annotations

import threading

from pipemesh import AgentBase, Message


class Keeper(AgentBase):
    """Keeps what ``on_message_received`` gets (no heartbeat), readable from any thread."""

    def __init__(self, *args: object, **kw: object) -> None:
        self.got: list[Message] = []
        self.lock = threading.Lock()
        super().__init__(*args, heartbeat_s=0, **kw)  # type: ignore[arg-type]

    def on_message_received(self, msg: Message) -> None:
        with self.lock:
            self.got.append(msg)

    def bodies(self) -> list[str]:
        with self.lock:
            return [m.body for m in self.got]
