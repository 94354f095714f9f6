"""How pipemesh meets coding-agent CLIs, in one place.

- :mod:`.mcp`: the MCP server (``pipemesh mcp``) that gives Claude Code, Gemini CLI and Codex
  the mesh as tools, with a durable inbox file (:mod:`._inbox`);
- :mod:`.hooks`: the hook commands (``pipemesh hook ...``) that hand waiting messages to the model;
- :mod:`.setup_clients`: ``pipemesh setup <cli>``, the per-CLI configuration it writes;
- :mod:`.agents`: ``pipemesh run <cli>``, a headless CLI process pool that answers mesh messages.

Nothing here is imported by the core (wire, transport, runtime).
"""
