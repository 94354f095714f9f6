"""The agent program the gateway tests run on each "host" (inside its netns).

argv: name record_path durable(0/1)

Every message handled is appended to the record file as one JSON line (one
``write``: the agent's own record of its effect). A message of type
``question`` gets the reply ``re:<body>``. Commands come on stdin as JSON lines
and each result goes to stdout as one JSON line:

  {"op": "send", "to": ..., "body": ..., "priority": 1, "type": "directive", "ack": false}
  {"op": "ask", "to": ..., "body": ..., "timeout": 20}
  {"op": "broadcast", "body": ...}
  {"op": "burst", "to": ..., "prefix": ..., "count": N}   # N plain sends, results counted
"""

from __future__ import annotations

AGENT = r"""
import json, os, sys, time
from pipemesh import AgentBase, MeshError
name, record, durable = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
fd = os.open(record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

class Agent(AgentBase):
    def on_message_received(self, msg):
        os.write(fd, (json.dumps({"sender": msg.sender, "id": msg.id, "body": msg.body,
            "priority": msg.priority, "type": msg.msg_type, "re": msg.reply_to,
            "to": msg.to}) + "\n").encode())
        if msg.msg_type == "question":
            self.reply(msg, "re:" + msg.body)

def out(doc):
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()

with Agent(name, durable=durable, heartbeat_s=1.0, spool_fsync=False,
           send_timeout_s=5.0) as agent:
    out({"ready": name})
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        try:
            if op == "send":
                r = agent.send(cmd["to"], cmd["body"], cmd.get("priority", 1),
                               cmd.get("type", "directive"), ack=cmd.get("ack", False),
                               ack_timeout_s=cmd.get("ack_timeout", 20.0))
                out({"ok": True, "id": r.id, "delivery": str(r.delivery), "acked": r.acked})
            elif op == "ask":
                reply = agent.ask(cmd["to"], cmd["body"], cmd.get("timeout", 20.0))
                out({"ok": True, "body": reply.body, "sender": reply.sender})
            elif op == "broadcast":
                r = agent.broadcast_message(cmd["body"])
                out({"ok": True, "delivered": sorted(r.delivered)})
            elif op == "burst":
                counts = {}
                ids = []
                for i in range(cmd["count"]):
                    try:
                        r = agent.send(cmd["to"], f"{cmd['prefix']}{i}")
                        counts[str(r.delivery)] = counts.get(str(r.delivery), 0) + 1
                        ids.append(r.id)
                    except MeshError as exc:
                        counts[type(exc).__name__] = counts.get(type(exc).__name__, 0) + 1
                    if cmd.get("pause"):
                        time.sleep(cmd["pause"])
                out({"ok": True, "counts": counts, "ids": ids})
            elif op == "quit":
                out({"ok": True})
                break
        except MeshError as exc:
            out({"ok": False, "error": type(exc).__name__, "message": str(exc)})
"""
