"""Prometheus metrics, served at /metrics.

With several workers, each process keeps its own numbers; prometheus_client's multiprocess mode
adds them up when PROMETHEUS_MULTIPROC_DIR is set (the `chatapp` command sets it for workers > 1).
Per answer, not per token: an answer's tokens are counted once, when it ends.

Every series carries `replica="<CHATAPP_REPLICA>"` (the host name by default): behind a load
balancer several replicas answer /metrics, and their series must not be mistaken for one another's.
prometheus_client has no constant labels, so the label is added as the metrics are written out.
"""

from __future__ import annotations

import os

from collections.abc import Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

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


def exposition(replica: str) -> tuple[bytes, str]:
    """The metrics in Prometheus's text format, summed over this replica's workers where there are
    several, each series labelled with the replica's name."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        source: Collector = multiprocess.MultiProcessCollector(None)
    else:
        source = REGISTRY
    registry = CollectorRegistry()
    registry.register(_Labelled(source, replica=replica))
    return generate_latest(registry), CONTENT_TYPE_LATEST


class _Labelled(Collector):
    """Another collector's metrics, with the same labels added to every sample."""

    def __init__(self, source: Collector, **labels: str) -> None:
        self._source, self._labels = source, labels

    def collect(self) -> Iterator[Metric]:
        for family in self._source.collect():
            labelled = Metric(family.name, family.documentation, family.type, family.unit)
            labelled.samples = [sample._replace(labels={**sample.labels, **self._labels}) for sample in family.samples]
            yield labelled
