// Config loading and hot reload as an operator meets them: error messages that point at the
// mistake, a snapshot nothing can change, and file watching through symlinks and mid-save files.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import pino from 'pino'
import { request } from 'undici'
import { parseConfig } from '../../src/config/load.js'
import { BASE_CONFIG, configIssues } from '../helpers/config-issues.js'
import { compile } from '../../src/config/compile.js'
import { startGateway, type Gateway } from '../../src/main.js'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { simpleConfig, startTestGateway } from '../helpers/gateway.js'
import { until } from '../helpers/wait.js'
import { metric } from '../helpers/metrics.js'

const base = BASE_CONFIG
const issues = configIssues

test('an unknown key points at the key itself and suggests the close key name', () => {
  assert.deepEqual(issues(base + '    timeoutMS: 5\n'), ['test.yaml:8:5 routes[0].timeoutMS: unknown key (did you mean timeoutMs?)'])
  assert.deepEqual(issues(base + '    cache: { enabeld: true }\n'), ['test.yaml:8:14 routes[0].cache.enabeld: unknown key (did you mean enabled?)'])
  assert.deepEqual(issues(base.replace('upstreams:', 'listne: { port: 1 }\nupstreams:')), ['test.yaml:1:1 listne: unknown key (did you mean listen?)'])
  // Nothing close: no guess.
  assert.deepEqual(issues(base + '    frobnicate: 1\n'), ['test.yaml:8:5 routes[0].frobnicate: unknown key'])
})

test('a value of the wrong type that came from ${VAR} names the reference; a boolean shows what it got', () => {
  assert.deepEqual(issues(base + '    timeoutMs: ${TMO}\n', { TMO: 'abc' }), ['test.yaml:8:16 routes[0].timeoutMs: expected integer >= 1, got "abc" (from ${TMO})'])
  assert.deepEqual(issues(base + '    websocket: ${WS:-yes}\n'), ['test.yaml:8:16 routes[0].websocket: expected boolean, got "yes" (from ${WS:-yes})'])
  assert.deepEqual(issues(base + '    websocket: yes\n'), ['test.yaml:8:16 routes[0].websocket: expected boolean, got "yes"'])
})

test('a list, string or mapping out of its bounds says which bound, not "expected a list, got a list"', () => {
  assert.deepEqual(issues('upstreams: { api: { url: "http://127.0.0.1:3000" } }\nroutes: []\n'), ['test.yaml:2:1 routes: expected at least 1 item, got 0'])
  assert.deepEqual(issues(base.replace('url: http://127.0.0.1:3000', 'targets: []')), ['test.yaml:3:5 upstreams.api.targets: expected at least 1 item, got 0'])
  assert.deepEqual(issues(base.replace('pathPrefix: /api/ }', 'pathPrefix: /api/, methods: [GET, POST, GET] }')), ['test.yaml:6:33 routes[0].match.methods: expected unique items: [2] repeats [0]'])
  assert.deepEqual(issues('redis: { cluster: { nodes: [""] } }\n' + base), ['test.yaml:1:29 redis.cluster.nodes[0]: expected a non-empty string'])
})

test('nothing in a compiled snapshot can be changed: the routes list, the upstream map, a route\'s methods, the trusted proxies, the router', () => {
  const yaml = base.replace('pathPrefix: /api/ }', 'pathPrefix: /api/, methods: [GET] }') + 'listen: { trustedProxies: [10.0.0.0/8] }\n'
  const l = parseConfig(yaml, 'test.yaml', {})
  const s = compile(l.config, l.raw, 'test.yaml', l.ca, l.listenTls ?? null)
  const mutable = (s as unknown) as { routes: unknown[], upstreams: Record<string, unknown>, router: Record<string, unknown>, trust: { addAddress (a: string): void } }
  assert.throws(() => mutable.routes.push(mutable.routes[0]))
  assert.throws(() => { mutable.upstreams.other = mutable.upstreams.api })
  assert.throws(() => { (s.routes[0].methods as Set<string>).add('DELETE') })
  assert.throws(() => { (s.routes[0].methods as Set<string>).clear() })
  assert.throws(() => mutable.trust.addAddress('192.0.2.1'))
  assert.throws(() => { mutable.router.match = () => null })
  assert.equal(s.routes.length, 1)
  assert.deepEqual(Object.keys(s.upstreams), ['api'])
  assert.deepEqual([...s.routes[0].methods!], ['GET'])
  assert.equal(s.routes[0].methods!.has('GET'), true)
  assert.equal(s.trust!.check('10.1.2.3', 'ipv4'), true)
  assert.equal(s.trust!.check('192.0.2.1', 'ipv4'), false)
  assert.equal(s.router.match('x', 'GET', '/api/1')?.name, 'a')
})

let origin: Origin
before(async () => { origin = await startOrigin() })
after(async () => { await origin.close() })

const POLL = { tries: 400, intervalMs: 25 }

async function watching (file: string): Promise<{ gw: Gateway, logs: Record<string, unknown>[] }> {
  const logs: Record<string, unknown>[] = []
  const sink = new Writable({ write (c, _e, cb) { for (const l of String(c).split('\n')) if (l) logs.push(JSON.parse(l)); cb() } })
  const gw = await startGateway({ configFile: file, log: pino({ level: 'info' }, sink), watch: true, proxyPort: 0, adminPort: 0 })
  return { gw, logs }
}

function tempDir (t: { after (fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-review-reload-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

const withTimeout = (ms: number) => simpleConfig(origin.url).replace('timeoutMs: 2000', `timeoutMs: ${ms}`)

test('a config file that is a symlink into another directory reloads when its target is edited there', async (t) => {
  const dir = tempDir(t)
  mkdirSync(join(dir, 'real'))
  mkdirSync(join(dir, 'etc'))
  writeFileSync(join(dir, 'real/sluice.yaml'), withTimeout(2000))
  symlinkSync(join(dir, 'real/sluice.yaml'), join(dir, 'etc/sluice.yaml'))
  const { gw, logs } = await watching(join(dir, 'etc/sluice.yaml'))
  t.after(() => gw.close(100))
  writeFileSync(join(dir, 'real/sluice.yaml'), withTimeout(3000))
  await until('a reload after an edit of the symlink\'s target', () => gw.holder.current().config.upstreams.origin.timeoutMs === 3000, { ...POLL, detail: () => logs.map((l) => l.msg) })
})

test('a config file under a symlinked directory reloads when the directory symlink is swapped (a release symlink)', async (t) => {
  const dir = tempDir(t)
  mkdirSync(join(dir, 'r1'))
  mkdirSync(join(dir, 'r2'))
  writeFileSync(join(dir, 'r1/sluice.yaml'), withTimeout(2000))
  writeFileSync(join(dir, 'r2/sluice.yaml'), withTimeout(3000))
  symlinkSync('r1', join(dir, 'current'))
  const { gw } = await watching(join(dir, 'current/sluice.yaml'))
  t.after(() => gw.close(100))
  symlinkSync('r2', join(dir, 'current.tmp'))
  renameSync(join(dir, 'current.tmp'), join(dir, 'current'))
  await until('a reload after the directory symlink swap', () => gw.holder.current().config.upstreams.origin.timeoutMs === 3000, POLL)
  // and it keeps following: an edit in the new release
  writeFileSync(join(dir, 'r2/sluice.yaml'), withTimeout(4000))
  await until('a reload after an edit in the new directory', () => gw.holder.current().config.upstreams.origin.timeoutMs === 4000, POLL)
})

test('a config saved while the gateway starts (after its first read, before it watches) is reloaded, not taken for what was read', async (t) => {
  const dir = tempDir(t)
  const file = join(dir, 'sluice.yaml')
  writeFileSync(file, withTimeout(2000))
  const logs: Record<string, unknown>[] = []
  const sink = new Writable({ write (c, _e, cb) { for (const l of String(c).split('\n')) if (l) logs.push(JSON.parse(l)); cb() } })
  // startGateway reads the file before its first await; watching starts once the listeners
  // are up. The save lands in between.
  const starting = startGateway({ configFile: file, log: pino({ level: 'info' }, sink), watch: true, proxyPort: 0, adminPort: 0 })
  // A different size: the two writes may share one modification time (the kernel's file
  // times move in clock ticks), and the poll must not depend on that here.
  writeFileSync(file, withTimeout(30000))
  const gw = await starting
  t.after(() => gw.close(100))
  assert.equal(gw.holder.current().config.upstreams.origin.timeoutMs, 2000, 'the gateway started with what it read')
  await until('a reload of the file saved during the start', () => gw.holder.current().config.upstreams.origin.timeoutMs === 30000, { ...POLL, detail: () => logs.map((l) => l.msg) })
})

test('a file truncated and then written (a save in two writes): the empty file in between is not a failed reload; the write reloads', async (t) => {
  const dir = tempDir(t)
  const file = join(dir, 'sluice.yaml')
  writeFileSync(file, withTimeout(2000))
  const { gw, logs } = await watching(file)
  t.after(() => gw.close(100))
  truncateSync(file)
  await until('the empty file is noticed', () => logs.some((l) => typeof l.msg === 'string' && l.msg.startsWith('config file is empty')), POLL)
  assert.equal(await metric(gw.adminUrl, 'sluice_config_reloads_total', { result: 'failure' }), 0)
  const ready = await (await request(gw.adminUrl + '/readyz')).body.json() as { degraded: string[] }
  assert.deepEqual(ready.degraded, [])
  assert.equal(logs.some((l) => l.msg === 'config reload failed; the previous config keeps serving'), false)
  writeFileSync(file, withTimeout(3000))
  await until('the reload after the write', () => gw.holder.current().config.upstreams.origin.timeoutMs === 3000, POLL)
})

test('POST /admin/reload of a changed listen port or admin port answers ok, and its warnings say the change waits for the restart (as the log does)', async (t) => {
  const tg = await startTestGateway(simpleConfig(origin.url))
  t.after(() => tg.close())
  const { gw, logs } = tg
  const port = (gw.proxy.server.address() as { port: number }).port
  tg.write(simpleConfig(origin.url).replace('listen: { host: 127.0.0.1, port: 0 }', 'listen: { host: 127.0.0.1, port: 1 }').replace('admin: { host: 127.0.0.1, port: 0 }', 'admin: { host: 127.0.0.1, port: 2 }'))
  const r = await request(gw.adminUrl + '/admin/reload', { method: 'POST' })
  const body = await r.body.json() as { ok: boolean, diff: string[], warnings: string[] }
  assert.equal(r.statusCode, 200)
  assert.deepEqual(body.diff.sort(), ['~ admin', '~ listen'])
  assert.deepEqual(body.warnings, [
    'a change to "listen" (other than the certificate files and tls.minVersion) takes effect at the next restart',
    'a change to "admin" takes effect at the next restart'
  ])
  assert.deepEqual(logs.filter((l) => typeof l.msg === 'string' && l.msg.endsWith('takes effect at the next restart')).map((l) => l.key), ['listen', 'admin'])
  // Still serving on the port it started with.
  assert.equal((gw.proxy.server.address() as { port: number }).port, port)
  assert.equal((await request(tg.url + '/x')).statusCode, 200)
})
