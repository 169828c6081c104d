// Upstreams as services: several targets, balancing, health checks, passive ejection, failover,
// rewrites and header edits, against three real origins on loopback.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { startTestGateway, type TestGateway } from '../helpers/gateway.js'
import { until } from '../helpers/wait.js'
import { parseConfig, ConfigError, formatIssue } from '../../src/config/load.js'
import { formatStatus } from '../../src/admin-client.js'

const closers: (() => Promise<unknown>)[] = []
after(async () => { for (const c of closers.reverse()) await c().catch(() => {}) })

/** Three origins, each answering with its own name. */
async function origins (n = 3): Promise<Origin[]> {
  const out: Origin[] = []
  for (let i = 0; i < n; i++) {
    const o = await startOrigin()
    const name = `o${i}`
    o.on('*', (_req, res) => { res.writeHead(200, { 'content-type': 'text/plain', 'x-origin': name }); res.end(name) })
    closers.push(() => o.close())
    out.push(o)
  }
  return out
}

async function gateway (yaml: string): Promise<TestGateway> {
  const g = await startTestGateway(yaml, { level: 'debug' })
  closers.push(() => g.close())
  return g
}

async function get (g: TestGateway, path: string, headers: Record<string, string> = {}): Promise<{ status: number, body: string, headers: Headers }> {
  const res = await fetch(g.url + path, { headers })
  return { status: res.status, body: await res.text(), headers: res.headers }
}

async function spread (g: TestGateway, n: number, path = '/x'): Promise<Record<string, number>> {
  const counts: Record<string, number> = {}
  for (let i = 0; i < n; i++) {
    const r = await get(g, path)
    assert.equal(r.status, 200, r.body)
    counts[r.body] = (counts[r.body] ?? 0) + 1
  }
  return counts
}

async function upstreamsStatus (g: TestGateway): Promise<Record<string, any>> { // eslint-disable-line @typescript-eslint/no-explicit-any
  return await (await fetch(g.adminUrl + '/admin/upstreams')).json() as Record<string, any> // eslint-disable-line @typescript-eslint/no-explicit-any
}

const targetsYaml = (os: Origin[], extra = '', weights?: number[]) => `upstreams:
  api:
    targets: [${os.map((o, i) => weights ? `{ url: "${o.url}", weight: ${weights[i]} }` : `"${o.url}"`).join(', ')}]
${extra}
routes:
  - name: r
    upstream: api
`

test('round-robin spreads 300 requests evenly over three targets, and weights are respected', async () => {
  const os = await origins()
  const g = await gateway(targetsYaml(os))
  const even = await spread(g, 300)
  for (const name of ['o0', 'o1', 'o2']) assert.ok(Math.abs((even[name] ?? 0) - 100) <= 20, `even spread within 20 %: ${JSON.stringify(even)}`)
  await g.close()
  const w = await gateway(targetsYaml(os, '', [1, 1, 2]))
  const weighted = await spread(w, 300)
  assert.ok(Math.abs(weighted.o2 - 150) <= 15, `weight 2 gets half: ${JSON.stringify(weighted)}`)
  assert.ok(Math.abs(weighted.o0 - 75) <= 15 && Math.abs(weighted.o1 - 75) <= 15, JSON.stringify(weighted))
  // The per-target counter and the admin view agree with what the origins saw.
  const m = await (await fetch(w.adminUrl + '/metrics')).text()
  const line = m.split('\n').find((l) => l.startsWith('sluice_upstream_target_requests_total') && l.includes(`target="127.0.0.1:${os[2].port}"`) && l.includes('class="2xx"'))
  assert.ok(line?.endsWith(' ' + weighted.o2), line)
  const st = await upstreamsStatus(w)
  assert.equal(st.api.targets.length, 3)
  assert.equal(st.api.targets[2].weight, 2)
  assert.equal(st.api.balance, 'round-robin')
})

test('least-request sends fewer requests to a target that is slow to answer', async () => {
  const os = await origins()
  os[0].on('*', async (_req, res) => { await new Promise((resolve) => setTimeout(resolve, 300)); res.end('o0') })
  const g = await gateway(targetsYaml(os, '    balance: least-request'))
  const counts: Record<string, number> = {}
  // 12 clients in parallel, 10 requests each: the slow target holds its requests longer.
  await Promise.all(Array.from({ length: 12 }, async () => {
    for (let i = 0; i < 10; i++) {
      const r = await get(g, '/x')
      counts[r.body] = (counts[r.body] ?? 0) + 1
    }
  }))
  assert.equal((counts.o0 ?? 0) + (counts.o1 ?? 0) + (counts.o2 ?? 0), 120)
  assert.ok((counts.o0 ?? 0) < Math.min(counts.o1, counts.o2), `slow target gets the fewest: ${JSON.stringify(counts)}`)
})

test('a target killed mid-traffic costs no failed GET, is marked unhealthy by its checks, and returns after healthyThreshold passes', async () => {
  const os = await origins()
  const g = await gateway(targetsYaml(os, `    healthCheck: { path: /health, intervalMs: 200, timeoutMs: 150, healthyThreshold: 2, unhealthyThreshold: 2 }
    retry: { attempts: 0 }`))
  const victim = os[1]
  const port = victim.port
  let failures = 0
  let total = 0
  let stop = false
  const traffic = Promise.all(Array.from({ length: 4 }, async () => {
    while (!stop) {
      const r = await get(g, '/x').catch((e) => ({ status: 0, body: String(e) }))
      total++
      if (r.status !== 200) failures++
    }
  }))
  await new Promise((resolve) => setTimeout(resolve, 150))
  await victim.kill()
  await until('the killed target is marked unhealthy', async () => {
    const st = await upstreamsStatus(g)
    return st.api.targets[1].healthy === false
  }, { tries: 100, intervalMs: 50 })
  const log = g.logs.find((l) => l.msg === 'upstream target unhealthy: out of rotation')
  assert.equal(log?.target, `127.0.0.1:${port}`)
  const metrics = await (await fetch(g.adminUrl + '/metrics')).text()
  assert.match(metrics, new RegExp(`sluice_upstream_target_healthy\\{upstream="api",target="127\\.0\\.0\\.1:${port}"\\} 0`))
  await new Promise((resolve) => setTimeout(resolve, 200))
  // Bring it back on the same port: two passing checks put it back in rotation.
  const back = await startOrigin({ port })
  back.on('*', (_req, res) => { res.end('o1') })
  closers.push(() => back.close())
  await until('the target returns to rotation', async () => (await upstreamsStatus(g)).api.targets[1].healthy === true, { tries: 100, intervalMs: 50 })
  const seenBefore = back.seen.filter((r) => r.url === '/x').length
  await until('traffic reaches the returned target', () => back.seen.filter((r) => r.url === '/x').length > seenBefore, { tries: 100, intervalMs: 20 })
  stop = true
  await traffic
  assert.ok(total > 50, `traffic ran (${total} requests)`)
  assert.equal(failures, 0, `no GET failed while a target died (${total} requests)`)
  assert.ok(g.logs.some((l) => l.msg === 'upstream target healthy: back in rotation'))
})

test('consistent hashing keeps a key on one target and moves only the removed target\'s keys', async () => {
  const os = await origins()
  const g = await startTestGateway(targetsYaml(os, '    balance: hash\n    hashKey: header:x-user-id'))
  closers.push(() => g.close())
  const owner = new Map<string, string>()
  for (let i = 0; i < 300; i++) {
    const r = await get(g, '/x', { 'x-user-id': `user-${i}` })
    owner.set(`user-${i}`, r.body)
  }
  const again = await get(g, '/x', { 'x-user-id': 'user-7' })
  assert.equal(again.body, owner.get('user-7'), 'the same key goes to the same target')
  const per = [...owner.values()].reduce<Record<string, number>>((a, v) => { a[v] = (a[v] ?? 0) + 1; return a }, {})
  for (const n of ['o0', 'o1', 'o2']) assert.ok(per[n] > 60, `keys spread over the targets: ${JSON.stringify(per)}`)
  // Remove o2: its keys move, nobody else's does.
  g.write(targetsYaml(os.slice(0, 2), '    balance: hash\n    hashKey: header:x-user-id'))
  const r = await g.gw.reloader.reload('test')
  assert.equal(r.ok, true)
  assert.ok(r.diff?.some((d: string) => d.includes(`- target 127.0.0.1:${os[2].port}`)), JSON.stringify(r.diff))
  let moved = 0
  for (let i = 0; i < 300; i++) {
    const before = owner.get(`user-${i}`)
    const now = (await get(g, '/x', { 'x-user-id': `user-${i}` })).body
    if (before !== now) {
      moved++
      assert.equal(before, 'o2', `user-${i} moved from ${before} to ${now}, but only o2's keys should move`)
    }
  }
  assert.equal(moved, per.o2, 'exactly the removed target\'s keys moved (about 1/N)')
})

test('passive ejection takes a failing target out, but maxEjectedPercent keeps the rest in rotation (panic mode)', async () => {
  const os = await origins(2)
  for (const [i, o] of os.entries()) o.on('*', (_req, res) => { res.writeHead(500); res.end(`o${i} failing`) })
  const g = await gateway(targetsYaml(os, `    outlierDetection: { consecutiveErrors: 3, ejectMs: 60000, maxEjectedPercent: 50 }
    circuitBreaker: { enabled: false }`))
  for (let i = 0; i < 20; i++) assert.equal((await get(g, '/x')).status, 500)
  const st = await upstreamsStatus(g)
  const ejected = st.api.targets.filter((t: { ejected: boolean }) => t.ejected)
  assert.equal(ejected.length, 1, 'one of two is ejected; the other stays although it fails too')
  const kept = st.api.targets.find((t: { ejected: boolean }) => !t.ejected)
  const keptOrigin = os.find((o) => kept.target === `127.0.0.1:${o.port}`)!
  const before = keptOrigin.seen.length
  for (let i = 0; i < 5; i++) await get(g, '/x')
  assert.equal(keptOrigin.seen.length, before + 5, 'every request goes to the target in rotation')
  assert.ok(g.logs.some((l) => l.msg === 'upstream target ejected after consecutive failures'))
  // `sluice status` shows one line per target with its state.
  const text = formatStatus(await (await fetch(g.adminUrl + '/admin/status')).json() as Record<string, unknown>)
  assert.match(text, new RegExp(`${ejected[0].target.replace(/\./g, '\\.')}\\s+EJECTED`))
  assert.match(text, /2 targets, round-robin/)
  const metrics = await (await fetch(g.adminUrl + '/metrics')).text()
  assert.match(metrics, new RegExp(`sluice_upstream_target_healthy\\{upstream="api",target="${ejected[0].target.replace(/\./g, '\\.')}"\\} 0`))
})

test('when every target is down: 503 SLUICE_ERR_NO_HEALTHY_TARGET, or stale where the cache allows', async () => {
  const os = await origins(2)
  for (const o of os) o.on('/cached', (_req, res) => { res.writeHead(200, { 'cache-control': 'max-age=1, stale-if-error=600' }); res.end('cached body') })
  const g = await startTestGateway(targetsYaml(os, '    healthCheck: { path: /health, intervalMs: 150, timeoutMs: 100, unhealthyThreshold: 1 }') + '    cache: { enabled: true }\n', { level: 'info' })
  closers.push(() => g.close())
  assert.equal((await get(g, '/cached')).status, 200)
  for (const o of os) await o.kill()
  await until('both targets are unhealthy', async () => (await upstreamsStatus(g)).api.targets.every((t: { healthy: boolean }) => !t.healthy), { tries: 100, intervalMs: 50 })
  const r = await get(g, '/other')
  assert.equal(r.status, 503)
  assert.equal(JSON.parse(r.body).error, 'SLUICE_ERR_NO_HEALTHY_TARGET')
  await new Promise((resolve) => setTimeout(resolve, 1100)) // the stored response goes stale
  const stale = await get(g, '/cached')
  assert.equal(stale.status, 200)
  assert.equal(stale.body, 'cached body')
  assert.match(stale.headers.get('cache-status') ?? '', /hit|stale/)
})

test('a POST whose target refuses the connection goes to another target; a single dead target answers 502', async () => {
  const os = await origins(2)
  await os[0].kill()
  const g = await gateway(targetsYaml(os, '    outlierDetection: { consecutiveErrors: 100 }'))
  for (let i = 0; i < 6; i++) {
    const res = await fetch(g.url + '/submit', { method: 'POST', body: 'payload' })
    assert.equal(res.status, 200)
    assert.equal(await res.text(), 'o1')
  }
  const one = await gateway(`upstreams:\n  api: { url: "${os[0].url}" }\nroutes:\n  - { name: r, upstream: api }\n`)
  const r = await get(one, '/x')
  assert.equal(r.status, 502)
  assert.equal(JSON.parse(r.body).error, 'SLUICE_ERR_UPSTREAM_CONNECT')
})

test('rewrite strips by whole segments and adds a prefix; header edits apply both ways; the cache key stays the client URL', async () => {
  const [o] = await origins(1)
  o.on('*', (req, res) => { res.writeHead(200, { 'cache-control': 'max-age=60', server: 'origin/1.0', 'x-path': req.url ?? '' }); res.end(req.url) })
  const g = await gateway(`upstreams:
  api: { targets: ["${o.url}"] }
routes:
  - name: svc
    match: { pathPrefix: /svc }
    upstream: api
    rewrite: { stripPrefix: /svc, addPrefix: /v2 }
    cache: { enabled: true }
    headers:
      request: { set: { X-Env: prod }, remove: [X-Debug] }
      response: { set: { Strict-Transport-Security: "max-age=31536000" }, remove: [Server] }
`)
  const cases: [string, string][] = [['/svc/a?q=1', '/v2/a?q=1'], ['/svc', '/v2/'], ['/svc?x=1', '/v2/?x=1'], ['/svcx', '/v2/svcx']]
  for (const [from, to] of cases) {
    const r = await get(g, from, { 'x-debug': '1' })
    assert.equal(r.status, 200)
    assert.equal(r.body, to, `${from} → ${to}`)
  }
  const seen = o.seen.find((s) => s.url === '/v2/a?q=1')!
  assert.equal(seen.headers['x-env'], 'prod')
  assert.equal(seen.headers['x-debug'], undefined)
  const hit = await get(g, '/svc/a?q=1')
  assert.match(hit.headers.get('cache-status') ?? '', /hit/)
  assert.equal(hit.headers.get('strict-transport-security'), 'max-age=31536000')
  assert.equal(hit.headers.get('server'), null)
  assert.equal(o.count('/v2/a?q=1'), 1, 'the hit was served from the cache under the client-facing URL')
  const purge = await fetch(g.adminUrl + '/admin/purge', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prefix: '/svc/' }) })
  assert.equal(purge.status, 200, await purge.text())
  await get(g, '/svc/a?q=1')
  assert.equal(o.count('/v2/a?q=1'), 2, 'purged by the client-facing prefix')
})

function issues (yaml: string): string[] {
  try {
    parseConfig(yaml, 'test.yaml', {})
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err))
    return err.issues.map(formatIssue)
  }
  return []
}

test('validate refuses bad targets, hash keys, rewrites and header edits, naming the key path', () => {
  const up = (body: string) => `upstreams:\n  api:\n${body}\nroutes:\n  - name: r\n    upstream: api\n`
  const route = (body: string) => `upstreams:\n  api: { url: "http://127.0.0.1:1" }\nroutes:\n  - name: r\n    upstream: api\n${body}\n`
  const cases: [string, RegExp][] = [
    [up('    targets: ["http://[bad"]'), /upstreams\.api\.targets\[0\].*not a valid URL/],
    [up('    targets: [{ url: "http://127.0.0.1:1", weight: 0 }]'), /upstreams\.api\.targets\[0\]/],
    [up('    targets: ["http://127.0.0.1:1", "http://127.0.0.1:1/"]'), /upstreams\.api\.targets\[1\].*duplicate target/],
    [up('    targets: ["http://127.0.0.1:1"]\n    balance: hash\n    hashKey: cookie:sid'), /upstreams\.api\.hashKey/],
    [up('    url: "http://127.0.0.1:1"\n    targets: ["http://127.0.0.1:2"]'), /upstreams\.api.*not both/],
    [up('    balance: round-robin'), /upstreams\.api.*needs url/],
    [up('    targets: ["ftp://127.0.0.1:1"]'), /upstreams\.api\.targets\[0\].*scheme/],
    [up('    targets: ["http://127.0.0.1:1"]\n    healthCheck: { path: health }'), /upstreams\.api\.healthCheck\.path/],
    [route('    rewrite: { stripPrefix: svc }'), /routes\[0\]\.rewrite\.stripPrefix/],
    [route('    headers: { request: { set: { "Bad Name": x } } }'), /routes\[0\]\.headers\.request\.set/],
    [route('    headers: { request: { set: { X-A: "a\\r\\nInjected: 1" } } }'), /routes\[0\]\.headers\.request\.set\.X-A.*CR, LF/],
    [route('    headers: { response: { set: { X-B: "a\\u0001b" } } }'), /routes\[0\]\.headers\.response\.set\.X-B.*control characters/],
    [route('    headers: { response: { set: { X-B: "snow \\u2603" } } }'), /routes\[0\]\.headers\.response\.set\.X-B.*Latin-1/],
    [route('    headers: { request: { set: { Host: evil } } }'), /routes\[0\]\.headers\.request\.set\.Host.*preserveHost/],
    [route('    headers: { request: { remove: [X-Forwarded-For] } }'), /routes\[0\]\.headers\.request\.remove\[0\]/],
    [route('    headers: { response: { remove: [Transfer-Encoding] } }'), /routes\[0\]\.headers\.response\.remove\[0\]/]
  ]
  for (const [yaml, re] of cases) {
    const found = issues(yaml)
    assert.ok(found.some((i) => re.test(i)), `${re} in ${JSON.stringify(found)}\n${yaml}`)
  }
  const tooMany = up(`    targets: [${Array.from({ length: 65 }, (_, i) => `"http://127.0.0.1:${1000 + i}"`).join(', ')}]`)
  assert.ok(issues(tooMany).some((i) => /upstreams\.api\.targets/.test(i)), 'at most 64 targets')
  assert.deepEqual(issues(up('    targets: ["http://127.0.0.1:1", { url: "http://127.0.0.1:2", weight: 2 }]\n    balance: least-request')), [])
})
