"""The OTLP/gRPC receiver (default port 4317): ``LogsService/Export`` and ``TraceService/Export``, with the
tenancy, limits, export path and partial success of the HTTP receiver (``intake``).

Answers, per the OTLP spec ("OTLP/gRPC Response", "Failures", "Throttling"):

- OK with an ``Export*ServiceResponse``: empty on full success, ``partial_success`` (``rejected_log_records``
  / ``rejected_spans`` and an ``error_message``) when records could not be decoded or are dated past the
  maximum future skew;
- UNAUTHENTICATED: missing or unknown API key (metadata ``x-logclaw-api-key``, or ``authorization: Bearer``);
- INVALID_ARGUMENT: the message cannot be read, or it is over a count or re-encoded size limit (not
  retryable: the client must send smaller batches). A message over ``--max-body-bytes`` is refused by gRPC
  itself with RESOURCE_EXHAUSTED and no RetryInfo, which the spec also makes not retryable;
- UNAVAILABLE with a ``google.rpc.RetryInfo`` (the retry delay) when every processing slot is taken or the
  broker did not acknowledge: the client retries after the delay. The RetryInfo travels in the status
  details (``grpc-status-details-bin``, as the spec shows) and as ``google.rpc.retryinfo-bin`` (where the
  OpenTelemetry Python exporter reads it).

The method handlers take the raw request bytes and decode them with the job's codec, so a string that is not
UTF-8 spoils one record (partial success) instead of the whole request. The key is checked on the call's
metadata before its message is read; a processing slot is taken only then.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any, NoReturn

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from connectors.ingest.intake import API_KEY_HEADER, AUTHORIZATION_HEADER, SIGNALS, Intake, Reason, Refused, Signal
from connectors.ingest.intake import export_response as signal_response
from connectors.ingest.limits import LOGGER_NAME

log = logging.getLogger(LOGGER_NAME)

# Threads beyond the processing slots: a call refused for its key or for want of a slot still needs a thread
# to be answered, and these answer at once while every slot is busy producing.
SPARE_WORKERS = 8
# A connection lives at most this long, then gets a GOAWAY (exporters reconnect transparently); with the
# grace below it bounds what one slow caller can hold, as the HTTP receiver's body deadline does.
MAX_CONNECTION_AGE_S = 600.0
RETRY_INFO_KEY = "google.rpc.retryinfo-bin"
STATUS_DETAILS_KEY = "grpc-status-details-bin"

# reason -> (gRPC code, whether RetryInfo says when to retry)
_ANSWER_OF_REASON = {
    Reason.UNAUTHENTICATED: (grpc.StatusCode.UNAUTHENTICATED, False),
    Reason.BAD_REQUEST: (grpc.StatusCode.INVALID_ARGUMENT, False),
    Reason.TOO_LARGE: (grpc.StatusCode.INVALID_ARGUMENT, False),
    Reason.SATURATED: (grpc.StatusCode.UNAVAILABLE, True),
    Reason.BROKER_UNAVAILABLE: (grpc.StatusCode.UNAVAILABLE, True),
    Reason.NOT_FOUND: (grpc.StatusCode.UNIMPLEMENTED, False),
}


class _Status(collections.namedtuple("_Status", ("code", "details", "trailing_metadata")), grpc.Status):  # type: ignore[misc]
    """What ``ServicerContext.abort_with_status`` sends: code, message and trailing metadata."""


def refusal_status(reason: Reason, message: str, retry_after_s: int) -> _Status:
    """The gRPC answer to a refusal: its code and ``google.rpc.Status`` details (with a RetryInfo when the
    client should retry after ``retry_after_s``)."""
    code, retry = _ANSWER_OF_REASON[reason]
    details = status_pb2.Status(code=getattr(code_pb2, code.name), message=message)
    trailing: list[tuple[str, bytes]] = []
    if retry:
        info = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=retry_after_s))
        packed = any_pb2.Any()
        packed.Pack(info)
        details.details.append(packed)
        trailing.append((RETRY_INFO_KEY, info.SerializeToString()))
    trailing.insert(0, (STATUS_DETAILS_KEY, details.SerializeToString()))
    return _Status(code, message, tuple(trailing))


class _Handlers(grpc.GenericRpcHandler):  # type: ignore[misc]
    """The two Export methods, as stream-unary handlers over raw bytes: the key is checked on the metadata
    before the message is read (a unary handler would get it only with the message)."""

    def __init__(self, intake: Intake) -> None:
        self._intake = intake
        self._handlers = {s.grpc_method: grpc.stream_unary_rpc_method_handler(self._export_of(s)) for s in SIGNALS
                          if s.name in intake.producers}

    def service(self, handler_call_details: Any) -> Any:
        return self._handlers.get(handler_call_details.method)  # None: UNIMPLEMENTED

    def _export_of(self, signal: Signal) -> Callable[[Iterator[bytes], Any], bytes]:
        def export(requests: Iterator[bytes], context: Any) -> bytes:
            return self._export(signal, requests, context)

        return export

    def _export(self, signal: Signal, requests: Iterator[bytes], context: Any) -> bytes:
        intake = self._intake
        received_ns = intake.clock_ns()  # the call's metadata has arrived: its receive time
        metadata: dict[str, str] = {}
        for key, value in context.invocation_metadata() or ():
            if isinstance(value, str):
                metadata.setdefault(key.lower(), value)
        tenant = intake.tenant_of(metadata.get(API_KEY_HEADER), metadata.get(AUTHORIZATION_HEADER))
        if tenant is None:
            self._refuse(context, signal, Refused(Reason.UNAUTHENTICATED, "missing or unknown API key "
                                                  f"({API_KEY_HEADER} metadata or authorization: Bearer)"))
        if not intake.inflight.acquire(blocking=False):
            self._refuse(context, signal, Refused(Reason.SATURATED, "receiver saturated"))
        try:
            body = next(requests, None)
            if body is None:
                raise Refused(Reason.BAD_REQUEST, "no request message")
            intake.metrics.received("grpc", signal.name, len(body))
            ready = intake.export(signal, body, tenant=str(tenant), fmt="proto", received_ns=received_ns)
        except Refused as refused:
            self._refuse(context, signal, refused)
        finally:
            intake.inflight.release()
        intake.stats.add_grpc("OK", ready.accepted, ready.rejected, 1 if ready.accepted else 0)
        intake.metrics.answered("grpc", signal.name, "partial" if ready.rejected else "ok")
        return signal_response(signal, ready.rejected, ready.error_message)

    def _refuse(self, context: Any, signal: Signal, refused: Refused) -> NoReturn:
        """Count, log and answer ``refused``; raises (``abort_with_status``)."""
        intake = self._intake
        status = refusal_status(refused.reason, refused.message, intake.retry_after_s)
        intake.stats.add_grpc(status.code.name)
        intake.metrics.answered("grpc", signal.name, "refused")
        intake.refused("grpc", refused.reason, signal.grpc_method, str(context.peer()), status.code.name,
                       refused.message)
        context.abort_with_status(status)
        raise RuntimeError("abort_with_status returned")  # it raises: the call ends with the status


class GrpcReceiver:
    """The OTLP/gRPC server on ``host:port`` (0: any free port; ``port`` says which) over ``intake``;
    ``start()``, then ``stop()``. Raises ``OSError`` when it cannot listen."""

    def __init__(self, intake: Intake, host: str, port: int) -> None:
        limits = intake.limits
        options = [
            ("grpc.max_receive_message_length", limits.max_body_bytes),
            ("grpc.max_connection_idle_ms", int(limits.idle_timeout_s * 1000)),
            ("grpc.max_connection_age_ms", int(MAX_CONNECTION_AGE_S * 1000)),
            ("grpc.max_connection_age_grace_ms", int(limits.body_deadline_s(limits.max_body_bytes) * 1000)),
            ("grpc.so_reuseport", 0),  # else a second receiver on the same port starts silently
        ]
        self._server = grpc.server(
            futures.ThreadPoolExecutor(limits.max_inflight + SPARE_WORKERS, thread_name_prefix="ingest-grpc"),
            handlers=[_Handlers(intake)], options=options, maximum_concurrent_rpcs=limits.max_connections)
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            bound = self._server.add_insecure_port(address)
        except RuntimeError as exc:  # grpcio >= 1.60 raises where older ones returned 0
            raise OSError(f"{exc}") from None
        if not bound:
            raise OSError(f"cannot bind {address}")
        self.host, self.port = host, bound

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> None:
        self._server.start()

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop taking calls; calls under way get ``grace_s`` to finish."""
        self._server.stop(grace_s).wait(grace_s + 5.0)
