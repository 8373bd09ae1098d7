"""A Python service in an msctl system, traced with the stock OpenTelemetry SDK and nothing
of msctl's: the SDK reads OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_HEADERS,
OTEL_SERVICE_NAME and OTEL_BSP_SCHEDULE_DELAY, which msctl gives every instance.

GET /<service>/hello calls its peer (PEER, the first --dep of `msctl scaffold`) at
/<peer>/1 and answers with what it got; without a peer it just says hello. The gateway sends a
service the whole path, so a service's routes start with its name. GET /health answers as msctl
expects.
Standard library only, besides the SDK: http.server and urllib.
"""

import json
import logging
import os
import signal
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry import propagate, trace
from opentelemetry._logs import set_logger_provider
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

SERVICE = os.environ.get("MSCTL_SERVICE", "python-service")
INSTANCE = os.environ.get("MSCTL_INSTANCE", SERVICE + "-1")
PORT = int(os.environ.get("PORT", "8080"))
PEER = os.environ.get("PEER", "")

resource = Resource.create()
provider = TracerProvider(resource=resource)
provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
trace.set_tracer_provider(provider)
tracer = trace.get_tracer(SERVICE)

# Log records go to stderr (msctl's instance log) and, with the span they were written in, to
# msctl's receiver: `msctl logs --trace ID` shows them with the rest of the trace.
logger_provider = LoggerProvider(resource=resource)
logger_provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter()))
set_logger_provider(logger_provider)
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
logging.getLogger().addHandler(LoggingHandler(level=logging.INFO, logger_provider=logger_provider))
log = logging.getLogger(SERVICE)


def peer_url(name):
    """A healthy instance of `name`: from msctl's registry, or from NAME_URL when run by hand."""
    registry = os.environ.get("MSCTL_REGISTRY")
    if registry:
        with open(registry) as f:
            services = json.load(f)["services"]
        for instance in services.get(name, {}).get("instances", []):
            if instance["state"] == "healthy":
                return "http://" + instance["address"]
        raise LookupError(f"`{name}` has no healthy instance")
    return os.environ[name.upper().replace("-", "_") + "_URL"]


class Handler(BaseHTTPRequestHandler):
    def log_message(self, format, *args):
        pass

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        carrier = {}
        propagate.inject(carrier)
        for key, value in carrier.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/health":
            return self.reply(200, {"status": "ok", "service": SERVICE, "instance": INSTANCE})
        hello = f"/{SERVICE}/hello"
        route = hello if path == hello else None
        parent = propagate.extract(dict(self.headers))
        attributes = {"http.request.method": "GET", "url.path": path}
        if route:
            attributes["http.route"] = route
        with tracer.start_as_current_span(
            f"GET {route or 'unmatched'}", context=parent, kind=SpanKind.SERVER, attributes=attributes
        ) as span:
            if route is None:
                status, body = 404, {"error": {"code": "not_found", "message": f"no route for GET {path}"}}
            else:
                status, body = self.hello()
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            self.reply(status, body)

    def hello(self):
        if not PEER:
            return 200, {"hello": f"from {SERVICE}"}
        log.info("asking %s", PEER)
        with tracer.start_as_current_span(
            "GET", kind=SpanKind.CLIENT, attributes={"peer.service": PEER, "http.request.method": "GET"}
        ) as client:
            try:
                headers = {}
                propagate.inject(headers)
                url = f"{peer_url(PEER)}/{PEER}/1"
                client.set_attribute("url.full", url)
                request = urllib.request.Request(url, headers=headers)
                with urllib.request.urlopen(request, timeout=2) as answer:
                    client.set_attribute("http.response.status_code", answer.status)
                    return 200, {"hello": f"from {SERVICE}", PEER: json.load(answer)}
            except (urllib.error.URLError, LookupError, OSError) as e:
                client.set_status(Status(StatusCode.ERROR, str(e)))
                client.set_attribute("error.type", type(e).__name__)
                return 503, {"error": {"code": "unavailable", "message": f"{PEER}: {e}"}}


def main():
    server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)

    def stop(*_):
        # shutdown() waits for serve_forever to return, so it runs off the main thread.
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("listening on 127.0.0.1:%d", PORT)
    server.serve_forever()
    # The spans and log records of the last requests are still in the batch processors.
    provider.shutdown()
    logger_provider.shutdown()


if __name__ == "__main__":
    main()
