// Header forwarding review (src/upstream/headers.ts, src/forwarding.ts): what a client can make
// the gateway drop or pass with Connection, header-name spellings and its HTTP version, checked
// on what real loopback origins receive from requests sent as raw bytes.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { connect as h2connect } from 'node:http2'
import { createServer as netServer, type AddressInfo } from 'node:net'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { startTestGateway, simpleConfig, type TestGateway } from '../helpers/gateway.js'
import { send, req } from '../hardening/raw.js'

let origin: Origin
/** No trusted proxies: every client is untrusted. */
let open: TestGateway
/** 127.0.0.1 is a trusted proxy (the tests' raw sockets come from it). */
let trusted: TestGateway
/** Trusted, and the upstream keeps the client's Host (preserveHost). */
let keepHost: TestGateway

const trustListen = 'listen: { host: 127.0.0.1, port: 0, trustedProxies: [127.0.0.1] }\n'

before(async () => {
  origin = await startOrigin()
  origin.on('*', (r, res) => { res.writeHead(200, { 'content-type': 'application/json' }); res.end(JSON.stringify(r.headers)) })
  open = await startTestGateway(simpleConfig(origin.url))
  trusted = await startTestGateway(simpleConfig(origin.url).replace('listen: { host: 127.0.0.1, port: 0 }\n', trustListen))
  keepHost = await startTestGateway(simpleConfig(origin.url).replace('listen: { host: 127.0.0.1, port: 0 }\n', trustListen).replace('    timeoutMs: 2000\n', '    timeoutMs: 2000\n    preserveHost: true\n'))
})
after(async () => { await open.close(); await trusted.close(); await keepHost.close(); await origin.close() })

/** The headers the origin received for one raw request (a close-delimited exchange). */
async function seen (gw: TestGateway, ...lines: string[]): Promise<Record<string, string>> {
  const ex = await send(Number(new URL(gw.url).port), req(...lines), { responses: 1 })
  const r = ex.responses[0]
  assert.equal(r?.status, 200, ex.data.toString('latin1').slice(0, 200))
  return JSON.parse(r.body.toString('utf8')) as Record<string, string>
}

test('Connection cannot strip the forwarding headers of a trusted proxy, nor the client Host that preserveHost forwards', async () => {
  // Davison's hop-by-hop abuse: a front proxy that passes the client's Connection on lets the
  // client name X-Forwarded-For there. Dropping it left the origin one X-Forwarded-For entry,
  // the (internal, trusted) proxy's address, while Sluice itself limited and logged the real client.
  const h = await seen(trusted, 'GET /fwd HTTP/1.1', 'Host: shop.example',
    'Connection: close, X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host, Forwarded, X-Real-IP, X-Custom',
    'X-Forwarded-For: 203.0.113.9', 'X-Forwarded-Proto: https', 'X-Forwarded-Host: www.example',
    'Forwarded: for=203.0.113.9;proto=https', 'X-Real-IP: 203.0.113.9', 'X-Custom: gone')
  assert.equal(h['x-forwarded-for'], '203.0.113.9, 127.0.0.1')
  assert.equal(h['x-forwarded-proto'], 'https')
  assert.equal(h['x-forwarded-host'], 'www.example')
  assert.equal(h.forwarded, 'for=203.0.113.9;proto=https')
  assert.equal(h['x-real-ip'], '203.0.113.9')
  // Any other field the client's Connection names is still dropped (RFC 9110 §7.6.1).
  assert.equal(h['x-custom'], undefined)

  // preserveHost: `Connection: Host` made undici put the upstream's own host there, so the
  // origin served another virtual host than the one Sluice routed.
  const k = await seen(keepHost, 'GET /host HTTP/1.1', 'Host: shop.example', 'Connection: close, Host')
  assert.equal(k.host, 'shop.example')

  // From an untrusted client the values are Sluice's own either way.
  const u = await seen(open, 'GET /fwd HTTP/1.1', 'Host: shop.example', 'Connection: close, X-Forwarded-For', 'X-Forwarded-For: 203.0.113.9')
  assert.equal(u['x-forwarded-for'], '127.0.0.1')
  assert.equal(u['x-forwarded-host'], 'shop.example')
})

test('forwarding headers spelt with underscores never reach the origin (CGI/WSGI read X_Forwarded_For as X-Forwarded-For)', async () => {
  // CGI, WSGI, Rack and PHP-FPM turn both spellings into HTTP_X_FORWARDED_FOR: an untrusted
  // client's X_Forwarded_For went through beside Sluice's X-Forwarded-For and could win there.
  const spoof = ['X_Forwarded_For: 198.51.100.66', 'X-Forwarded_Host: evil.example', 'X_FORWARDED_PROTO: https', 'X_Real_IP: 198.51.100.66', 'X_Original_URL: /admin']
  for (const gw of [open, trusted]) {
    const h = await seen(gw, 'GET /u HTTP/1.1', 'Host: shop.example', 'Connection: close', ...spoof, 'X_Custom_Thing: kept')
    for (const k of Object.keys(h)) if (k !== 'x_custom_thing') assert.ok(!k.includes('_'), `${k} reached the origin`)
    assert.equal(h['x_custom_thing'], 'kept')
    assert.equal(h['x-forwarded-for'], '127.0.0.1')
    assert.equal(h['x-forwarded-host'], 'shop.example')
    assert.equal(h['x-forwarded-proto'], 'http')
  }
})

test('Via names the protocol version the request came in with: 1.0, 1.1 or 2 (RFC 9110 §7.6.3)', async () => {
  // It was `1.1 sluice` whatever the client spoke.
  assert.equal((await seen(open, 'GET /v HTTP/1.0', 'Host: shop.example')).via, '1.0 sluice')
  assert.equal((await seen(open, 'GET /v HTTP/1.1', 'Host: shop.example', 'Connection: close', 'Via: 1.1 front')).via, '1.1 front, 1.1 sluice')

  const dir = mkdtempSync(join(tmpdir(), 'sluice-via-'))
  const certFile = join(dir, 'c.pem')
  const keyFile = join(dir, 'c.key')
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', keyFile, '-out', certFile, '-subj', '/CN=t', '-addext', 'subjectAltName=IP:127.0.0.1', '-days', '2'], { stdio: 'ignore' })
  const h2 = await startTestGateway(simpleConfig(origin.url).replace('listen: { host: 127.0.0.1, port: 0 }\n', `listen:
  host: 127.0.0.1
  port: 0
  tls: { certFile: "${certFile}", keyFile: "${keyFile}" }
  http2: true
`))
  try {
    const s = h2connect(h2.url.replace('http:', 'https:'), { rejectUnauthorized: false })
    const st = s.request({ ':path': '/v' })
    let body = ''
    let via: unknown
    st.setEncoding('utf8')
    st.on('response', (h) => { via = h.via })
    st.on('data', (c: string) => { body += c })
    await new Promise((resolve, reject) => { st.on('end', resolve); st.on('error', reject) })
    s.close()
    assert.equal((JSON.parse(body) as Record<string, string>).via, '2 sluice')
    // The response came from the upstream over HTTP/1.1.
    assert.equal(via, '1.1 sluice')
  } finally {
    await h2.close()
    rmSync(dir, { recursive: true, force: true })
  }
})

test('a 304 that carries the Content-Length of the 200 it stands for (or a 204 with one) reaches the client, and the connection stays usable', async () => {
  // RFC 9110 §8.6 lets a 304 carry that length; it has no content all the same. undici read the
  // missing bytes as a body cut short and Sluice cut the client's connection with no answer at all.
  const upstream = netServer((s) => {
    let buf = ''
    s.on('error', () => {})
    s.on('data', (d) => {
      buf += d.toString('latin1')
      for (let i = buf.indexOf('\r\n\r\n'); i !== -1; i = buf.indexOf('\r\n\r\n')) {
        const head = buf.slice(0, i)
        buf = buf.slice(i + 4)
        if (/^if-none-match:/im.test(head)) s.write('HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nContent-Length: 100\r\n\r\n')
        else if (head.startsWith('GET /empty ')) s.write('HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n')
        else s.write('HTTP/1.1 200 OK\r\nETag: "v1"\r\nContent-Length: 2\r\n\r\nok')
      }
    })
  })
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve))
  const gw = await startTestGateway(simpleConfig(`http://127.0.0.1:${(upstream.address() as AddressInfo).port}`))
  try {
    const ex = await send(Number(new URL(gw.url).port),
      req('GET /page HTTP/1.1', 'Host: shop.example', 'If-None-Match: "v1"') +
      req('GET /empty HTTP/1.1', 'Host: shop.example') +
      req('GET /page HTTP/1.1', 'Host: shop.example', 'Connection: close'), { responses: 3 })
    assert.deepEqual(ex.responses.map((r) => r.status), [304, 204, 200], ex.data.toString('latin1').slice(0, 400))
    assert.deepEqual(ex.responses[0].headers.etag, ['"v1"'])
    assert.equal(ex.responses[0].body.length, 0)
    // A 204 may not carry Content-Length at all (RFC 9110 §8.6): a client that reads it as
    // framing would wait for 7 bytes and take the next response's head for them.
    assert.equal(ex.responses[1].headers['content-length'], undefined)
    assert.equal(ex.responses[2].body.toString(), 'ok')
  } finally {
    await gw.close()
    upstream.close()
  }
})

test('a Content-Type Fastify cannot parse is forwarded as sent, with its body; the origin judges it, not the gateway', async () => {
  for (const ct of ['json', 'a/b c', ';;', 'application/json; charset=utf-8']) {
    const r = await fetch(open.url + '/ct', { method: 'POST', headers: { 'content-type': ct }, body: 'payload' })
    assert.equal(r.status, 200, `${ct}: ${await r.clone().text()}`)
    const seen = await r.json() as Record<string, string>
    assert.equal(seen['content-type'], ct)
    assert.equal(seen['content-length'], '7')
  }
  // A PUT with no Content-Type still has none upstream.
  const r = await fetch(open.url + '/ct', { method: 'PUT', body: new Uint8Array([1, 2, 3]) })
  assert.equal(r.status, 200)
  assert.equal((await r.json() as Record<string, string>)['content-type'], undefined)
})
