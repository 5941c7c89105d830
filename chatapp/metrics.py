"""Prometheus metrics, served at /metrics.

With several workers, each process keeps its own numbers; prometheus_client's multiprocess mode
adds them up when PROMETHEUS_MULTIPROC_DIR is set (the `chatapp` command sets it for workers > 1).
Per answer, not per token: an answer's tokens are counted once, when it ends.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

REQUESTS = Counter("chatapp_http_requests_total", "HTTP requests answered, by route and status.",
                   ["route", "status"])
ACTIVE_STREAMS = Gauge("chatapp_active_streams", "Answers being streamed now.", multiprocess_mode="livesum")
TIME_TO_FIRST_TOKEN = Histogram(
    "chatapp_time_to_first_token_seconds", "From the question stored to the first piece of the answer.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60),
)
STREAM_DURATION = Histogram(
    "chatapp_stream_duration_seconds", "From the question stored to the answer saved, however it ended.",
    buckets=(0.5, 1, 2, 5, 10, 20, 40, 80, 160, 320),
)
TOKENS = Counter("chatapp_tokens_relayed_total", "Answer tokens relayed to browsers (as the model server counts them, else estimated).")
ANSWERS = Counter("chatapp_answers_total", "Answers ended, by how they ended.", ["status"])
UPSTREAM_ERRORS = Counter("chatapp_upstream_errors_total", "Failures of the model server, by kind.", ["kind"])
RETRIES = Counter("chatapp_upstream_retries_total", "Requests to the model server tried again.")
DISCONNECTS = Counter("chatapp_client_disconnects_total", "Answers cut short because the browser left.")


def answer_ended(*, status: str, first_token: float | None, duration: float, tokens: int,
                 error_kind: str | None, client_left: bool) -> None:
    ANSWERS.labels(status).inc()
    STREAM_DURATION.observe(duration)
    if first_token is not None:
        TIME_TO_FIRST_TOKEN.observe(first_token)
    if tokens:
        TOKENS.inc(tokens)
    if error_kind:
        UPSTREAM_ERRORS.labels(error_kind).inc()
    if client_left:
        DISCONNECTS.inc()


def exposition() -> tuple[bytes, str]:
    """The metrics in Prometheus's text format, summed over all workers where there are several."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
