// A config file that is missing for a moment: editors and deploy tools that save by rename
// (write a temp file, unlink, rename) and ConfigMap swaps can leave the path empty between two
// steps. A change the watcher sees then is not a failed reload (the old config keeps serving,
// as nginx's would); the file's return reloads. An explicit reload still fails, naming the path.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { unlinkSync, writeFileSync } from 'node:fs'
import { request } from 'undici'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { simpleConfig, startTestGateway } from '../helpers/gateway.js'
import { until } from '../helpers/wait.js'
import { metric } from '../helpers/metrics.js'

let origin: Origin
before(async () => { origin = await startOrigin() })
after(async () => { await origin.close() })

const POLL = { tries: 400, intervalMs: 25 }
const withTimeout = (ms: number) => simpleConfig(origin.url).replace('timeoutMs: 2000', `timeoutMs: ${ms}`)
const FAILED = 'config reload failed; the previous config keeps serving'

async function degraded (adminUrl: string): Promise<string[]> {
  return ((await (await request(adminUrl + '/readyz')).body.json()) as { degraded: string[] }).degraded
}

test('a watched file removed, then put back with new content: a warning while it is missing, never a failed reload; the new content applies', async (t) => {
  const tg = await startTestGateway(withTimeout(2000), { watch: true })
  t.after(() => tg.close())
  const { gw, logs, file } = tg
  const msgs = () => logs.map((l) => String(l.msg))
  unlinkSync(file)
  await until('the watcher reacts to the removal', () => msgs().some((m) => m.startsWith('config file is missing') || m === FAILED), { ...POLL, detail: msgs })
  assert.equal(msgs().includes(FAILED), false, JSON.stringify(logs.filter((l) => l.msg === FAILED)))
  const warning = logs.find((l) => String(l.msg).startsWith('config file is missing'))!
  assert.equal(warning.level, 40) // warn
  assert.equal(warning.file, file)
  assert.deepEqual(await degraded(gw.adminUrl), [])
  assert.equal(gw.holder.current().config.upstreams.origin.timeoutMs, 2000, 'the old config keeps serving')
  writeFileSync(file, withTimeout(3000))
  await until('the reload once the file is back', () => gw.holder.current().config.upstreams.origin.timeoutMs === 3000, { ...POLL, detail: msgs })
  assert.deepEqual(await degraded(gw.adminUrl), [])
  assert.equal(await metric(gw.adminUrl, 'sluice_config_reloads_total', { result: 'failure' }), 0)
  assert.equal(msgs().includes(FAILED), false)
})

test('POST /admin/reload while the file is missing fails, naming the path and ENOENT, and /readyz says so until a reload succeeds', async (t) => {
  const tg = await startTestGateway(withTimeout(2000))
  t.after(() => tg.close())
  const { gw, file } = tg
  unlinkSync(file)
  const r = await request(gw.adminUrl + '/admin/reload', { method: 'POST' })
  const body = await r.body.json() as { ok: boolean, errors: string[] }
  assert.equal(r.statusCode, 422, JSON.stringify(body))
  assert.equal(body.ok, false)
  assert.equal(body.errors.length, 1, JSON.stringify(body))
  assert.ok(body.errors[0].startsWith(file + ': '), body.errors[0])
  assert.match(body.errors[0], /ENOENT/)
  assert.deepEqual(await degraded(gw.adminUrl), ['config'])
  assert.equal(await metric(gw.adminUrl, 'sluice_config_reloads_total', { result: 'failure' }), 1)
  assert.equal(gw.holder.current().config.upstreams.origin.timeoutMs, 2000, 'the old config keeps serving')
  writeFileSync(file, withTimeout(3000))
  const again = await request(gw.adminUrl + '/admin/reload', { method: 'POST' })
  assert.equal(again.statusCode, 200, await again.body.text())
  assert.equal(gw.holder.current().config.upstreams.origin.timeoutMs, 3000)
  assert.deepEqual(await degraded(gw.adminUrl), [])
})
