"""The gateway: bridge meshes on several hosts over NATS (docs/gateway.md).

A top layer beside :mod:`pipemesh.integrations`: it may import the runtime,
transport, registry, wire and codec, and nothing below imports it. It needs the
``gateway`` extra (``nats-py``); importing this package alone does not.
"""
