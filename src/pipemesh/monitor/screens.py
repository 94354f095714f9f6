"""The dashboard's pop-up screens: one record in full, and the compose form.

The compose form collects a :class:`Draft` and hands it to a callback that
sends it (see :class:`~pipemesh.monitor.human.HumanAgent`). A failure is shown
in the form, which stays open with everything typed, so nothing is lost and a
person can fix the name or shorten the body and send again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Literal

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Input, Label, Static, TextArea

from pipemesh.errors import MeshError

__all__ = ["ComposeScreen", "DetailScreen", "Draft", "Mode"]

Mode = Literal["send", "reply", "broadcast"]
DEFAULT_TYPE: Final[dict[str, str]] = {
    "send": "question",
    "reply": "response",
    "broadcast": "broadcast",
}


class DetailScreen(ModalScreen[None]):
    """One record in full: the header fields, then the whole body."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss", "Back"),
        Binding("q", "dismiss", "Back"),
    ]
    DEFAULT_CSS = """
    DetailScreen { align: center middle; }
    DetailScreen > VerticalScroll {
        width: 90%; height: 85%; border: thick $accent; background: $surface; padding: 0 1;
    }
    """

    def __init__(self, title: str, fields: dict[str, Any], body: str) -> None:
        super().__init__()
        self._title, self._fields, self._body = title, fields, body

    def compose(self) -> ComposeResult:
        head = Text(self._title + "\n", style="bold")
        for key, value in self._fields.items():
            head.append(f"{key:>10}: ", style="bold cyan")
            head.append(f"{value}\n")
        with VerticalScroll():
            yield Static(head, id="detail-header")
            yield Static(Text(self._body), id="detail-body")  # Text: never parsed as markup
        yield Footer()


@dataclass(frozen=True, slots=True)
class Draft:
    """What the person wrote, ready to send."""

    mode: Mode
    body: str
    msg_type: str
    priority: int
    to: str = ""
    reply_to: dict[str, Any] = field(default_factory=dict)


def _priority(text: str) -> int:
    value = text.strip() or "1"
    if value not in ("0", "1", "2", "3"):
        raise ValueError(f"priority must be 0, 1, 2 or 3, got {value!r}")
    return int(value)


class ComposeScreen(ModalScreen[str | None]):
    """Write a message, a reply or a broadcast; Ctrl+S sends, Esc cancels.

    Args:
        mode: ``send`` (to a name), ``reply`` (to ``reply_to``'s sender) or ``broadcast``.
        sender: the name everything is sent as (shown in the title).
        submit: sends a :class:`Draft`; returns a one-sentence outcome or raises
            ``MeshError``/``ValueError``, whose text the form shows.
        to: the recipient to pre-fill (``send``).
        reply_to: the logged message being answered (``reply``).

    Dismisses with the outcome sentence, or None when cancelled.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "send", "Send", priority=True),
        Binding("escape", "cancel", "Cancel", priority=True),
    ]
    DEFAULT_CSS = """
    ComposeScreen { align: center middle; }
    ComposeScreen > Vertical {
        width: 90%; max-width: 110; height: auto; max-height: 90%;
        border: thick $accent; background: $surface; padding: 0 1;
    }
    ComposeScreen .compose-row { height: 3; }
    ComposeScreen .compose-row Label { width: 10; padding: 1 1 0 0; }
    ComposeScreen #compose-to { width: 1fr; }
    ComposeScreen #compose-type { width: 16; }
    ComposeScreen #compose-priority { width: 7; }
    ComposeScreen #compose-body { height: 8; }
    ComposeScreen #compose-error { color: $error; text-style: bold; height: auto; }
    ComposeScreen #compose-re { color: $text-muted; height: auto; }
    """

    def __init__(
        self,
        mode: Mode,
        *,
        sender: str,
        submit: Callable[[Draft], str],
        to: str = "",
        reply_to: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.mode: Mode = mode
        self.sender = sender
        self._submit = submit
        self._to = to
        self._reply_to = reply_to or {}
        self.error = ""  # the last error shown in the form

    def compose(self) -> ComposeResult:
        titles = {
            "send": f"Send a message as {self.sender}",
            "reply": f"Reply as {self.sender}",
            "broadcast": f"Broadcast to every active agent as {self.sender}",
        }
        with Vertical():
            yield Static(Text(titles[self.mode], style="bold"), id="compose-title")
            if self.mode == "reply":
                rec = self._reply_to
                body = str(rec.get("body", "")).replace("\n", " | ")
                yield Static(
                    Text(
                        f"to {rec.get('from', '?')}, answering {rec.get('id', '?')} "
                        f"({rec.get('type', '')}): {body[:200]}"
                    ),
                    id="compose-re",
                )
            with Horizontal(classes="compose-row"):
                if self.mode == "send":
                    yield Label("To")
                    yield Input(self._to, placeholder="agent name", id="compose-to")
                yield Label("Type")
                yield Input(DEFAULT_TYPE[self.mode], id="compose-type")
                yield Label("Priority")
                yield Input("1", id="compose-priority")
            yield TextArea(id="compose-body", soft_wrap=True, show_line_numbers=False)
            yield Static("", id="compose-error")
        yield Footer()

    def on_mount(self) -> None:
        if self.mode == "send" and not self._to:
            self.query_one("#compose-to", Input).focus()
        else:
            self.query_one("#compose-body", TextArea).focus()

    def draft(self) -> Draft:
        """The form's content as a :class:`Draft` (ValueError for a bad priority or no body)."""
        body = self.query_one("#compose-body", TextArea).text
        if not body.strip():
            raise ValueError("the message is empty: write something in the body")
        to = self.query_one("#compose-to", Input).value.strip() if self.mode == "send" else ""
        return Draft(
            mode=self.mode,
            body=body,
            msg_type=self.query_one("#compose-type", Input).value.strip(),
            priority=_priority(self.query_one("#compose-priority", Input).value),
            to=to,
            reply_to=self._reply_to,
        )

    def action_send(self) -> None:
        error = self.query_one("#compose-error", Static)
        try:
            outcome = self._submit(self.draft())
        except (MeshError, ValueError) as exc:
            self.error = str(exc)
            error.update(Text(f"not sent: {exc}"))
            return
        self.dismiss(outcome)

    def action_cancel(self) -> None:
        self.dismiss(None)
