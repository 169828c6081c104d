// Edge review: server.maxHeadersCount counts header lines, as HTTP/1.1 sends them. An HTTP/2
// request's pseudo-headers (:method, :scheme, :path, :authority) are its request line and Host,
// not extra header lines: the same fields over h2 and HTTP/1.1 get the same answer.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { connect as h2connect, type ClientHttp2Session } from 'node:http2'
import { request as httpsRequest } from 'node:https'
import { once } from 'node:events'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { startTestGateway, type TestGateway } from '../helpers/gateway.js'

const dir = mkdtempSync(join(tmpdir(), 'sluice-edge-limits-'))
const certFile = join(dir, 'c.pem')
const keyFile = join(dir, 'c.key')
execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', keyFile, '-out', certFile, '-subj', '/CN=t', '-addext', 'subjectAltName=IP:127.0.0.1', '-days', '2'], { stdio: 'ignore' })

let origin: Origin
let g: TestGateway
let s: ClientHttp2Session
before(async () => {
  origin = await startOrigin()
  g = await startTestGateway(`listen:
  tls: { certFile: "${certFile}", keyFile: "${keyFile}" }
  http2: true
server:
  maxHeadersCount: 10
upstreams:
  api: { url: "${origin.url}" }
routes:
  - { name: pass, match: { pathPrefix: / }, upstream: api }
`)
  s = h2connect(g.url, { rejectUnauthorized: false })
  s.on('error', () => {})
})
after(async () => { s.destroy(); await g.close(); await origin.close(); rmSync(dir, { recursive: true, force: true }) })

const fields = (n: number): Record<string, string> => Object.fromEntries(Array.from({ length: n }, (_, i) => ['x-f' + i, 'v']))

async function h2status (headers: Record<string, string>): Promise<number> {
  const r = s.request(headers)
  const [h] = await once(r, 'response') as [Record<string, unknown>]
  r.resume()
  await once(r, 'end')
  return Number(h[':status'])
}

function h1status (headers: Record<string, string>): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(g.url + '/p', { rejectUnauthorized: false, agent: false, headers: { connection: 'close', ...headers } }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode ?? 0)) })
    req.on('error', reject)
    req.end()
  })
}

test('maxHeadersCount: Host and 9 fields pass on HTTP/1.1 and h2 alike; 11 fields get 431 on both', async () => {
  // HTTP/1.1: Host, Connection and 8 more lines = 10.
  assert.equal(await h1status(fields(8)), 200)
  assert.equal(await h1status(fields(10)), 431)
  // h2: :authority (the Host) and 9 fields. The pseudo-headers were counted as lines: 431.
  assert.equal(await h2status({ ':path': '/p', ...fields(9) }), 200)
  assert.equal(await h2status({ ':path': '/p', ...fields(11) }), 431)
})

test('maxHeadersCount: a WebSocket over h2 counts a repeated field once per line, as any h2 request does', async () => {
  if (s.remoteSettings?.enableConnectProtocol === undefined) await once(s, 'remoteSettings')
  const ws = (n: number): Record<string, string> => ({ ':method': 'CONNECT', ':protocol': 'websocket', ':scheme': 'https', ':path': '/ws', ':authority': new URL(g.url).host, 'sec-websocket-version': '13', 'x-rep': Array.from({ length: n }, (_, i) => 'v' + i) as unknown as string })
  // :authority (the Host), Sec-WebSocket-Version and 8 X-Rep lines = 10: within the limit (the
  // plain origin then answers the upgrade with its 200, which is not a 431).
  assert.equal(await h2status(ws(8)), 200)
  // 9 X-Rep lines: 11 lines, 431. They were counted as one field name (3 lines) and passed.
  assert.equal(await h2status(ws(9)), 431)
})

test('maxHeadersCount: an h2 request far past the limit gets 431 too, not a bare stream reset', async () => {
  // 20 fields: Node reset the stream (ENHANCE_YOUR_CALM) past 15 header pairs.
  assert.equal(await h2status({ ':path': '/p', ...fields(20) }), 431)
  if (s.remoteSettings?.enableConnectProtocol === undefined) await once(s, 'remoteSettings')
  assert.equal(await h2status({ ':method': 'CONNECT', ':protocol': 'websocket', ':scheme': 'https', ':path': '/ws', ':authority': new URL(g.url).host, ...fields(20) }), 431)
})
