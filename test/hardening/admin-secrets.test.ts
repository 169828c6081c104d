// The admin surface and secrets: binding refused off loopback without a token, constant-time
// token comparison, failures rate limited and logged without the token, secrets (admin token,
// Redis password) absent from every log line, admin answer and config error; upstream TLS
// verified by default (a self-signed origin made with the machine's openssl).
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { execFileSync, spawnSync } from 'node:child_process'
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https'
import { once } from 'node:events'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { parseConfig, ConfigError } from '../../src/config/load.js'
import { tokenMatches } from '../../src/admin.js'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { startTestGateway, simpleConfig, type TestGateway } from '../helpers/gateway.js'
import { reservePort } from '../helpers/ports.js'
import { cliCommand } from '../helpers/cli.js'

const TOKEN = 'tok-SECRET-4f1c9a7e2b'
const REDIS_PW = 'pw-SECRET-9d3e0b'
const WRONG = 'wrong-SECRET-77aa'
const SECRETS = [TOKEN, REDIS_PW, WRONG]

let origin: Origin
let gw: TestGateway
let redisUrl: string
before(async () => {
  origin = await startOrigin()
  redisUrl = `redis://:${REDIS_PW}@127.0.0.1:${await reservePort()}/0` // nothing listens: Redis is down
  gw = await startTestGateway(simpleConfig(origin.url).replace('admin: { host: 127.0.0.1, port: 0 }', `admin: { host: 127.0.0.1, port: 0, token: "${TOKEN}" }\nredis: { url: "${redisUrl}", connectTimeoutMs: 100, commandTimeoutMs: 50 }`))
})
after(async () => { await gw.close(); await origin.close() })

function noSecret (text: string, where: string): void {
  for (const s of SECRETS) assert.equal(text.includes(s), false, `${where} contains a secret: ${text.slice(Math.max(0, text.indexOf(s) - 80), text.indexOf(s) + 40)}`)
}

const minimal = (admin: string, extra = '') => `admin: ${admin}\n${extra}upstreams: { a: { url: "http://127.0.0.1:1" } }\nroutes: [{ name: r, upstream: a }]\n`

function configIssues (yaml: string): ConfigError['issues'] {
  try { parseConfig(yaml, 'hard.yaml', {}) } catch (err) {
    assert.ok(err instanceof ConfigError, String(err))
    return err.issues
  }
  return []
}

test('the admin port refuses a non-loopback address without a token, with file, line and key path', () => {
  for (const host of ['0.0.0.0', '"::"', '10.1.2.3', 'admin.example.com', '127.evil.example']) {
    const issues = configIssues(minimal(`{ host: ${host} }`))
    const i = issues.find((x) => x.path === 'admin.host')
    assert.ok(i, `${host}: ${JSON.stringify(issues)}`)
    assert.equal(i.file, 'hard.yaml')
    assert.equal(i.line, 1)
    assert.match(i.message, /requires admin\.token/)
  }
  for (const host of ['127.0.0.1', '127.0.0.2', '"::1"', 'localhost']) assert.deepEqual(configIssues(minimal(`{ host: ${host} }`)), [], host)
  assert.deepEqual(configIssues(minimal(`{ host: 0.0.0.0, token: "${TOKEN}" }`)), [])
})

test('a gateway with such a config never starts, and `sluice validate` says why', async () => {
  await assert.rejects(startTestGateway(simpleConfig(origin.url).replace('admin: { host: 127.0.0.1, port: 0 }', 'admin: { host: 0.0.0.0, port: 0 }')), (err: Error) => err instanceof ConfigError && /admin\.host/.test(err.message))
  const dir = mkdtempSync(join(tmpdir(), 'sluice-hard-'))
  try {
    const file = join(dir, 'bad.yaml')
    writeFileSync(file, minimal('{ host: 0.0.0.0 }'))
    const [cmd, args] = cliCommand(['validate', '--config', file])
    const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 20000 })
    assert.equal(r.status, 1)
    assert.match(r.stdout + r.stderr, /bad\.yaml:1:\d+ admin\.host: .*requires admin\.token/)
  } finally { rmSync(dir, { recursive: true, force: true }) }
})

test('server deadlines Node would refuse at start are a config error instead', () => {
  const issues = configIssues(minimal('{ host: 127.0.0.1 }', 'server: { requestTimeoutMs: 1000 }\n'))
  assert.equal(issues[0]?.path, 'server.headersTimeoutMs')
  assert.match(issues[0].message, /requestTimeoutMs/)
  assert.deepEqual(configIssues(minimal('{ host: 127.0.0.1 }', 'server: { requestTimeoutMs: 0 }\n')), [])
})

test('tokens are compared in constant time: SHA-256 digests through timingSafeEqual, any length', () => {
  // The TypeScript source, from test/hardening (tsx) or dist/test/hardening (compiled).
  const src = readFileSync(new URL(import.meta.url.endsWith('.js') ? '../../../src/admin.ts' : '../../src/admin.ts', import.meta.url), 'utf8')
  assert.match(src, /timingSafeEqual\(digest\(presented\), digest\(expected\)\)/)
  assert.doesNotMatch(src, /(presented|token)\s*[!=]==\s*(token|presented|expected)/, 'no early-exit string comparison of tokens')
  assert.equal(tokenMatches(TOKEN, TOKEN), true)
  assert.equal(tokenMatches('', TOKEN), false)
  assert.equal(tokenMatches(TOKEN + 'x', TOKEN), false) // a length mismatch neither throws nor short-cuts
  assert.equal(tokenMatches('x'.repeat(10000), TOKEN), false)
})

async function get (url: string, token?: string) {
  const r = await request(url, { headers: token === undefined ? {} : { authorization: `Bearer ${token}` } })
  return { status: r.statusCode, headers: r.headers, text: await r.body.text() }
}

test('no secret appears in /admin/config, /readyz, /admin/status, /admin/upstreams or /metrics', async () => {
  const cfg = await get(gw.adminUrl + '/admin/config', TOKEN)
  assert.equal(cfg.status, 200)
  const parsed = JSON.parse(cfg.text) as { config: { admin: { token: string }; redis: { url: string } } }
  assert.equal(parsed.config.admin.token, '[redacted]')
  assert.match(parsed.config.redis.url, /^redis:\/\/:\*\*\*@127\.0\.0\.1:\d+\/0$/)
  for (const path of ['/admin/config', '/readyz', '/admin/status', '/admin/upstreams', '/metrics', '/healthz']) {
    const r = await get(gw.adminUrl + path, TOKEN)
    assert.equal(r.status, 200, path)
    noSecret(r.text, path)
    noSecret(JSON.stringify(r.headers), path + ' headers')
  }
})

test('a reload that fails says why without echoing secrets', async () => {
  const good = readFileSync(gw.file, 'utf8')
  const variants = [
    good.replace(`token: "${TOKEN}"`, `token: ["${TOKEN}"]`),
    good.replace(`token: "${TOKEN}"`, `token: { value: "${TOKEN}" }`),
    good.replace(`url: "${redisUrl}"`, `url: "http://:${REDIS_PW}@127.0.0.1:1"`),
    good.replace(`url: "${redisUrl}"`, `url: "redis://:${REDIS_PW}@[bad"`),
    good.replace(`url: "${redisUrl}"`, `url: ${JSON.stringify(`redis://:${REDIS_PW}@127.0.0.1:1/0`)}, passwd: "${REDIS_PW}"`), // an unknown key beside a secret
    good.replace(`url: "${redisUrl}"`, `url: "${redisUrl}", password: ["${REDIS_PW}"]`), // a secret of the wrong type
    good.replace(/url: http:\/\/127\.0\.0\.1:\d+/, `url: "http://user:${REDIS_PW}@127.0.0.1:1"`),
    good.replace(/url: http:\/\/127\.0\.0\.1:\d+/, `url: "ht tp://user:${REDIS_PW}@127.0.0.1:1"`),
    good.replace(`token: "${TOKEN}"`, `token: "${TOKEN}" x: [`), // a YAML syntax error on the secret's line
    good.replace(`token: "${TOKEN}"`, `token: ${TOKEN}: {`),
    good.replace(`token: "${TOKEN}"`, `token: "${TOKEN}`)
  ]
  try {
    for (const [i, yaml] of variants.entries()) {
      gw.write(yaml)
      const r = await request(gw.adminUrl + '/admin/reload', { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` } })
      const text = await r.body.text()
      assert.equal(r.statusCode, 422, `variant ${i}: ${text}`)
      assert.match(text, /SLUICE_ERR_CONFIG_INVALID/)
      noSecret(text, `reload answer ${i}`)
      try { parseConfig(yaml, 'x.yaml', {}) } catch (err) { noSecret((err as Error).message, `ConfigError ${i}`) }
    }
  } finally { gw.write(good) }
})

test('repeated admin failures are rate limited (429) and logged without any token; every log line is clean', async () => {
  const statuses: number[] = []
  for (let i = 0; i < 12; i++) statuses.push((await get(gw.adminUrl + '/admin/config', WRONG)).status)
  assert.deepEqual(statuses.slice(0, 10), Array(10).fill(401))
  assert.deepEqual(statuses.slice(10), [429, 429])
  const locked = await get(gw.adminUrl + '/admin/config', TOKEN)
  assert.equal(locked.status, 429, 'even the right token waits out the lockout')
  assert.ok(Number(locked.headers['retry-after']) > 0)
  const failures = gw.logs.filter((l) => l.msg === 'admin authentication failed')
  assert.ok(failures.length >= 10, `each failure is logged (${failures.length})`)
  // A proxied request carrying credentials, and an upstream error, are logged too.
  await (await request(gw.url + '/x', { headers: { authorization: `Bearer ${TOKEN}`, cookie: `s=${REDIS_PW}` } })).body.dump()
  await new Promise((resolve) => setTimeout(resolve, 200)) // let Redis connection errors be logged
  assert.ok(gw.logs.length > 15)
  for (const line of gw.logs) noSecret(JSON.stringify(line), 'log line')
})

// ---- upstream TLS ----------------------------------------------------------------------------

const haveOpenssl = spawnSync('openssl', ['version'], { encoding: 'utf8' }).status === 0
let tlsDir = ''
let tlsOrigin: HttpsServer | null = null
let tlsUrl = ''

async function startTlsOrigin (): Promise<void> {
  tlsDir = mkdtempSync(join(tmpdir(), 'sluice-tls-'))
  const key = join(tlsDir, 'key.pem')
  const cert = join(tlsDir, 'cert.pem')
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' })
  tlsOrigin = createHttpsServer({ key: readFileSync(key), cert: readFileSync(cert) }, (_req, res) => { res.writeHead(200, { 'content-type': 'text/plain' }); res.end('tls ok') })
  tlsOrigin.listen(0, '127.0.0.1')
  await once(tlsOrigin, 'listening')
  tlsUrl = `https://127.0.0.1:${(tlsOrigin.address() as { port: number }).port}`
}

after(() => {
  tlsOrigin?.closeAllConnections()
  tlsOrigin?.close()
  if (tlsDir) rmSync(tlsDir, { recursive: true, force: true })
})

test('upstream TLS is verified by default: a self-signed origin is a 502 SLUICE_ERR_UPSTREAM_TLS', { skip: haveOpenssl ? false : 'openssl is not on the PATH: cannot make a self-signed certificate (Node cannot create X.509 itself)' }, async () => {
  await startTlsOrigin()
  const g = await startTestGateway(simpleConfig(tlsUrl))
  try {
    const r = await get(g.url + '/secure')
    assert.equal(r.status, 502)
    assert.equal(JSON.parse(r.text).error, 'SLUICE_ERR_UPSTREAM_TLS')
    assert.ok(!g.logs.some((l) => /verification is OFF/.test(String(l.msg))), 'no warning when verification is on')
    // A WebSocket upgrade to the same origin is refused too, never tunnelled unverified.
    const ws = await request(g.url + '/ws', { headers: { connection: 'upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==' }, method: 'GET', upgrade: 'websocket' }).catch((e: Error) => e)
    assert.ok(ws instanceof Error, 'the upgrade did not succeed')
  } finally { await g.close() }
})

test('with the origin\'s certificate as caFile it is verified and works', { skip: haveOpenssl ? false : 'openssl is not on the PATH' }, async () => {
  const g = await startTestGateway(simpleConfig(tlsUrl).replace('    connectTimeoutMs: 1000\n', `    connectTimeoutMs: 1000\n    tls: { caFile: "${join(tlsDir, 'cert.pem')}" }\n`))
  try {
    const r = await get(g.url + '/secure')
    assert.equal(r.status, 200)
    assert.equal(r.text, 'tls ok')
  } finally { await g.close() }
})

test('tls.rejectUnauthorized: false works, and a warning naming the upstream is logged at load', { skip: haveOpenssl ? false : 'openssl is not on the PATH' }, async () => {
  const g = await startTestGateway(simpleConfig(tlsUrl).replace('    connectTimeoutMs: 1000\n', '    connectTimeoutMs: 1000\n    tls: { rejectUnauthorized: false }\n'))
  try {
    const warn = g.logs.find((l) => l.level === 40 && /upstreams\.origin\.tls\.rejectUnauthorized/.test(String(l.msg)))
    assert.ok(warn, `a warning at load: ${JSON.stringify(g.logs.filter((l) => l.level === 40))}`)
    const r = await get(g.url + '/secure')
    assert.equal(r.status, 200)
    assert.equal(r.text, 'tls ok')
  } finally { await g.close() }
})
