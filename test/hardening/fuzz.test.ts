// Property-based tests (fast-check): random configs never crash the loader, and random request
// lines and headers never crash or hang a running gateway; errors are the documented ones.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { connect } from 'node:net'
import fc from 'fast-check'
import { stringify } from 'yaml'
import { request } from 'undici'
import { parseConfig, ConfigError } from '../../src/config/load.js'
import { ERRORS } from '../../src/errors.js'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { startTestGateway, simpleConfig, type TestGateway } from '../helpers/gateway.js'

// Fixed seeds keep CI reproducible; FC_SEED=<n> (or FC_SEED=random) explores further.
const seed = process.env.FC_SEED === 'random' ? Date.now() : Number(process.env.FC_SEED ?? 20261122)

const VALID = {
  listen: { host: '127.0.0.1', port: 8080 },
  upstreams: { api: { url: 'http://127.0.0.1:3000', timeoutMs: 1000, retry: { attempts: 1 } } },
  routes: [{ name: 'a', match: { pathPrefix: '/api/' }, upstream: 'api', cache: { enabled: true, defaultTtlSeconds: 5 } }]
}

const anyValue = fc.oneof(fc.integer({ min: -1e12, max: 1e12 }), fc.double(), fc.string(), fc.boolean(), fc.constant(null), fc.array(fc.string(), { maxLength: 3 }), fc.dictionary(fc.string({ maxLength: 8 }), fc.string(), { maxKeys: 3 }))
const paths = [['listen', 'port'], ['upstreams', 'api', 'url'], ['upstreams', 'api', 'timeoutMs'], ['routes', 0, 'cache', 'defaultTtlSeconds'], ['routes', 0, 'match'], ['routes', 0, 'name'], ['routes'], ['admin'], ['redis', 'url'], ['routes', 0, 'bogus'], ['upstreams', 'api', 'retry', 'attempts'], ['log', 'level']]

test('random config mutations give a Config or a ConfigError with positions, never another exception', () => {
  fc.assert(fc.property(fc.constantFrom(...paths), anyValue, (path, value) => {
    const cfg = structuredClone(VALID) as Record<string, unknown>
    let node: Record<string | number, unknown> = cfg
    for (let i = 0; i < path.length - 1; i++) {
      const k = path[i]
      if (node[k] === undefined || node[k] === null || typeof node[k] !== 'object') node[k] = {}
      node = node[k] as Record<string | number, unknown>
    }
    node[path[path.length - 1]] = value
    try {
      parseConfig(stringify(cfg), 'fuzz.yaml', {})
    } catch (err) {
      assert.ok(err instanceof ConfigError, `unexpected ${(err as Error).stack}`)
      for (const i of err.issues) {
        assert.equal(i.file, 'fuzz.yaml')
        assert.ok(Number.isInteger(i.line) && Number.isInteger(i.col))
        assert.ok(i.message.length > 0)
      }
    }
  }), { numRuns: 300, seed })
})

test('YAML aliases to missing anchors and alias bombs are config errors', () => {
  for (const text of ['*!', 'a: *nope', 'a: &x [1]\nb: [*x, *x, *x]']) {
    try { parseConfig(text, 'fuzz.yaml', {}) } catch (err) { assert.ok(err instanceof ConfigError, `unexpected ${(err as Error).stack}`) }
  }
})

test('random YAML text never crashes the loader', () => {
  fc.assert(fc.property(fc.string({ maxLength: 200 }), (text) => {
    try { parseConfig(text, 'fuzz.yaml', {}) } catch (err) { assert.ok(err instanceof ConfigError, `unexpected ${(err as Error).stack}`) }
  }), { numRuns: 300, seed })
})

let origin: Origin
let gw: TestGateway
before(async () => {
  origin = await startOrigin()
  gw = await startTestGateway(simpleConfig(origin.url).replace('    upstream: origin\n', '    upstream: origin\n    cache: { enabled: true, defaultTtlSeconds: 5 }\n    compression: { enabled: true }\n'))
})
after(async () => { await gw.close(); await origin.close() })

const DOCUMENTED = new Set<number>([200, 304, 404, ...Object.values(ERRORS).map((e) => e.status)])

function send (port: number, raw: string): Promise<string> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1')
    const chunks: Buffer[] = []
    const done = () => { s.destroy(); resolve(Buffer.concat(chunks).toString('latin1')) }
    s.setTimeout(3000, done) // a hang shows up as an empty answer, asserted below
    s.on('data', (c) => chunks.push(c))
    s.on('end', done)
    s.on('error', done)
    s.on('connect', () => s.end(raw))
  })
}

const token = fc.stringMatching(/^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}$/)
const headerValue = fc.oneof(fc.string({ maxLength: 40 }), fc.constantFrom('chunked', '0', '-1', '99999999999', 'close', 'keep-alive, x-a', 'gzip, br', 'no-cache', 'bytes=0-1', '*'))
const method = fc.constantFrom('GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'OPTIONS', 'PATCH', 'PROPFIND', 'FOO', 'get', '')
const target = fc.oneof(fc.webPath(), fc.constantFrom('/', '*', '/../x', '/%2e%2e/', '/a%00b', '/a%zz', '//x', 'http://evil.example/x', '/a?b=%', '/' + 'x'.repeat(9000)), fc.string({ maxLength: 30 }).map((s) => '/' + s))
const headerName = fc.oneof(token, fc.constantFrom('Content-Length', 'Transfer-Encoding', 'Host', 'Connection', 'Upgrade', 'Expect', 'Cache-Control', 'Range', 'If-None-Match', 'X-Forwarded-For', 'Accept-Encoding', 'Authorization'))

test('random request lines and headers never crash or hang the gateway, and every status is a documented one', async () => {
  const port = Number(new URL(gw.url).port)
  await fc.assert(fc.asyncProperty(method, target, fc.constantFrom('HTTP/1.1', 'HTTP/1.0', 'HTTP/2.0', 'HTTP/1.1 x', ''), fc.array(fc.tuple(headerName, headerValue), { maxLength: 6 }), fc.string({ maxLength: 30 }), async (m, t, v, headers, body) => {
    const lines = [`${m} ${t} ${v}`.trim(), 'Host: fuzz.example', ...headers.map(([k, val]) => `${k}: ${val}`), 'Connection: close', '', body]
    const answer = await send(port, lines.join('\r\n'))
    if (answer === '') return // the server may close on garbage; it must not crash (checked below)
    const status = /^HTTP\/1\.[01] (\d{3})/.exec(answer)
    assert.ok(status, `not an HTTP response: ${JSON.stringify(answer.slice(0, 80))}`)
    const code = Number(status[1])
    assert.ok(DOCUMENTED.has(code) || (code >= 200 && code < 600), `status ${code}`)
    if (code >= 400 && /content-type: application\/json/i.test(answer) && !/origin/.test(answer)) {
      const json = answer.slice(answer.indexOf('\r\n\r\n') + 4)
      try {
        const e = JSON.parse(json.replace(/^[0-9a-f]+\r\n/i, '').replace(/\r\n0\r\n\r\n$/, '')) as { error?: string }
        if (e.error !== undefined && e.error.startsWith('SLUICE_')) assert.ok(e.error in ERRORS, e.error)
      } catch { /* the origin's own error body */ }
    }
  }), { numRuns: 300, seed })
  const health = await request(gw.adminUrl + '/healthz')
  assert.equal(health.statusCode, 200, 'the gateway is still up')
  await health.body.dump()
  const ok = await request(gw.url + '/still-serving')
  assert.equal(ok.statusCode, 200)
  await ok.body.dump()
})
