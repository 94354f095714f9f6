"""Sends of large bodies through body files (the sending half of :mod:`pipemesh.runtime.bodies`).

:class:`~pipemesh.runtime.client.MeshClient` calls these through its ``_body_ref`` and
``_write_body`` hooks: a body of ``body_file_min_bytes`` or more, to a peer whose record
lists the ``file`` capability, goes to a body file in the home and one small ``FILE``
frame in the pipe (docs/frames.md, "Body files"); anything that prevents the file means
``PART`` frames instead.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

from pipemesh import codec
from pipemesh.codec import FrameKind
from pipemesh.errors import EncodeError
from pipemesh.runtime import bodies
from pipemesh.transport.fifo import FifoOutbox

if TYPE_CHECKING:
    from pipemesh.runtime.client import MeshClient

__all__ = ["body_ref", "write_body"]


def body_ref(
    client: MeshClient,
    kind: FrameKind,
    to: str,
    body: bytes,
    msg_id: str,
    priority: int,
    msg_type: str,
    sent_ns: int,
    reply_to: str,
    ack: bool,
) -> bodies.BodyRef | None:
    """The body file reference for ``to`` if it takes body files, else None."""
    rec = client._peers.get(to)
    if rec is None:
        rec = client.refresh_peers().get(to)
    if rec is None or bodies.CAPABILITY not in rec.frames:
        return None
    make_inline = functools.partial(
        codec.encode_message,
        kind,
        client.agent_name,
        to,
        body,
        msg_id=msg_id,
        priority=priority,
        msg_type=msg_type,
        sent_ns=sent_ns,
        reply_to=reply_to,
        max_frame_bytes=client.transport.max_frame_bytes,
        check=False,
        ack=ack,
    )
    try:
        return bodies.reference(
            kind,
            client.agent_name,
            to,
            body,
            msg_id=msg_id,
            priority=priority,
            msg_type=msg_type,
            sent_ns=sent_ns,
            reply_to=reply_to,
            ack=ack,
            make_inline=make_inline,
        )
    except EncodeError as exc:
        raise ValueError(str(exc)) from None


def write_body(
    client: MeshClient,
    to: str,
    ref: bodies.BodyRef,
    timeout_s: float,
    write: Callable[[str, list[bytes], float], None],
) -> None:
    """Write ``ref``'s body file for ``to``, then the frame with ``write``.

    A file that cannot be written means ``PART`` frames instead (reported
    ``body_file_failed``); a frame that cannot be written removes the file.
    """
    store = client._bodies
    outbox = client._outbox(to)
    if store is None or (
        isinstance(outbox, FifoOutbox) and outbox.unread_bytes() > bodies.MAX_UNREAD_BYTES
    ):
        # Its reader is behind: PART frames wait for room in the pipe, so unread body
        # files stay few (a stalled reader could otherwise collect one per send).
        write(to, ref.inline(), timeout_s)
        return
    try:
        path = store.put(to, ref)
    except OSError as exc:
        client.events.error(
            "body_file_failed",
            f"cannot write the body file of {ref.msg_id} for {to} "
            f"({exc.strerror or exc}); sent as {len(ref.body)} bytes of PART frames instead",
            to=to,
            id=ref.msg_id,
        )
        write(to, ref.inline(), timeout_s)
        return
    try:
        write(to, list(ref), timeout_s)
    except BaseException:
        store.discard(path)
        raise
