// A Node service in an msctl system: Express, with no tracing code at all. instrumentation.js,
// loaded first, traces it with the stock OpenTelemetry SDK.
//
// GET /<service>/hello calls its peer (PEER, the first --dep of `msctl scaffold`) at
// /<peer>/1 and answers with what it got; without a peer it just says hello. The gateway sends
// a service the whole path, so a service's routes start with its name. GET /health answers as
// msctl expects.
'use strict';

const fs = require('node:fs');
const express = require('express');
const { sdk } = require('./instrumentation');

const SERVICE = process.env.MSCTL_SERVICE || 'node-service';
const INSTANCE = process.env.MSCTL_INSTANCE || `${SERVICE}-1`;
const PORT = Number(process.env.PORT || 8080);
const PEER = process.env.PEER || '';
// Loopback on one machine; in a container MSCTL_LISTEN (0.0.0.0:PORT) opens it to the pod.
const LISTEN = process.env.MSCTL_LISTEN || `127.0.0.1:${PORT}`;
const HOST = LISTEN.slice(0, LISTEN.lastIndexOf(':'));
const LISTEN_PORT = Number(LISTEN.slice(LISTEN.lastIndexOf(':') + 1));

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

const app = express();

app.get('/health', (req, res) => {
  res.json({ status: 'ok', service: SERVICE, instance: INSTANCE });
});

app.get(`/${SERVICE}/hello`, async (req, res) => {
  if (!PEER) return res.json({ hello: `from ${SERVICE}` });
  try {
    // fetch is not instrumented by the HTTP instrumentation; node:http is.
    const body = await getJson(`${peerUrl(PEER)}/${PEER}/1`);
    res.json({ hello: `from ${SERVICE}`, [PEER]: body });
  } catch (e) {
    res.status(503).json({ error: { code: 'unavailable', message: `${PEER}: ${e.message}` } });
  }
});

app.use((req, res) => {
  res.status(404).json({ error: { code: 'not_found', message: `no route for ${req.method} ${req.path}` } });
});

/** GET `url` with node:http; resolves to the parsed JSON body. */
function getJson(url) {
  const http = require('node:http');
  return new Promise((resolve, reject) => {
    const req = http.get(url, { timeout: 2000 }, (res) => {
      let text = '';
      res.on('data', (chunk) => (text += chunk));
      res.on('end', () => {
        try {
          resolve(JSON.parse(text));
        } catch (e) {
          reject(e);
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
  });
}

const server = app.listen(LISTEN_PORT, HOST, () =>
  console.log(`${SERVICE} listening on ${LISTEN}`),
);

function stop() {
  // The spans of the last requests are still in the SDK's batch processor.
  server.close(() => sdk.shutdown().finally(() => process.exit(0)));
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
