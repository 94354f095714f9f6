"""What the CLI shows people: escaping of mesh text, plain tables when piped."""

from __future__ import annotations

import io

from pipemesh._term import Screen, plain_table, safe


def test_safe_escapes_everything_that_drives_a_terminal() -> None:
    """ESC, CR, BEL, C1 (CSI), DEL and bidi overrides become visible escapes."""
    assert safe("\x1b[2J\rx\x07\x9b1m\x7f") == "\\x1b[2J\\x0dx\\x07\\x9b1m\\x7f"
    assert safe("abc\u202edef") == "abc\\u202edef"


def test_safe_keeps_text_tabs_and_chooses_newlines() -> None:
    """Letters of any script and tabs stay; newlines become ' | ' unless kept."""
    assert safe("héllo\twörld 日本") == "héllo\twörld 日本"
    assert safe("a\nb") == "a | b"
    assert safe("a\nb", newlines=True) == "a\nb"


def test_screen_is_plain_when_not_a_terminal() -> None:
    """A non-terminal stream gets aligned plain columns and no escape sequences."""
    out = io.StringIO()
    screen = Screen(out)
    assert not screen.is_tty
    screen.table(("NAME", "PID"), [("gemini", 12), ("codex", 3)], title="ignored when piped")
    screen.line([("bold", "bold cyan"), (" text", "")])
    assert out.getvalue() == plain_table(("NAME", "PID"), [("gemini", 12), ("codex", 3)]) + (
        "\nbold text\n"
    )
    assert "\x1b" not in out.getvalue()
