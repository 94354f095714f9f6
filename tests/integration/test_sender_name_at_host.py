"""A local sender cannot take a remote agent's name (``name@host``, registered by a gateway).

``name@host`` is valid on the wire since the gateway came, so that a gateway can write
messages from remote agents. A local MeshClient (``pipemesh send --from``) named so would
speak for an agent on another host: the recipient's reply goes through the gateway to that
host's agent, which never sent anything. AgentBase refuses such names; MeshClient must too.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from pipemesh import AgentBase, MeshClient, Message
from pipemesh.cli import main
from tests.conftest import wait_for

pytestmark = pytest.mark.integration


class Keeper(AgentBase):
    def __init__(self, *args: object, **kw: object) -> None:
        self.got: list[Message] = []
        self.lock = threading.Lock()
        super().__init__(*args, heartbeat_s=0, **kw)  # type: ignore[arg-type]

    def on_message_received(self, msg: Message) -> None:
        with self.lock:
            self.got.append(msg)


def test_mesh_client_refuses_a_name_at_host(mesh_home: Path) -> None:
    with pytest.raises(ValueError, match="another host"):
        MeshClient("carol@b", mesh_home)


def test_cli_send_from_name_at_host_is_one_line_usage_error(
    mesh_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Keeper("bob") as bob:
        code = main(["--home", str(mesh_home), "send", "--from", "carol@b", "bob", "hi"])
        err = capsys.readouterr().err
        assert code == 2
        assert err.count("\n") == 1
        assert "another host" in err
        # Nothing arrived claiming to be carol on host b (a control send proves the pipe).
        assert main(["--home", str(mesh_home), "send", "bob", "control"]) == 0
        wait_for(lambda: any(m.body == "control" for m in bob.got))
        assert [m.sender for m in bob.got] == ["cli"]
