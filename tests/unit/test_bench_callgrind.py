"""Reading callgrind output files: the totals that ``pipemesh bench --instructions`` sums."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipemesh.bench.instructions import CountFailed, callgrind_total


def test_callgrind_total_reads_the_totals_line(tmp_path: Path) -> None:
    """The ``totals:`` line is the process's instruction count."""
    out = tmp_path / "callgrind.out.1"
    out.write_text(
        "# callgrind format\nevents: Ir\nfn=main\n5 100\nsummary: 12345\ntotals: 12345\n"
    )
    assert callgrind_total(out) == 12345


def test_callgrind_total_without_totals_fails_clearly(tmp_path: Path) -> None:
    """A file cut short (the process died) is an error naming the file, not a zero."""
    out = tmp_path / "callgrind.out.2"
    out.write_text("# callgrind format\nevents: Ir\nfn=main\n")
    with pytest.raises(CountFailed, match=r"callgrind\.out\.2 has no 'totals:' line"):
        callgrind_total(out)
