#!/usr/bin/env node
// Benchmark origin: a lean node:http server that every target proxies to.
//   node bench/origin.mjs [--port N] [--host H]      (or ORIGIN_PORT / ORIGIN_HOST)
// Routes match on the last path segment, so /pass, /api/pass and /nolimit/pass
// are the same resource (Sluice routes are told apart by prefix, not rewritten).
//   /pass          small text, Cache-Control: no-store
//   /slow10        like /pass after 10 ms
//   /hit1k         1 KB text, public, max-age=3600, strong ETag
//   /hit100k.json  100 KB JSON, public, max-age=3600, strong ETag
//   /miss100k.json the same JSON with no-store (the compression miss path)
//   /stream        server-sent events (?n=10&intervalMs=500), for manual checks
//   POST /v1/traces  a stand-in OTLP/HTTP collector: reads the body, answers 200 {}
// It never compresses: compression is what the targets under test do.
import http from 'node:http'
import { arg } from './lib/args.mjs'
import { PASS_BODY, HIT1K_BODY, HIT100K_JSON, HIT1K_ETAG, HIT100K_ETAG } from './lib/bodies.mjs'

const port = Number(arg('port', 'ORIGIN_PORT', 3000))
const host = arg('host', 'ORIGIN_HOST', '127.0.0.1')

const fixed = (body, headers) => ({ body, headers: { ...headers, 'content-length': String(body.length) } })
const ROUTES = {
  pass: fixed(PASS_BODY, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' }),
  slow10: fixed(PASS_BODY, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' }),
  hit1k: fixed(HIT1K_BODY, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'public, max-age=3600', etag: HIT1K_ETAG }),
  'hit100k.json': fixed(HIT100K_JSON, { 'content-type': 'application/json', 'cache-control': 'public, max-age=3600', etag: HIT100K_ETAG }),
  'miss100k.json': fixed(HIT100K_JSON, { 'content-type': 'application/json', 'cache-control': 'no-store' })
}

function send (res, r) {
  res.writeHead(200, r.headers)
  res.end(r.body)
}

function stream (req, res, url) {
  const n = Math.min(Number(url.searchParams.get('n') ?? 10), 1000)
  const every = Math.max(Number(url.searchParams.get('intervalMs') ?? 500), 10)
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' })
  let i = 0
  const timer = setInterval(() => {
    res.write(`id: ${i}\nevent: tick\ndata: {"n":${i},"at":"${new Date().toISOString()}"}\n\n`)
    if (++i >= n) { clearInterval(timer); res.end() }
  }, every)
  req.on('close', () => clearInterval(timer))
}

const server = http.createServer((req, res) => {
  const q = req.url.indexOf('?')
  const path = q < 0 ? req.url : req.url.slice(0, q)
  const name = path.slice(path.lastIndexOf('/') + 1)
  const r = ROUTES[name]
  if (r !== undefined) {
    if (req.method !== 'GET' && req.method !== 'HEAD') { res.writeHead(405, { allow: 'GET, HEAD', 'content-length': '0' }); return res.end() }
    if (name === 'slow10') return void setTimeout(send, 10, res, r)
    if (r.headers.etag !== undefined && req.headers['if-none-match'] === r.headers.etag) {
      res.writeHead(304, { etag: r.headers.etag, 'cache-control': r.headers['cache-control'] })
      return res.end()
    }
    return send(res, r)
  }
  if (name === 'stream') return stream(req, res, new URL(req.url, 'http://origin'))
  // A stand-in OTLP/HTTP collector (the tracing scenario): reads the export, answers 200 {}.
  if (path === '/v1/traces' && req.method === 'POST') {
    req.resume()
    return void req.on('end', () => { res.writeHead(200, { 'content-type': 'application/json', 'content-length': '2' }); res.end('{}') })
  }
  res.writeHead(404, { 'content-type': 'text/plain', 'content-length': '10' })
  res.end('not found\n')
})
// Long keep-alive, so proxies' pools are not churned by the origin during a run.
server.keepAliveTimeout = 65_000
server.headersTimeout = 66_000
server.listen(port, host, () => {
  console.log(`origin listening on http://${host}:${server.address().port}`)
  // The same handler on more loopback addresses (ORIGIN_EXTRA_HOSTS=127.0.0.2,127.0.0.3), so
  // one origin process can stand for several upstream targets (the `targets` scenario).
  for (const h of (process.env.ORIGIN_EXTRA_HOSTS || '').split(',').filter(Boolean)) {
    const extra = http.createServer(server.listeners('request')[0])
    extra.keepAliveTimeout = 65_000
    extra.headersTimeout = 66_000
    extra.listen(server.address().port, h)
  }
})
// A benchmark process has nothing to drain: exit at once.
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(0))
