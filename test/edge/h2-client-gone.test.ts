// An HTTP/2 client that resets its stream: the gateway sees it as gone (Node's HTTP/2
// response has no `destroyed`, and reports writableFinished once the stream closes, reset or
// not), so the upstream request is aborted, and the request gets one access line that says so.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, writeFileSync, readFileSync, renameSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { connect as h2connect, constants as h2c, type ClientHttp2Session } from 'node:http2'
import { request as httpsRequest } from 'node:https'
import { connect as tlsConnect, type PeerCertificate } from 'node:tls'
import { connect as netConnect } from 'node:net'
import { once } from 'node:events'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { startTestGateway, type TestGateway } from '../helpers/gateway.js'
import { until } from '../helpers/wait.js'
import { parseConfig, ConfigError, formatIssue } from '../../src/config/load.js'
import { readListenTls } from '../../src/edge/tls.js'

const dir = mkdtempSync(join(tmpdir(), 'sluice-edge-'))
const closers: (() => Promise<unknown>)[] = []
after(async () => { for (const c of closers.reverse()) await c().catch(() => {}); rmSync(dir, { recursive: true, force: true }) })

/** A self-signed pair for 127.0.0.1 made by openssl; returns the PEM bytes. */
function makePair (name: string, opts: { days?: number, cn?: string } = {}): { cert: Buffer, key: Buffer } {
  const k = join(dir, `${name}.key`)
  const c = join(dir, `${name}.pem`)
  const args = ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', k, '-out', c, '-subj', `/CN=${opts.cn ?? name}`, '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost']
  args.push('-days', String(opts.days ?? 2))
  execFileSync('openssl', args, { stdio: 'ignore' })
  return { cert: readFileSync(c), key: readFileSync(k) }
}

const certFile = join(dir, 'live.pem')
const keyFile = join(dir, 'live.key')
let origin: Origin
let g: TestGateway

function config (extra = ''): string {
  return `listen:
  tls: { certFile: "${certFile}", keyFile: "${keyFile}", handshakeTimeoutMs: 500 }
  http2: true
server:
  requestBodyRate: { minBytesPerSecond: 2000, graceMs: 400, maxIdleMs: 0 }
  http2: { maxConcurrentStreams: 50, maxResetsPerSecond: 20 }
${extra}upstreams:
  api: { url: "${origin.url}" }
routes:
  - name: cached
    match: { pathPrefix: /c/ }
    upstream: api
    cache: { enabled: true }
    compression: { enabled: true, minBytes: 10 }
  - name: pass
    match: { pathPrefix: / }
    upstream: api
`
}

before(async () => {
  const first = makePair('first')
  writeFileSync(certFile, first.cert)
  writeFileSync(keyFile, first.key)
  origin = await startOrigin()
  closers.push(() => origin.close())
  g = await startTestGateway(config().replace('log:', 'log:').replace('listen:\n', 'log: { level: info, accessLog: true }\nlisten:\n'), { watch: false })
  closers.push(() => g.close())
})

test('HTTP/2, a client that resets its stream: the upstream request it waits for is aborted, a cache fill goes on and is stored, and each request gets one access line (499, or the status sent, with SLUICE_ERR_CLIENT_CLOSED)', async () => {
  let answer: (() => void) | null = null
  origin.on('/c/held', (_req, res) => { answer = () => { res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=60' }); res.end('ok') } })
  origin.on('/sse2', (_req, res) => { res.writeHead(200, { 'content-type': 'text/event-stream' }); res.write('data: one\n\n') })
  let upstreamClosed = false
  origin.on('/slow', (_req, res) => { res.on('close', () => { upstreamClosed = true }) })
  const s = h2connect(g.url.replace('http:', 'https:'), { rejectUnauthorized: false })
  s.on('error', () => {})
  try {
    const held = s.request({ ':path': '/c/held' })
    held.on('error', () => {})
    await until('the origin holds the fill', () => answer !== null)
    held.close(h2c.NGHTTP2_CANCEL)
    await new Promise((resolve) => setTimeout(resolve, 100)) // the reset reaches the gateway first
    ;(answer as unknown as () => void)()
    await until('the leader\'s line', () => g.logs.some((l) => l.msg === 'request' && l.url === '/c/held'))
    const again = s.request({ ':path': '/c/held' })
    again.on('error', () => {})
    const [h] = await once(again, 'response') as [Record<string, string>]
    again.resume()
    assert.match(String(h['cache-status']), /hit/, 'the fill went on and was stored')
    const sse = s.request({ ':path': '/sse2' })
    sse.on('error', () => {})
    await once(sse, 'response')
    sse.close(h2c.NGHTTP2_CANCEL)
    const slow = s.request({ ':path': '/slow' })
    slow.on('error', () => {})
    await until('the origin has /slow', () => origin.count('/slow') === 1)
    slow.close(h2c.NGHTTP2_CANCEL)
    await until('the upstream request is aborted', () => upstreamClosed)
    await until('the access lines', () => g.logs.filter((l) => l.msg === 'request').length >= 4)
    const lines = g.logs.filter((l) => l.msg === 'request').map((l) => ({ url: l.url, status: l.status, err: l.err }))
    assert.deepEqual(lines.filter((l) => l.url === '/c/held'), [{ url: '/c/held', status: 499, err: 'SLUICE_ERR_CLIENT_CLOSED' }, { url: '/c/held', status: 200, err: undefined }])
    assert.deepEqual(lines.filter((l) => l.url === '/sse2'), [{ url: '/sse2', status: 200, err: 'SLUICE_ERR_CLIENT_CLOSED' }])
    assert.deepEqual(lines.filter((l) => l.url === '/slow'), [{ url: '/slow', status: 499, err: 'SLUICE_ERR_CLIENT_CLOSED' }])
  } finally {
    s.close()
  }
})
