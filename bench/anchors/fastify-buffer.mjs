#!/usr/bin/env node
// Anchor: the ceiling of the Node/Fastify stack for a cache hit. Bare Fastify
// answers the origin's exact bytes and headers from a Buffer; no proxy, no cache.
// For /hit100k.json it picks a pre-compressed Buffer (br q11 or gzip 9, computed
// once at start) by Accept-Encoding, the way a cache storing encoded variants would.
// --same-headers: /hit1k also sends the four headers a Sluice hit adds (Via, X-Request-Id with
// a counter, Cache-Status, Age), so the two answers are byte-for-byte the same shape: what the
// cache path costs, without the cost of the headers it must send.
//   node bench/anchors/fastify-buffer.mjs --port 8082 [--same-headers]
import Fastify from 'fastify'
import { arg } from '../lib/args.mjs'
import { HIT1K_BODY, HIT100K_JSON, HIT1K_ETAG, HIT100K_ETAG, hit100kEncoded } from '../lib/bodies.mjs'

const port = Number(arg('port', 'PORT', 8082))
const enc = hit100kEncoded()
const maxAge = 'public, max-age=3600'

// Cheap negotiation, enough for the bench's fixed headers: br, then gzip, q=0 honoured.
function pick (ae) {
  if (typeof ae !== 'string' || ae === '') return 'identity'
  const has = (name) => {
    const m = ae.match(new RegExp(`(?:^|,)\\s*${name}\\s*(?:;\\s*q=([0-9.]+))?`, 'i'))
    return m !== null && (m[1] === undefined || Number(m[1]) > 0)
  }
  if (has('br')) return 'br'
  if (has('gzip')) return 'gzip'
  return 'identity'
}

const sameHeaders = process.argv.includes('--same-headers')
let served = 0
const app = Fastify({ logger: false })
app.get('/hit1k', (req, reply) => {
  reply.header('content-type', 'text/plain; charset=utf-8').header('cache-control', maxAge).header('etag', HIT1K_ETAG)
  if (sameHeaders) reply.header('via', '1.1 sluice').header('x-request-id', 'Pq3xY_Zk' + (++served).toString(36)).header('cache-status', 'sluice; hit; ttl=3599').header('age', '0')
  return reply.send(HIT1K_BODY)
})
app.get('/hit100k.json', (req, reply) => {
  const e = pick(req.headers['accept-encoding'])
  reply.header('content-type', 'application/json').header('cache-control', maxAge).header('vary', 'Accept-Encoding')
  if (e === 'identity') return reply.header('etag', HIT100K_ETAG).send(HIT100K_JSON)
  return reply.header('content-encoding', e).header('etag', `W/${HIT100K_ETAG}`).send(enc[e])
})
await app.listen({ port, host: '127.0.0.1' })
console.log(`fastify-buffer listening on ${port}`)
// A benchmark process has nothing to drain: exit at once.
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(0))
