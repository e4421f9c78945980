"""``saga bench``: throughput, latency and cost per saga of the whole system, beside a
raw-broker baseline measured in the same run. See ``docs/benchmarks.md``."""

from orchestrator.dev.bench.results import BenchReport, LevelResult, Percentiles, StoreOps
from orchestrator.dev.bench.runner import BenchConfig, Display, NullDisplay, run_bench
from orchestrator.dev.bench.system import Workload

__all__ = [
    "BenchConfig",
    "BenchReport",
    "Display",
    "LevelResult",
    "NullDisplay",
    "Percentiles",
    "StoreOps",
    "Workload",
    "run_bench",
]
