"""``pipemesh history`` and ``pipemesh stats --plot/--html`` on logs from real traffic,
with rotation forced by a small PIPEMESH_LOG_MAX_BYTES."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipemesh.observe import COMM_LOG, LATENCY_LOG, log_files, read_log
from pipemesh.runtime.agent import AgentBase
from tests.conftest import Spawner, run_cli, wait_for
from tests.integration.meshproc import ECHO_AGENT, active_agents

pytestmark = pytest.mark.integration

QUESTIONS = 40


@pytest.fixture
def traffic(mesh_home: Path, spawn: Spawner, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """Real traffic: asker asks echo QUESTIONS questions; logs rotate several times."""
    monkeypatch.setenv("PIPEMESH_LOG_MAX_BYTES", "1500")
    monkeypatch.setenv("PIPEMESH_LOG_KEEP", "1000")
    spawn.python(ECHO_AGENT, "echo", "0")
    wait_for(lambda: "echo" in active_agents(mesh_home), 30)
    ids: list[str] = []
    replies: dict[str, str] = {}
    with AgentBase("asker", "tester", mesh_home, heartbeat_s=0) as asker:
        for i in range(QUESTIONS):
            word = "needle" if i == 7 else f"hay{i}"
            reply = asker.ask("echo", f"question {i} {word}", timeout_s=30)
            ids.append(reply.reply_to)
            replies[reply.reply_to] = reply.id
        asker.send_message("echo", "a directive", msg_type="directive")
    logs = mesh_home / "logs"
    # The echo agent's log thread writes its last records a moment after replying.
    wait_for(
        lambda: sum(1 for _ in read_log(logs / LATENCY_LOG)) >= QUESTIONS,
        30,
    )
    # ... and its frame_sent records of the replies (else two queries a moment apart
    # can see different sets of responses).
    wait_for(
        lambda: (
            sum(
                1
                for r in read_log(logs / COMM_LOG)
                if r.get("event") == "frame_sent" and r.get("from") == "echo"
            )
            >= QUESTIONS
        ),
        30,
    )
    return {"ids": ids, "replies": replies, "logs": logs}


def history_json(*args: str) -> list[dict[str, object]]:
    result = run_cli("history", "--json", *args)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_history_searches_across_rotated_logs(traffic: dict[str, object]) -> None:
    """Search by agent, peer, type and text finds messages in rotated files; threads
    join a question with its reply; JSON carries latency."""
    logs = traffic["logs"]
    assert isinstance(logs, Path)
    assert len(log_files(logs / COMM_LOG)) >= 2, "the traffic must rotate the log"
    ids = traffic["ids"]
    replies = traffic["replies"]
    assert isinstance(ids, list)
    assert isinstance(replies, dict)

    questions = history_json("--agent", "asker", "--type", "question")
    assert [r["id"] for r in questions] == ids  # every one, oldest first, across files
    assert all(r["from"] == "asker" and r["to"] == "echo" for r in questions)

    found = history_json("--text", "NEEDLE")
    assert {r["id"] for r in found} == {ids[7], replies[ids[7]]}  # question and its echo

    thread = history_json("--thread", ids[0])
    assert [r["id"] for r in thread] == [ids[0], replies[ids[0]]]
    assert thread[1]["re"] == ids[0]
    assert isinstance(thread[0]["latency_us"], float)

    directives = history_json("--agent", "asker", "--peer", "echo", "--type", "directive")
    assert [r["body"] for r in directives] == ["a directive"]

    assert (
        history_json("--since", "1h", "--type", "response", "-n", "3")
        == history_json("--type", "response")[-3:]
    )
    assert history_json("--until", "1h", "--type", "response") == []

    text = run_cli("history", "--thread", ids[1])
    assert text.returncode == 0
    assert "question 1 hay1" in text.stdout
    assert "echo: question 1 hay1" in text.stdout

    missing = run_cli("history", "--thread", "no-such-id")
    assert missing.returncode == 2
    assert "no message with id no-such-id" in missing.stderr


def test_stats_plot_and_html(traffic: dict[str, object], tmp_path: Path) -> None:
    """stats --plot writes a PNG and --html a page with the table and the image."""
    png, page = tmp_path / "lat.png", tmp_path / "lat.html"
    result = run_cli("stats", "--plot", str(png), "--html", str(page))
    assert result.returncode == 0, result.stderr
    assert "echo" in result.stdout
    assert "asker" in result.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = page.read_text()
    assert "data:image/png;base64," in html
    assert "<td>echo</td>" in html


def test_stats_plot_without_records_is_a_usage_error(mesh_home: Path, tmp_path: Path) -> None:
    """An empty mesh has nothing to draw: exit 2 with a hint, no file written."""
    result = run_cli("stats", "--plot", str(tmp_path / "x.png"))
    assert result.returncode == 2
    assert "no latency records" in result.stderr
    assert not (tmp_path / "x.png").exists()
