"""What the CLI shows a person: escaped text, tables and colour on a terminal, plain when piped.

* :func:`safe` makes text from the mesh (bodies, and any field of a log record) harmless on
  a terminal: control characters, ANSI escape sequences and bidirectional overrides are shown
  as visible escapes (``\\x1b``) instead of being obeyed.
* :class:`Screen` writes tables and message lines: with ``rich`` (boxes, colour) when the
  stream is a terminal, plain aligned text when it is a pipe or a file, and never colour when
  ``NO_COLOR`` is set (https://no-color.org; rich reads it too).

Only the CLI imports this module; it must not touch the mesh.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Final

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["Screen", "Segment", "plain_table", "safe"]

# C0 controls except TAB and LF, DEL, C1 controls (CSI is \x9b), zero-width and
# bidirectional formatting characters that can make text display other than it reads.
_UNSAFE: Final = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]"
)

Segment = tuple[str, str]
"""A piece of a line and its rich style ("" for none)."""


def _escape(m: re.Match[str]) -> str:
    code = ord(m[0])
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe(text: object, *, newlines: bool = False) -> str:
    """``text`` with every character that could drive a terminal shown as an escape.

    Args:
        text: anything; it is converted with ``str``.
        newlines: keep line feeds (for multi-line bodies); otherwise they become `` | ``.
    """
    out = _UNSAFE.sub(_escape, str(text))
    return out if newlines else out.replace("\n", " | ")


def plain_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Columns padded with spaces, one row per line (what scripts and pipes get)."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines)


class Screen:
    """One output stream: rich on a terminal, plain text otherwise.

    Args:
        stream: where to write (default ``sys.stdout``).
    """

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        try:
            self.is_tty = self.stream.isatty()
        except (ValueError, OSError):  # closed stream
            self.is_tty = False
        self.color = self.is_tty and not os.environ.get("NO_COLOR")
        self._console: Console | None = None

    def _rich(self) -> Console:
        if self._console is None:
            from rich.console import Console  # noqa: PLC0415 - only on a terminal

            self._console = Console(
                file=self.stream, no_color=not self.color, highlight=False, soft_wrap=True
            )
        return self._console

    def table(
        self,
        headers: Sequence[str],
        rows: Sequence[Sequence[object]],
        *,
        title: str = "",
        styles: Sequence[str] = (),
    ) -> None:
        """A table; ``styles`` gives a rich style per column (used on a terminal only)."""
        if not self.is_tty:
            self.stream.write(plain_table(headers, rows) + "\n")
            self.stream.flush()
            return
        from rich.table import Table  # noqa: PLC0415 - only on a terminal

        table = Table(title=title or None, title_justify="left", header_style="bold")
        for i, header in enumerate(headers):
            style = styles[i] if i < len(styles) else ""
            numeric = header.endswith(("_US", "COUNT", "PID", "AGE"))
            table.add_column(header, style=style or None, justify="right" if numeric else "left")
        for row in rows:
            table.add_row(*(str(c) for c in row))
        self._rich().print(table)

    def line(self, segments: Sequence[Segment]) -> None:
        """One line (or a few, if a segment holds newlines) built from styled segments."""
        if self.is_tty and self.color:
            from rich.text import Text  # noqa: PLC0415 - only on a terminal

            self._rich().print(Text.assemble(*((t, s) for t, s in segments)))
        else:
            self.stream.write("".join(t for t, _ in segments) + "\n")
        self.stream.flush()

    def text(self, text: str) -> None:
        """Plain text as it is (already made safe by the caller)."""
        self.stream.write(text + "\n")
        self.stream.flush()
