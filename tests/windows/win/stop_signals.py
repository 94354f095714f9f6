"""Windows side: Ctrl-C (SIGINT) and Ctrl-Break (SIGBREAK) make `pipemesh listen` leave cleanly.

Wine has no console to deliver a real Ctrl-Break from in CI, so the signal is raised inside
the process (``signal.raise_signal``, the C runtime's ``raise``): what is tested is that
pipemesh's handlers run while the main thread waits and that the agent then unregisters.

Usage: python stop_signals.py HOME SIGNAME   (prints one JSON line)
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time

from pipemesh.cli import main
from pipemesh.registry import Registry


def raise_when_registered(home: str, signame: str, seen: dict[str, object]) -> None:
    registry = Registry(f"{home}\\agent_registry.json", f"{home}\\agent_registry.json.lock")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if "x" in registry.read():
            seen["registered"] = True
            signal.raise_signal(getattr(signal, signame))
            return
        time.sleep(0.02)


if __name__ == "__main__":
    home, signame = sys.argv[1], sys.argv[2]
    seen: dict[str, object] = {"registered": False}
    threading.Thread(target=raise_when_registered, args=(home, signame, seen), daemon=True).start()
    started = time.monotonic()
    code = main(["--home", home, "listen", "x"])
    seen["exit_code"] = code
    seen["seconds"] = round(time.monotonic() - started, 2)
    reg = Registry(f"{home}\\agent_registry.json", f"{home}\\agent_registry.json.lock")
    seen["left"] = sorted(reg.read())
    print(json.dumps(seen))
