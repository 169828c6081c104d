// Edge listener review fixes: each test reproduces one reviewed bug against a real gateway
// (TLS + HTTP/2 by ALPN, or cleartext), real loopback origins and real node:http2 clients.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { connect as h2connect, constants as h2c, type ClientHttp2Stream } from 'node:http2'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { startTestGateway, type TestGateway } from '../helpers/gateway.js'
import { until } from '../helpers/wait.js'

const dir = mkdtempSync(join(tmpdir(), 'sluice-edge-review-'))
const certFile = join(dir, 'c.pem')
const keyFile = join(dir, 'c.key')
execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', keyFile, '-out', certFile, '-subj', '/CN=t', '-addext', 'subjectAltName=IP:127.0.0.1', '-days', '2'], { stdio: 'ignore' })

const closers: (() => Promise<unknown>)[] = []
after(async () => { for (const c of closers.reverse()) await c().catch(() => {}); rmSync(dir, { recursive: true, force: true }) })

/** Buffered origin (reads each body before its handler). */
let origin: Origin
/** Streaming origin: handlers see the request at its head and read the body themselves. */
let streaming: Origin
/** TLS + h2, the body-rate guard off. */
let g: TestGateway
/** TLS + h2, the body-rate guard on (maxIdleMs 500). */
let gRate: TestGateway

const routes = (o: Origin): string => `upstreams:
  api: { url: "${o.url}" }
routes:
  - name: pass
    match: { pathPrefix: / }
    upstream: api
`
const tlsListen = `listen:
  tls: { certFile: "${certFile}", keyFile: "${keyFile}" }
  http2: true
`

before(async () => {
  origin = await startOrigin()
  closers.push(() => origin.close())
  streaming = await startOrigin()
  streaming.streamBodies = true
  closers.push(() => streaming.close())
  g = await startTestGateway(`${tlsListen}server:
  headersTimeoutMs: 1000
  maxHeaderBytes: 4096
  requestBodyRate: { minBytesPerSecond: 0, maxIdleMs: 0 }
  http2: { maxResetsPerSecond: 20 }
${routes(origin)}`)
  closers.push(() => g.close())
  gRate = await startTestGateway(`${tlsListen}server:
  requestBodyRate: { minBytesPerSecond: 0, graceMs: 0, maxIdleMs: 500 }
${routes(streaming)}`)
  closers.push(() => gRate.close())
})

/** What the origin saw of one streamed upload: 'complete' (the body ended) or 'aborted'. */
function uploadOutcome (o: Origin, path: string): { result: string | null, body: string } {
  const out = { result: null as string | null, body: '' }
  o.on(path, (req, res) => {
    req.on('data', (c: Buffer) => { out.body += String(c) })
    req.on('end', () => { out.result ??= 'complete'; res.end('ok') })
    req.on('aborted', () => { out.result ??= 'aborted' })
    req.on('error', () => { out.result ??= 'aborted' })
  })
  return out
}

test('bug 1: an HTTP/2 upload the client resets mid-body aborts the upstream request, guard off and on', async () => {
  // g's origin is the buffered one: a gateway of its own (guard off) points at the streaming origin.
  const gw = await startTestGateway(`${tlsListen}server:
  requestBodyRate: { minBytesPerSecond: 0, maxIdleMs: 0 }
${routes(streaming)}`)
  closers.push(() => gw.close())
  // How the client gives up: RST_STREAM (NO_ERROR, then INTERNAL_ERROR) with no END_STREAM, and
  // a Content-Length of 100 cut short by close(CANCEL) (node's close() sends END_STREAM first,
  // then RST_STREAM CANCEL: without a Content-Length that body is complete as far as the
  // protocol goes, so that case is not here).
  const cancels = {
    rst: { headers: {}, stop: (r: ClientHttp2Stream) => r.destroy() },
    'rst-internal': { headers: {}, stop: (r: ClientHttp2Stream) => r.destroy(new Error('client gives up')) },
    'short-cl': { headers: { 'content-length': '100' }, stop: (r: ClientHttp2Stream) => r.close(h2c.NGHTTP2_CANCEL) }
  }
  for (const [name, gateway] of [['guard-off', gw], ['guard-on', gRate]] as const) {
    for (const [how, { headers, stop }] of Object.entries(cancels)) {
      const path = `/cancel-${name}-${how}`
      const seen = uploadOutcome(streaming, path)
      const c = h2connect(gateway.url, { rejectUnauthorized: false })
      c.on('error', () => {})
      const r = c.request({ ':path': path, ':method': 'POST', ...headers })
      r.on('error', () => {})
      r.write('partial-')
      await until(`${name} ${how}: the origin reads the first bytes`, () => seen.body === 'partial-')
      stop(r)
      await until(`${name} ${how}: the origin sees the upload end one way or the other`, () => seen.result !== null)
      assert.equal(seen.result, 'aborted', `${name} ${how}: the origin must see an aborted request, not a complete one`)
      c.destroy()
    }
  }
})
