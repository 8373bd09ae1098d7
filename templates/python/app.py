"""A Python service in an msctl system: FastAPI, with no tracing code at all.

`opentelemetry-instrument` (from opentelemetry-distro) starts it, instruments FastAPI, httpx and
logging, and exports spans and log records with the stock OpenTelemetry SDK, configured by the
standard variables msctl gives every instance: OTEL_EXPORTER_OTLP_ENDPOINT, _HEADERS, _PROTOCOL,
OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES and OTEL_BSP_SCHEDULE_DELAY.

GET /<service>/hello calls its peer (PEER, the first --dep of `msctl scaffold`) at /<peer>/1 and
answers with what it got; without a peer it just says hello. The gateway sends a service the whole
path, so a service's routes start with its name. GET /health answers as msctl expects.
"""

import json
import logging
import os

import httpx
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse

SERVICE = os.environ.get("MSCTL_SERVICE", "python-service")
INSTANCE = os.environ.get("MSCTL_INSTANCE", SERVICE + "-1")
PORT = int(os.environ.get("PORT", "8080"))
PEER = os.environ.get("PEER", "")
# Loopback on one machine; in a container MSCTL_LISTEN (0.0.0.0:PORT) opens it to the pod.
HOST, _, LISTEN_PORT = os.environ.get("MSCTL_LISTEN", f"127.0.0.1:{PORT}").rpartition(":")

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
log = logging.getLogger(SERVICE)

app = FastAPI()
client = httpx.AsyncClient(timeout=2.0)


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


@app.get("/health")
async def health():
    return {"status": "ok", "service": SERVICE, "instance": INSTANCE}


@app.get(f"/{SERVICE}/hello")
async def hello():
    if not PEER:
        return {"hello": f"from {SERVICE}"}
    log.info("asking %s", PEER)
    try:
        answer = await client.get(f"{peer_url(PEER)}/{PEER}/1")
        return {"hello": f"from {SERVICE}", PEER: answer.json()}
    except (httpx.HTTPError, LookupError, KeyError, ValueError) as e:
        log.warning("%s is unavailable: %s", PEER, e)
        return JSONResponse(
            status_code=503,
            content={"error": {"code": "unavailable", "message": f"{PEER}: {e}"}},
        )


if __name__ == "__main__":
    # uvicorn drains on SIGTERM; the SDK writes out its last spans as the process exits.
    uvicorn.run(app, host=HOST, port=int(LISTEN_PORT), log_level="warning")
