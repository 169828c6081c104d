// Reloads are all-or-nothing: everything a new config needs (CA files read, new upstream pools
// built) is prepared before the swap, so a reload that fails half-way changes nothing live.
// An unreadable tls.caFile is a config error with its line and key path, at load and reload.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { request } from 'undici'
import pino from 'pino'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { startTestGateway, tempConfig } from '../helpers/gateway.js'
import { cliCommand } from '../helpers/cli.js'
import { loadConfigFile, ConfigError } from '../../src/config/load.js'
import { compile } from '../../src/config/compile.js'
import { TargetRegistry } from '../../src/upstream/targets.js'
import { createMetrics } from '../../src/observability/metrics.js'
import { haveOpenssl, makePrivateCa, startTlsOrigin, type PrivateCa, type TlsOrigin } from './private-ca.js'

const skip = haveOpenssl ? false : 'openssl is not on the PATH: cannot make a private CA'
let origin: Origin
let ca: PrivateCa
let secure: TlsOrigin
before(async () => {
  origin = await startOrigin()
  if (!haveOpenssl) return
  ca = makePrivateCa()
  secure = await startTlsOrigin(ca, (req, res) => { res.end(`secure ${req.url}`) })
})
after(async () => {
  await origin.close()
  if (haveOpenssl) { await secure.close(); ca.remove() }
})

async function get (url: string): Promise<{ status: number; body: string }> {
  const r = await request(url)
  return { status: r.statusCode, body: await r.body.text() }
}

/** Two upstreams: `origin` (plain) and `secure` (https, private CA); optionally a third, added before them. */
function config (caFile: string, opts: { connections?: number; added?: boolean } = {}): string {
  return `listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0 }
log: { level: info, accessLog: false }
upstreams:
${opts.added ? `  added:\n    url: ${origin.url}\n` : ''}  origin:
    url: ${origin.url}
    connections: ${opts.connections ?? 8}
  secure:
    url: ${secure.url}
    tls:
      caFile: "${caFile}"
routes:
  - { name: all, match: { pathPrefix: / }, upstream: origin }
  - { name: secure, match: { pathPrefix: /secure/ }, upstream: secure }
${opts.added ? '  - { name: added, match: { pathPrefix: /added/ }, upstream: added }\n' : ''}`
}

test('a reload whose caFile is missing fails with its key path and line; every upstream keeps working on the old settings', { skip }, async (t) => {
  const gw = await startTestGateway(config(ca.caFile))
  t.after(() => gw.close())
  assert.equal((await get(gw.url + '/plain')).body, 'origin GET /plain')
  assert.deepEqual(await get(gw.url + '/secure/a'), { status: 200, body: 'secure /secure/a' })
  const before = gw.gw.holder.current()

  // Changed and added upstreams listed before the broken one: none of them may change.
  const missing = join(ca.dir, 'does-not-exist.pem')
  gw.write(config(missing, { connections: 4, added: true }))
  const r = await request(gw.adminUrl + '/admin/reload', { method: 'POST' })
  const body = await r.body.json() as { ok: boolean; errors: string[]; version: string }
  assert.equal(r.statusCode, 422)
  assert.equal(body.ok, false)
  assert.equal(body.version, before.version)
  assert.equal(body.errors.length, 1, JSON.stringify(body.errors))
  assert.match(body.errors[0], /sluice\.yaml:1[0-9]:\d+ upstreams\.secure\.tls\.caFile: cannot read the CA file: ENOENT/)

  assert.equal(gw.gw.holder.current(), before, 'the old snapshot keeps serving')
  for (let i = 0; i < 5; i++) {
    assert.equal((await get(gw.url + '/plain')).body, 'origin GET /plain', 'the unchanged upstream works')
    assert.deepEqual(await get(gw.url + '/secure/b'), { status: 200, body: 'secure /secure/b' }, 'the upstream whose tls changed works with the old CA')
  }
  assert.equal((await get(gw.url + '/added/x')).body, 'origin GET /added/x', 'the route that was not added: /added/ still goes to "all"')
  const ups = await (await request(gw.adminUrl + '/admin/upstreams')).body.json() as Record<string, unknown>
  assert.deepEqual(Object.keys(ups).sort(), ['origin', 'secure'])

  // The same file fixed: the reload goes through, with the changed and added upstreams.
  gw.write(config(ca.caFile, { connections: 4, added: true }))
  const ok = await request(gw.adminUrl + '/admin/reload', { method: 'POST' })
  const okBody = await ok.body.json() as { ok: boolean; diff: string[] }
  assert.equal(ok.statusCode, 200)
  assert.deepEqual(okBody.diff.sort(), ['+ route added', '+ upstream added', '~ upstream origin'])
  assert.equal((await get(gw.url + '/added/x')).body, 'origin GET /added/x')
  assert.deepEqual(await get(gw.url + '/secure/c'), { status: 200, body: 'secure /secure/c' })
})

test('loadConfigFile and `sluice validate` report an unreadable or non-PEM caFile with its key path and line', { skip }, () => {
  const { file } = tempConfig(config(join(ca.dir, 'nope.pem')))
  let err: unknown
  try { loadConfigFile(file) } catch (e) { err = e }
  assert.ok(err instanceof ConfigError)
  assert.equal(err.issues.length, 1)
  assert.equal(err.issues[0].path, 'upstreams.secure.tls.caFile')
  assert.equal(err.issues[0].line, 11)
  assert.match(err.issues[0].message, /cannot read the CA file/)

  const [cmd, args] = cliCommand(['validate', '--config', file])
  const v = spawnSync(cmd, args, { encoding: 'utf8' })
  assert.equal(v.status, 1)
  assert.match(v.stdout + v.stderr, /sluice\.yaml:11:\d+ upstreams\.secure\.tls\.caFile: cannot read the CA file/)

  const notPem = join(ca.dir, 'not-a-cert.pem')
  writeFileSync(notPem, 'hello\n')
  const { file: f2 } = tempConfig(config(notPem))
  assert.throws(() => loadConfigFile(f2), (e: unknown) => e instanceof ConfigError && e.issues[0].path === 'upstreams.secure.tls.caFile' && /no PEM certificate/.test(e.issues[0].message))

  // A readable one: its bytes are on the compiled upstream, the one TLS options object pools and tunnels use.
  const { file: f3 } = tempConfig(config(ca.caFile))
  const loaded = loadConfigFile(f3)
  const snap = compile(loaded.config, loaded.raw, f3, loaded.ca)
  assert.ok(snap.upstreams.secure.tls.ca?.includes('-----BEGIN CERTIFICATE-----'))
  assert.equal(snap.upstreams.secure.tls.rejectUnauthorized, true)
  assert.equal(snap.upstreams.origin.tls.ca, undefined)
})

test('TargetRegistry.prepare builds without installing: abort leaves the live pools, commit swaps changed ones only; get() answers a missing upstream with a SluiceError', async () => {
  const reg = new TargetRegistry(pino({ level: 'silent' }), createMetrics({ processMetrics: false }))
  const pools = { reconcile: reg.reconcile.bind(reg), prepare: reg.prepare.bind(reg), close: reg.close.bind(reg), get: (n: string) => reg.get(n).targets[0].pool }
  const snap = (connections: number) => {
    const { file } = tempConfig(`upstreams:\n  a: { url: "${origin.url}", connections: ${connections} }\n  b: { url: "${origin.url}" }\nroutes: [{ name: r, upstream: a }]\n`)
    const l = loadConfigFile(file)
    return compile(l.config, l.raw, file, l.ca)
  }
  const first = snap(2)
  pools.reconcile(first.upstreams)
  const a = pools.get('a'); const b = pools.get('b')
  const plan = pools.prepare(snap(3).upstreams)
  assert.equal(pools.get('a'), a, 'nothing installed before commit')
  plan.abort()
  assert.equal(pools.get('a'), a, 'abort leaves the live pool')
  assert.equal(a.closed, false)
  const plan2 = pools.prepare(snap(3).upstreams)
  plan2.commit()
  assert.notEqual(pools.get('a'), a, 'the changed upstream has a new pool')
  assert.equal(pools.get('b'), b, 'the unchanged one keeps its pool')
  assert.equal(a.closed, true, 'the old pool is closing')
  assert.throws(() => reg.get('gone'), { code: 'SLUICE_ERR_NO_HEALTHY_TARGET' }, 'an upstream a reload removed: 503, not a plain Error')
  await pools.close()
  assert.throws(() => reg.get('a'), { code: 'SLUICE_ERR_SHUTTING_DOWN' }, 'after the pools closed (the end of a drain)')
})
