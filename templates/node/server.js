// A Node service in an msctl system, traced with the stock OpenTelemetry SDK and nothing of
// msctl's: the exporter reads OTEL_EXPORTER_OTLP_ENDPOINT and OTEL_EXPORTER_OTLP_HEADERS, the
// resource OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, which msctl gives every instance.
//
// GET /<service>/hello calls its peer (PEER, the first --dep of `msctl scaffold`) at
// /<peer>/1 and answers with what it got; without a peer it just says hello. The gateway sends
// a service the whole path, so a service's routes start with its name. GET /health answers as
// msctl expects.
'use strict';

const http = require('node:http');
const fs = require('node:fs');
const api = require('@opentelemetry/api');
const { NodeTracerProvider, BatchSpanProcessor } = require('@opentelemetry/sdk-trace-node');
const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-proto');
const { defaultResource, detectResources, envDetector } = require('@opentelemetry/resources');

const SERVICE = process.env.MSCTL_SERVICE || 'node-service';
const INSTANCE = process.env.MSCTL_INSTANCE || `${SERVICE}-1`;
const PORT = Number(process.env.PORT || 8080);
const PEER = process.env.PEER || '';

const provider = new NodeTracerProvider({
  resource: defaultResource().merge(detectResources({ detectors: [envDetector] })),
  spanProcessors: [
    new BatchSpanProcessor(new OTLPTraceExporter(), {
      scheduledDelayMillis: Number(process.env.OTEL_BSP_SCHEDULE_DELAY || 5000),
    }),
  ],
});
// Sets the global tracer provider, the W3C trace-context propagator and the context manager.
provider.register();
const tracer = api.trace.getTracer(SERVICE);

/** A healthy instance of `name`: from msctl's registry, or from NAME_URL when run by hand. */
function peerUrl(name) {
  const registry = process.env.MSCTL_REGISTRY;
  if (registry) {
    const services = JSON.parse(fs.readFileSync(registry, 'utf8')).services;
    const healthy = ((services[name] || {}).instances || []).find((i) => i.state === 'healthy');
    if (!healthy) throw new Error(`\`${name}\` has no healthy instance`);
    return `http://${healthy.address}`;
  }
  const url = process.env[`${name.toUpperCase().replace(/-/g, '_')}_URL`];
  if (!url) throw new Error(`set ${name.toUpperCase()}_URL to reach ${name}`);
  return url;
}

function reply(res, status, body) {
  const data = JSON.stringify(body);
  const headers = { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) };
  api.propagation.inject(api.context.active(), headers);
  res.writeHead(status, headers);
  res.end(data);
}

/** GET `url` as a traced client call; resolves to [status, parsed body]. */
function get(url) {
  return tracer.startActiveSpan(
    'GET',
    { kind: api.SpanKind.CLIENT, attributes: { 'peer.service': PEER, 'http.request.method': 'GET', 'url.full': url } },
    (span) =>
      new Promise((resolve, reject) => {
        const headers = {};
        api.propagation.inject(api.context.active(), headers);
        const req = http.get(url, { headers, timeout: 2000 }, (res) => {
          let text = '';
          res.on('data', (chunk) => (text += chunk));
          res.on('end', () => {
            span.setAttribute('http.response.status_code', res.statusCode);
            span.end();
            try {
              resolve([res.statusCode, JSON.parse(text)]);
            } catch (e) {
              reject(e);
            }
          });
        });
        req.on('timeout', () => req.destroy(new Error('timed out')));
        req.on('error', (e) => {
          span.setStatus({ code: api.SpanStatusCode.ERROR, message: e.message });
          span.setAttribute('error.type', e.name);
          span.end();
          reject(e);
        });
      }),
  );
}

async function hello() {
  if (!PEER) return [200, { hello: `from ${SERVICE}` }];
  try {
    const [, body] = await get(`${peerUrl(PEER)}/${PEER}/1`);
    return [200, { hello: `from ${SERVICE}`, [PEER]: body }];
  } catch (e) {
    return [503, { error: { code: 'unavailable', message: `${PEER}: ${e.message}` } }];
  }
}

const server = http.createServer((req, res) => {
  const path = req.url.split('?')[0];
  if (path === '/health') {
    return reply(res, 200, { status: 'ok', service: SERVICE, instance: INSTANCE });
  }
  const route = path === `/${SERVICE}/hello` ? path : null;
  const parent = api.propagation.extract(api.context.active(), req.headers);
  const attributes = { 'http.request.method': req.method, 'url.path': path };
  if (route) attributes['http.route'] = route;
  tracer.startActiveSpan(
    `${req.method} ${route || 'unmatched'}`,
    { kind: api.SpanKind.SERVER, attributes },
    parent,
    async (span) => {
      const [status, body] = route
        ? await hello()
        : [404, { error: { code: 'not_found', message: `no route for ${req.method} ${path}` } }];
      span.setAttribute('http.response.status_code', status);
      if (status >= 500) span.setStatus({ code: api.SpanStatusCode.ERROR });
      reply(res, status, body);
      span.end();
    },
  );
});

server.listen(PORT, '127.0.0.1', () => console.log(`${SERVICE} listening on 127.0.0.1:${PORT}`));

function stop() {
  // The spans of the last requests are still in the batch processor.
  server.close(() => provider.shutdown().finally(() => process.exit(0)));
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
