"""Benchmark of pipemesh against its baselines: raw FIFO, Unix socket, ZeroMQ, Redis.

Public entry points: `run_bench` (a `BenchConfig` in, a `BenchReport` out) and `main`
(the ``python -m pipemesh.bench`` / ``pipemesh bench`` command line). New scenarios plug
in as `Scenario` values built with `run_ping_pong` / `run_fan_in` and listed in
`pipemesh.bench.scenarios.default_scenarios`; `pipemesh.bench.harness` says how.

The names below are loaded on first use, not at import: every benchmark worker process
imports this package on its way to ``pipemesh.bench._worker``, and must not pay for the
harness (a fan-in row starts a hundred workers; an idle-agent RSS row must not weigh it).
Nothing in the core package imports the benchmark. Its optional engines (pyzmq,
redis-py) come from the ``bench`` extra.
"""

from __future__ import annotations

import importlib
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from pipemesh.bench.cli import main
    from pipemesh.bench.harness import (
        BenchConfig,
        BenchReport,
        BenchRow,
        Measurement,
        Scenario,
        ScenarioContext,
        SizePlan,
        Unavailable,
        WorkerSpec,
        rss_bytes,
        run_bench,
        run_fan_in,
        run_ping_pong,
    )
    from pipemesh.bench.scenarios import default_scenarios

__all__ = [
    "BenchConfig",
    "BenchReport",
    "BenchRow",
    "Measurement",
    "Scenario",
    "ScenarioContext",
    "SizePlan",
    "Unavailable",
    "WorkerSpec",
    "default_scenarios",
    "main",
    "rss_bytes",
    "run_bench",
    "run_fan_in",
    "run_ping_pong",
]

_HOME: Final = MappingProxyType(
    {
        **dict.fromkeys(__all__, "pipemesh.bench.harness"),
        "main": "pipemesh.bench.cli",
        "default_scenarios": "pipemesh.bench.scenarios",
    }
)


def __getattr__(name: str) -> object:
    """Load a public name from its module on first use (PEP 562)."""
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'pipemesh.bench' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
