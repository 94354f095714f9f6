"""Windows side: agent ``bob`` that answers every question with ``echo: <body>``.

Prints ``ready`` once registered; leaves cleanly when its stdin closes.
Usage: python responder.py HOME
"""

from __future__ import annotations

import sys

from pipemesh import AgentBase
from pipemesh.wire import Message


class Bob(AgentBase):
    def on_message_received(self, msg: Message) -> None:
        if msg.msg_type == "question":
            self.reply(msg, f"echo: {msg.body}")


if __name__ == "__main__":
    with Bob("bob", role="responder", home=sys.argv[1]):
        print("ready", flush=True)
        sys.stdin.read()
