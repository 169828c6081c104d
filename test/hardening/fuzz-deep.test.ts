// Property-based tests, part two (fuzz.test.ts has the first set), with fast-check:
// - structural config mutations anywhere in a full config (wrong types, unknown keys at any depth,
//   deep nesting, huge and non-finite numbers, removed keys, YAML tricks) give a Config or a
//   ConfigError whose every issue has file, line, column, key path and message;
// - raw requests mixing valid and hostile parts: every answer the gateway makes itself is a JSON
//   error whose code is declared in src/errors.ts with that very status; nothing hangs or crashes.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import fc from 'fast-check'
import { stringify } from 'yaml'
import { request } from 'undici'
import { parseConfig, ConfigError } from '../../src/config/load.js'
import { ERRORS } from '../../src/errors.js'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { startTestGateway, type TestGateway } from '../helpers/gateway.js'
import { send, type RawResponse } from './raw.js'

const seed = process.env.FC_SEED === 'random' ? Date.now() : Number(process.env.FC_SEED ?? 8080)

const FULL = {
  listen: { host: '127.0.0.1', port: 8080, trustedProxies: ['10.0.0.0/8'] },
  admin: { host: '127.0.0.1', port: 9901, token: '' },
  redis: { url: '' },
  log: { level: 'info', accessLog: true },
  server: { maxHeaderBytes: 16384, headersTimeoutMs: 30000, keepAliveTimeoutMs: 5000, maxUrlBytes: 8192 },
  cache: { memory: { maxBytes: 1000000, maxEntryBytes: 100000 } },
  defaults: { timeoutMs: 1000 },
  upstreams: {
    api: {
      url: 'http://127.0.0.1:3000',
      tls: { rejectUnauthorized: true },
      rateLimit: { requestsPerSecond: 5, burst: 10, maxQueueMs: 0 },
      circuitBreaker: { errorThresholdPercent: 50, volumeThreshold: 20, windowMs: 10000, resetTimeoutMs: 10000 },
      retry: { attempts: 2, backoffMs: 100, maxBackoffMs: 2000 }
    }
  },
  routes: [
    {
      name: 'cached',
      match: { pathPrefix: '/api/', methods: ['GET', 'HEAD'], host: '*' },
      upstream: 'api',
      cache: { enabled: true, defaultTtlSeconds: 60, key: { ignoreParams: ['utm_*'] } },
      compression: { enabled: true, encodings: ['br', 'gzip'] },
      rateLimit: { perClient: { requestsPerSecond: 50, burst: 100, key: 'ip' } }
    },
    { name: 'rest', match: { pathPrefix: '/' }, upstream: 'api' }
  ]
}

type Node = Record<string | number, unknown>

/** Every [path] to an object or array node, and every leaf, of a value. */
function allPaths (v: unknown, prefix: (string | number)[] = [], out: (string | number)[][] = []): (string | number)[][] {
  out.push(prefix)
  if (Array.isArray(v)) v.forEach((x, i) => allPaths(x, [...prefix, i], out))
  else if (v !== null && typeof v === 'object') for (const [k, x] of Object.entries(v)) allPaths(x, [...prefix, k], out)
  return out
}
const PATHS = allPaths(FULL).filter((p) => p.length > 0)

const nasty = fc.oneof(
  fc.constantFrom(1e308, -1e308, Number.MAX_SAFE_INTEGER + 2, 2 ** 64, -0, 0.5, -1, 65536, 1e21, '', ' ', 'NaN', '.inf', '-.inf', '~', 'null', 'yes', 'on', '0x10', '0o17', '1_000', '1e3', '${UNSET}', '${X:-1}', '$${X}', '\u0000', '\u202e', '*', '/', '//', 'http://', 'redis://:@'),
  fc.integer(), fc.double(), fc.string({ maxLength: 20 }), fc.boolean(), fc.constant(null),
  fc.array(fc.oneof(fc.string({ maxLength: 5 }), fc.integer()), { maxLength: 4 }),
  fc.dictionary(fc.string({ minLength: 1, maxLength: 6 }), fc.oneof(fc.string({ maxLength: 5 }), fc.integer()), { maxKeys: 3 }),
  fc.integer({ min: 1, max: 60 }).map((depth) => { let x: unknown = 'deep'; for (let i = 0; i < depth; i++) x = i % 2 ? [x] : { n: x }; return x })
)

type Mutation = { op: 'set', path: (string | number)[], value: unknown } | { op: 'delete', path: (string | number)[] } | { op: 'unknown', path: (string | number)[], key: string, value: unknown }
const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ op: fc.constant('set' as const), path: fc.constantFrom(...PATHS), value: nasty }),
  fc.record({ op: fc.constant('delete' as const), path: fc.constantFrom(...PATHS) }),
  fc.record({ op: fc.constant('unknown' as const), path: fc.constantFrom([], ...PATHS), key: fc.oneof(fc.string({ minLength: 1, maxLength: 10 }), fc.constantFrom('__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', '<<')), value: nasty })
)

function apply (cfg: Node, m: Mutation): void {
  let node: unknown = cfg
  const parentPath = m.op === 'unknown' ? m.path : m.path.slice(0, -1)
  for (const k of parentPath) {
    if (node === null || typeof node !== 'object') return
    node = (node as Node)[k]
  }
  if (node === null || typeof node !== 'object') return
  const n = node as Node
  if (m.op === 'set') n[m.path[m.path.length - 1]] = m.value
  else if (m.op === 'delete') { if (Array.isArray(n)) n.splice(Number(m.path[m.path.length - 1]), 1); else delete n[m.path[m.path.length - 1]] }
  else if (!Array.isArray(n)) Object.defineProperty(n, m.key, { value: m.value, enumerable: true, configurable: true, writable: true })
}

function checkLoad (text: string): void {
  try {
    parseConfig(text, 'fuzz.yaml', { X: '1' })
  } catch (err) {
    assert.ok(err instanceof ConfigError, `not a ConfigError: ${(err as Error).stack}`)
    assert.ok(err.issues.length > 0)
    for (const i of err.issues) {
      assert.equal(i.file, 'fuzz.yaml')
      assert.ok(Number.isInteger(i.line) && i.line >= 1, `line ${i.line}`)
      assert.ok(Number.isInteger(i.col) && i.col >= 1, `col ${i.col}`)
      assert.equal(typeof i.path, 'string')
      assert.ok(typeof i.message === 'string' && i.message.length > 0)
    }
  }
}

test('1 to 4 structural mutations anywhere in a full config never throw anything but a positioned ConfigError', () => {
  fc.assert(fc.property(fc.array(mutation, { minLength: 1, maxLength: 4 }), fc.boolean(), (ms, flow) => {
    const cfg = structuredClone(FULL) as unknown as Node
    for (const m of ms) apply(cfg, m)
    checkLoad(stringify(cfg, { collectionStyle: flow ? 'flow' : 'any' }))
  }), { numRuns: 400, seed })
})

test('hostile YAML (anchors, merge keys, tags, huge nesting, duplicate keys) never crashes the loader', () => {
  const base = stringify(FULL)
  const tricks = fc.constantFrom(
    'a: &a [*a]\n', 'x: !!binary aGk=\n', 'x: !!js/function "f"\n', 'x: !custom 1\n', '<<: *nope\n', 'routes: *r\n',
    'listen: { port: 1, port: 2 }\n', '? [a, b]\n: 1\n', 'x: ' + '['.repeat(500) + ']'.repeat(500) + '\n', 'x: ' + '{a: '.repeat(200) + '1' + '}'.repeat(200) + '\n',
    '%YAML 1.1\n---\n', '---\n---\n', '\t- tab\n', 'x: "\\u0000"\n', 'x: 0x' + 'f'.repeat(40) + '\n', 'x: 1' + '0'.repeat(400) + '\n',
    'b: &b { c: &c [*b, *c] }\n', 'aliases: [' + Array.from({ length: 50 }, () => '*a').join(', ') + ']\n'
  )
  fc.assert(fc.property(tricks, fc.nat({ max: 2000 }), fc.boolean(), (trick, at, replace) => {
    const i = Math.min(at, base.length)
    const lineStart = base.lastIndexOf('\n', i) + 1
    checkLoad(replace ? trick : base.slice(0, lineStart) + trick + base.slice(lineStart))
  }), { numRuns: 300, seed })
})

// ---- requests -----------------------------------------------------------------------------

let origin: Origin
let gw: TestGateway
let port: number
before(async () => {
  origin = await startOrigin()
  origin.on('*', (req, res) => { res.writeHead(200, { 'content-type': 'text/plain', 'x-from-origin': '1', 'cache-control': 'max-age=5' }); res.end(`${req.method} ${req.url}`) })
  gw = await startTestGateway(`
listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0 }
log: { level: warn, accessLog: false }
server: { maxHeaderBytes: 2048, maxHeadersCount: 20, maxUrlBytes: 256, headersTimeoutMs: 1000, requestTimeoutMs: 2000, keepAliveTimeoutMs: 500 }
upstreams:
  origin: { url: "${origin.url}", timeoutMs: 2000, retry: { attempts: 0 } }
routes:
  - { name: cached, match: { pathPrefix: /c/, methods: [GET, HEAD] }, upstream: origin, cache: { enabled: true }, compression: { enabled: true } }
  - { name: small, match: { pathPrefix: /s/ }, upstream: origin, maxBodyBytes: 8 }
  - { name: nows, match: { pathPrefix: /w/ }, upstream: origin, websocket: false }
  - { name: only-host, match: { pathPrefix: /h/, host: a.example }, upstream: origin }
`)
  port = Number(new URL(gw.url).port)
})
after(async () => { await gw.close(); await origin.close() })

const tchar = fc.constantFrom(...'abcXYZ019!#$%&\'*+-.^_`|~'.split(''))
const name = fc.oneof(
  fc.constantFrom('Host', 'Content-Length', 'Transfer-Encoding', 'Connection', 'Upgrade', 'Expect', 'TE', 'Trailer', 'Keep-Alive', 'Cache-Control', 'Pragma', 'If-None-Match', 'If-Modified-Since',
    'Range', 'Accept-Encoding', 'Authorization', 'Cookie', 'X-Forwarded-For', 'X-Forwarded-Host', 'Forwarded', 'X-Original-URL', 'Content-Encoding', 'Vary', 'Via', 'Max-Forwards'),
  fc.array(tchar, { minLength: 1, maxLength: 10 }).map((a) => a.join('')),
  fc.constantFrom('X A', 'X:A', '', ' Host', 'Host ', 'X\u00ffA', 'X\u0000A')
)
const value = fc.oneof(
  fc.constantFrom('chunked', 'gzip, chunked', 'chunked, gzip', 'identity', '0', '5', '-1', '1e3', ' 5', '5, 5', '99999999999999999999', 'close', 'upgrade', 'websocket', 'h2c', 'keep-alive, Host',
    '100-continue', 'only-if-cached', 'max-age=0, no-cache', 'no-store', 'bytes=0-0', 'bytes=-1,0-', '*', 'W/"x"', 'a.example', 'a.example:99999', '[::1]', 'evil.example, a.example', 'br;q=1, gzip;q=0', 'trailers'),
  fc.string({ maxLength: 30 }),
  fc.string({ unit: 'binary', maxLength: 12 }),
  fc.nat({ max: 3000 }).map((n) => 'v'.repeat(n))
)
const target = fc.oneof(
  fc.constantFrom('/c/a', '/c/a?x=1', '/s/a', '/w/a', '/h/a', '/', '*', '/c/%2e%2e/s/x', '/c/..%2f', '/c/%00', '/c/%', '/c/a\\b', 'http://a.example/c/a', 'a.example:80', '//c/a', '/c/' + 'y'.repeat(300), '/c/\u00e9', '/c/a#f', '/c/a?%zz'),
  fc.webPath().map((p) => '/c' + p),
  fc.string({ maxLength: 16 }).map((s) => '/c/' + s)
)
const method = fc.constantFrom('GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'OPTIONS', 'PATCH', 'TRACE', 'CONNECT', 'PURGE', 'QUERY', 'PRI', 'get', 'G ET', '')
const version = fc.constantFrom('HTTP/1.1', 'HTTP/1.1', 'HTTP/1.1', 'HTTP/1.0', 'HTTP/0.9', 'HTTP/2', 'HTTP/1.10', 'http/1.1', '')
const eol = fc.constantFrom('\r\n', '\r\n', '\r\n', '\n', '\r')
const body = fc.oneof(fc.constant(''), fc.string({ maxLength: 40 }), fc.constantFrom('0\r\n\r\n', '5\r\nhello\r\n0\r\n\r\n', 'z\r\n', '0\r\n\r\nGET /c/smuggled HTTP/1.1\r\nHost: a\r\n\r\n', 'x'.repeat(20)))

let own = 0
const CODES = new Map<string, number>(Object.entries(ERRORS).map(([k, v]) => [k, v.status]))

/** A response Sluice made itself (not the origin's): it must be a documented JSON error. */
function checkOwn (r: RawResponse, what: string): void {
  if (r.headers['x-from-origin'] !== undefined) return
  if (r.status < 400) return // 1xx (100-continue), 304 from the cache, 101
  const text = r.body.toString('utf8')
  if (r.status === 503 && text === '' && r.headers.connection?.[0] === 'close') return // Node: over maxRequestsPerSocket (not configured here)
  own++
  let parsed: { error?: string; message?: string }
  try { parsed = JSON.parse(text) } catch { assert.fail(`${what}: gateway ${r.status} without a JSON body: ${JSON.stringify(r.raw.toString('latin1').slice(0, 200))}`) }
  assert.ok(parsed.error !== undefined && CODES.has(parsed.error), `${what}: undeclared code ${parsed.error}`)
  assert.equal(CODES.get(parsed.error), r.status, `${what}: ${parsed.error} with status ${r.status}`)
  assert.equal(typeof parsed.message, 'string')
}

test('hostile request lines and headers: every gateway answer is a declared JSON error with its status; nothing hangs', async () => {
  let answered = 0
  await fc.assert(fc.asyncProperty(method, target, version, fc.array(fc.tuple(name, value), { maxLength: 8 }), eol, body, fc.boolean(), async (m, t, v, headers, nl, b, withHost) => {
    const lines = [[m, t, v].filter((x) => x !== '').join(' ')]
    if (withHost) lines.push('Host: a.example')
    for (const [k, val] of headers) lines.push(`${k}: ${val}`)
    const bytes = lines.join(nl) + nl + nl + b
    const what = JSON.stringify(bytes.slice(0, 300))
    // Not half-closed (Node aborts a request whose client half-closes); the first answer is enough.
    const x = await send(port, Buffer.from(bytes, 'latin1'), { waitMs: 5000, responses: 1 })
    assert.ok(x.closed || x.responses.length > 0, `${what}: no answer and no close within 5 s (a hang)`)
    if (x.data.length > 0) {
      assert.match(x.data.toString('latin1', 0, 13), /^HTTP\/1\.1 [1-5]\d\d/, `${what}: not an HTTP/1.1 status line`)
      answered++
    }
    for (const r of x.responses) checkOwn(r, what)
  }), { numRuns: 300, seed, interruptAfterTimeLimit: 45_000 })
  assert.ok(answered > 50, `most cases were answered (${answered})`)
  assert.ok(own > 30, `the gateway itself answered enough errors to check (${own})`)
  const ok = await request(gw.url + '/c/still-up')
  assert.equal(ok.statusCode, 200)
  await ok.body.dump()
  assert.equal(gw.logs.filter((l) => l.msg === 'internal error').length, 0, 'no SLUICE_ERR_INTERNAL')
})
