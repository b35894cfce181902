"""Column names shared by the load generator's JSON, runs.csv and compare (DESIGN.md).

Add columns, never rename them: notebooks and ``harness compare`` rely on these names.
"""
from __future__ import annotations

RUN_COLUMNS: tuple[str, ...] = (
    "run_id", "repeat", "backend", "fsync", "eatmydata", "workers", "generator", "mode",
    "rate_target", "duration_s", "calls_attempted", "calls_completed", "calls_failed",
    "throughput_cps", "invite_p50_ms", "invite_p90_ms", "invite_p99_ms", "invite_p999_ms",
    "invite_max_ms", "bye_p50_ms", "bye_p99_ms", "status_481", "status_5xx", "timeouts",
    "lost_dialogs", "cross_worker_fraction", "cpu_server_s", "cpu_service_s", "cpu_loadgen_s",
    "cpu_us_per_call", "store_leftover", "generator_saturated", "status", "reason",
)

# Fields that `harness load --json` writes (a subset of RUN_COLUMNS, same names),
# plus generator-only extras that the runner may add as extra columns.
LOAD_FIELDS: tuple[str, ...] = (
    "generator", "mode", "rate_target", "duration_s", "calls_attempted", "calls_completed",
    "calls_failed", "throughput_cps", "invite_p50_ms", "invite_p90_ms", "invite_p99_ms",
    "invite_p999_ms", "invite_max_ms", "bye_p50_ms", "bye_p99_ms", "status_481", "status_5xx",
    "timeouts", "lost_dialogs", "cross_worker_fraction", "cpu_loadgen_s", "generator_saturated",
)

TIMESERIES_COLUMNS: tuple[str, ...] = ("run_id", "t_s", "calls_completed", "calls_failed",
                                       "p50_ms", "p99_ms")

TRANSACTIONS: tuple[str, ...] = ("invite", "bye", "register")

RUN_STATUSES: tuple[str, ...] = ("ok", "failed", "skipped")
