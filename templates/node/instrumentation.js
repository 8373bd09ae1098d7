// OpenTelemetry for this service, loaded before it with `node --require`: the stock Node SDK,
// with the HTTP and Express instrumentations, so that server.js holds no tracing code. The SDK
// reads the standard variables msctl gives every instance: OTEL_EXPORTER_OTLP_ENDPOINT,
// _HEADERS, _PROTOCOL, OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES and OTEL_BSP_SCHEDULE_DELAY.
'use strict';

const { NodeSDK } = require('@opentelemetry/sdk-node');
const { HttpInstrumentation } = require('@opentelemetry/instrumentation-http');
const { ExpressInstrumentation } = require('@opentelemetry/instrumentation-express');

const sdk = new NodeSDK({
  instrumentations: [
    // msctl probes /health every few seconds: those are not requests worth a trace.
    new HttpInstrumentation({ ignoreIncomingRequestHook: (req) => req.url === '/health' }),
    new ExpressInstrumentation(),
  ],
});
sdk.start();

module.exports = { sdk };
