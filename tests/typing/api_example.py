"""Public-API examples that must type-check under mypy --strict (not run by pytest)."""

from __future__ import annotations

from pipemesh import (
    AgentBase,
    BroadcastResult,
    Delivery,
    MeshClient,
    MeshError,
    Message,
    Priority,
    ReplyTimeout,
)


class Echo(AgentBase):
    """The ten-line agent from the README."""

    def on_message_received(self, msg: Message) -> None:
        if msg.msg_type == "question":
            self.reply(msg, msg.body.upper())


def use_agent() -> None:
    with Echo("echo", role="tool") as agent:
        msg_id: str = agent.send_message("gemini", "hi", Priority.URGENT, "question")
        result: BroadcastResult = agent.broadcast_message("all hands")
        delivered: list[str] = result.delivered
        if result.outcomes.get("gemini") is Delivery.OFFLINE:
            pass
        try:
            answer: Message = agent.ask("gemini", "plan?", timeout_s=5.0)
            print(answer.body, answer.reply_to, msg_id, delivered)
        except ReplyTimeout as exc:
            print(exc.agent_id, exc.message_id)
        except MeshError:
            raise
        history: list[Message] = agent.history("gemini")
        print(len(history), agent.peers().keys(), agent.status())


def use_client() -> str:
    with MeshClient("cli") as client:
        return client.send_message("echo", "hello", msg_type="question")
