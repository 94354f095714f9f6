"""``import pipemesh`` then ``pipemesh.<submodule>`` works, as before the package went lazy.

Before PEP 562 re-exports, ``import pipemesh`` imported home, registry, runtime and wire
(and what they import), which bound them as attributes of the package: code and docs
(README: ``pipemesh.runtime.agent.DEFAULT_MSG_TYPE``) use that dotted access. A fresh
interpreter is needed: in the test process the submodules are imported already.
"""

from __future__ import annotations

import subprocess
import sys

CODE = """
import pipemesh
print(pipemesh.runtime.agent.DEFAULT_MSG_TYPE)
print(pipemesh.wire.is_valid_name("bob"), pipemesh.codec.BINARY, pipemesh.registry.ACTIVE)
try:
    pipemesh.no_such_thing
except AttributeError as exc:
    print("AttributeError", exc)
print(hasattr(pipemesh, "no_such_thing"))
"""


def test_submodules_are_reachable_as_attributes_after_import_pipemesh() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CODE], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "directive",
        "True binary active",
        "AttributeError module 'pipemesh' has no attribute 'no_such_thing'",
        "False",
    ]
