// Issue 16: the status page's charts. The server keeps a ring buffer of samples taken from the
// prom-client families (GET /admin/status/history); the page draws them with uPlot, served from
// the admin port. Checked in headless Chromium (Debian's `chromium`, driven by playwright-core)
// against a real gateway, and across `workers: 2`, where the primary merges its workers' history.
// .ci/run installs chromium; on a machine without it the browser test says so and is skipped.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { request } from 'undici'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { startTestGateway, simpleConfig, type TestGateway } from '../helpers/gateway.js'
import { startTestCluster, type TestCluster } from '../helpers/cluster.js'
import { createMetrics } from '../../src/observability/metrics.js'
import { StatusHistory, mergeHistories, type HistoryAnswer, type HistorySample } from '../../src/observability/status.js'

// Debian's chromium first; any other Chromium found on the usual paths will do.
const CANDIDATES = [process.env.CHROMIUM_PATH, '/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome'].filter((p): p is string => !!p)
const CHROMIUM = CANDIDATES.find((p) => existsSync(p)) ?? '/usr/bin/chromium'
const skip = CANDIDATES.some((p) => existsSync(p)) ? false : `no Chromium found (${CANDIDATES.join(', ')}): install Debian's chromium (apt-get install chromium; .ci/run does) to run the status page's browser test`
const TOKEN = 'chart-token'
const auth = { authorization: 'Bearer ' + TOKEN }

let origin: Origin
let gw: TestGateway
let cluster: TestCluster | undefined

async function startCluster (): Promise<TestCluster> {
  return startTestCluster((port, adminPort) => `workers: 2
listen: { host: 127.0.0.1, port: ${port} }
admin: { host: 127.0.0.1, port: ${adminPort} }
log: { level: warn, accessLog: false }
shutdownGraceMs: 2000
upstreams: { origin: { url: "${origin.url}", timeoutMs: 5000 } }
routes:
  - { name: all, match: { pathPrefix: / }, upstream: origin }
`)
}

/** A request on a connection of its own, so the cluster spreads them over its workers. */
async function oneShot (url: string): Promise<number> {
  const r = await request(url, { headers: { connection: 'close' }, reset: true })
  await r.body.dump()
  return r.statusCode
}

async function history (admin: string, headers: Record<string, string> = {}, query = ''): Promise<{ status: number; body: HistoryAnswer }> {
  const r = await request(admin + '/admin/status/history' + query, { headers })
  return { status: r.statusCode, body: await r.body.json() as HistoryAnswer }
}

/** Wait until the history holds `n` samples with requests in them (a sample every 2 s). */
async function samplesWithTraffic (admin: string, headers: Record<string, string>, n: number, what: (s: HistorySample) => boolean = (s) => s.requests > 0): Promise<HistorySample[]> {
  for (let i = 0; i < 80; i++) {
    const { body } = await history(admin, headers)
    const got = body.samples.filter(what)
    if (got.length >= n) return body.samples
    await sleep(100)
  }
  throw new Error('no samples with traffic in time')
}

before(async () => {
  origin = await startOrigin()
  origin.on('/cached/page', (_req, res) => { res.writeHead(200, { 'cache-control': 'max-age=300', 'content-type': 'text/plain' }); res.end('cached') })
  origin.on('/api/fail', (_req, res) => { res.writeHead(502, { 'content-type': 'text/plain' }); res.end('bad gateway') })
  origin.on('/api/slow', (_req, res) => { setTimeout(() => res.end('slow'), 40) })
  const [g, c] = await Promise.all([
    startTestGateway(simpleConfig(origin.url, `  - name: cached
    match: { pathPrefix: /cached/ }
    upstream: origin
    cache: { enabled: true }
  - name: api
    match: { pathPrefix: /api/ }
    upstream: origin
`).replace('admin: { host: 127.0.0.1, port: 0 }', `admin: { host: 127.0.0.1, port: 0, token: "${TOKEN}" }`).replace('accessLog: true', 'accessLog: false')),
    startCluster()
  ])
  gw = g
  cluster = c
  // Traffic over about three sampling intervals (2 s each): hits, misses, slow ones and 5xx,
  // through the single gateway and through the two workers.
  const until = Date.now() + 5000
  while (Date.now() < until) {
    await Promise.all([
      ...[...Array(4)].map(async () => { await (await request(gw.url + '/cached/page')).body.dump() }),
      (async () => { await (await request(gw.url + '/api/item')).body.dump() })(),
      (async () => { await (await request(gw.url + '/api/slow')).body.dump() })(),
      (async () => { await (await request(gw.url + '/api/fail')).body.dump() })(),
      oneShot(cluster.url + '/x'), oneShot(cluster.url + '/y')
    ])
    await sleep(30)
  }
})
after(async () => {
  await gw?.close()
  await cluster?.stop()
  await origin?.close()
})

test('StatusHistory: each tick is one sample of rates, latency percentiles, hit ratio and upstream errors since the last', async () => {
  const m = createMetrics({ processMetrics: false })
  const h = new StatusHistory(m, { intervalMs: 1000, capacity: 3 })
  await h.tick(true) // the baseline: no sample
  assert.equal(h.samples().length, 0)
  const r = m.forRoute('r')
  for (let i = 0; i < 8; i++) r.observe('GET', 200, 'hit', 0.002)
  r.observe('GET', 200, 'miss', 0.2)
  r.observe('GET', 502, 'miss', 0.3)
  m.upstreamDuration.labels('u', '5xx').observe(0.1)
  m.upstreamDuration.labels('u', 'error').observe(0.05) // an attempt that got no response
  await h.tick()
  const [s] = h.samples()
  assert.equal(s.requests, 10)
  assert.equal(s.cacheLookups, 10)
  assert.equal(s.cacheHits, 8)
  assert.equal(s.hitRatio, 0.8)
  assert.equal(s.upstreamErrors, 2, 'one 5xx response and one connection error')
  assert.ok(s.p50! > 0 && s.p50! <= 0.0025, `p50 ${s.p50}`)
  assert.ok(s.p99! >= 0.25, `p99 ${s.p99}`)
  assert.equal(s.t % 1000, 0, 'sample times are on the interval grid')
  // Nothing happened since: the next sample is empty; the ring keeps the last `capacity`.
  await h.tick()
  assert.equal(h.samples().at(-1)!.requests, 0)
  assert.equal(h.samples().at(-1)!.p50, null)
  for (let i = 0; i < 3; i++) await h.tick()
  assert.equal(h.samples().length, 3)
  const ts = h.samples().map((x) => x.t)
  assert.equal(h.answer(ts[0] - 1).samples.length, 3)
  assert.equal(h.answer(ts[2]).samples.length, 0, '?since= keeps only later samples')
})

test('mergeHistories sums rates and counts per instant, weights p50 by requests, takes the highest p99', () => {
  const s = (t: number, requests: number, p50: number | null, p99: number | null, hits: number, errors: number): HistorySample =>
    ({ t, seconds: 2, requests, rps: requests / 2, p50, p99, cacheLookups: requests, cacheHits: hits, hitRatio: requests ? hits / requests : null, upstreamErrors: errors, upstreamErrorsPerSecond: errors / 2 })
  const merged = mergeHistories([
    // Every worker has sampled t=6000 (an instant only some have is held back: status-history.test.ts).
    { intervalMs: 2000, capacity: 300, samples: [s(2000, 10, 0.01, 0.1, 10, 0), s(4000, 30, 0.01, 0.05, 0, 4), s(6000, 0, null, null, 0, 0)] },
    { intervalMs: 2000, capacity: 300, samples: [s(4000, 10, 0.05, 0.2, 10, 2), s(6000, 0, null, null, 0, 0)] }
  ])
  assert.deepEqual(merged.samples.map((x) => x.t), [2000, 4000, 6000])
  const m = merged.samples[1]
  assert.equal(m.requests, 40)
  assert.equal(m.rps, 20)
  assert.ok(Math.abs(m.p50! - 0.02) < 1e-9, `weighted p50 ${m.p50}`)
  assert.equal(m.p99, 0.2)
  assert.equal(m.hitRatio, 0.25)
  assert.equal(m.upstreamErrorsPerSecond, 3)
  assert.equal(merged.samples[2].p50, null)
})

test('GET /admin/status/history needs the admin token and returns samples after traffic; the uPlot assets are served like /dashboard', async () => {
  assert.equal((await history(gw.adminUrl)).status, 401)
  const samples = await samplesWithTraffic(gw.adminUrl, auth, 2)
  const busy = samples.filter((s) => s.requests > 0)
  assert.ok(busy.every((s) => s.rps > 0 && s.p50 !== null && s.p99! >= s.p50!), JSON.stringify(busy))
  assert.ok(busy.some((s) => s.hitRatio! > 0.5), 'the cached route mostly hits')
  assert.ok(busy.some((s) => s.upstreamErrorsPerSecond > 0), 'the 502s count as upstream errors')
  const last = samples.at(-1)!.t
  assert.equal((await history(gw.adminUrl, auth, `?since=${last}`)).body.samples.length, 0)
  // The page and its chart library need no token (a <script src> sends none); the data does.
  for (const [path, type, text] of [['/admin/assets/uplot.js', /javascript/, /uPlot/], ['/admin/assets/uplot.css', /text\/css/, /\.uplot/]] as const) {
    const r = await request(gw.adminUrl + path)
    assert.equal(r.statusCode, 200, path)
    assert.match(String(r.headers['content-type']), type)
    assert.match(await r.body.text(), text)
  }
  const page = await request(gw.adminUrl + '/dashboard')
  assert.match(String(page.headers['content-security-policy']), /script-src 'self'/)
  assert.doesNotMatch(await page.body.text(), /https?:\/\//, 'no CDN')
})

test('workers: 2: the primary merges both workers\' history', async () => {
  const c = cluster!
  const samples = await samplesWithTraffic(c.admin, {}, 2)
  const sent = samples.reduce((a, s) => a + s.requests, 0)
  assert.ok(sent > 0 && samples.every((s) => s.t % 2000 === 0), JSON.stringify(samples))
  // Each worker answered only part of the traffic; the merged history holds all of it.
  const status = await (await request(c.admin + '/admin/status')).body.json() as { perWorker: { requests: number }[] }
  assert.equal(status.perWorker.length, 2)
  const total = status.perWorker.reduce((a, w) => a + w.requests, 0)
  assert.ok(sent <= total && sent > Math.max(...status.perWorker.map((w) => w.requests)), `history ${sent}, workers ${JSON.stringify(status.perWorker)}`)
})

test('the status page draws request rate, latency, hit ratio and upstream error charts from the history', { skip, timeout: 30000 }, async () => {
  await samplesWithTraffic(gw.adminUrl, auth, 2)
  const { chromium } = await import('playwright-core')
  const profile = mkdtempSync(join(tmpdir(), 'sluice-chromium-'))
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1400, height: 820 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync']
  })
  try {
    const page = await browser.newPage()
    const failed: string[] = []
    page.on('requestfailed', (r) => failed.push(r.url()))
    page.on('pageerror', (e) => failed.push(String(e)))
    await page.goto(gw.adminUrl + '/dashboard')
    await page.waitForSelector('#login', { state: 'visible' })
    await page.fill('#token', TOKEN)
    await page.click('#login button')
    await page.waitForFunction(() => {
      const c = (window as unknown as { sluiceCharts?: Record<string, { data: (number | null)[][] }> }).sluiceCharts
      return !!c && ['rate', 'latency', 'hit', 'errors'].every((k) => c[k] && c[k].data[0].length >= 2)
    }, undefined, { timeout: 10000 })
    assert.deepEqual(failed, [])
    // One canvas per chart.
    assert.equal(await page.locator('#charts canvas').count(), 4)
    const data = await page.evaluate(() => {
      const c = (window as unknown as { sluiceCharts: Record<string, { data: (number | null)[][] }> }).sluiceCharts
      return Object.fromEntries(Object.entries(c).map(([k, u]) => [k, u.data]))
    })
    const some = (ys: (number | null)[], ok: (v: number) => boolean) => ys.some((v) => v !== null && ok(v))
    assert.ok(some(data.rate[1], (v) => v > 0), 'request rate plotted')
    assert.ok(some(data.latency[1], (v) => v > 0) && some(data.latency[2], (v) => v > 0), 'p50 and p99 plotted')
    assert.ok(some(data.hit[1], (v) => v > 50), 'hit ratio plotted')
    assert.ok(some(data.errors[1], (v) => v > 0), 'upstream errors plotted')
    // The canvas shows the series, not just axes: pixels of the request-rate line's colour.
    const linePixels = await page.$eval('#chart-rate canvas', (cv) => {
      const canvas = cv as HTMLCanvasElement
      const px = canvas.getContext('2d')!.getImageData(0, 0, canvas.width, canvas.height).data
      let n = 0
      for (let i = 0; i < px.length; i += 4) if (px[i + 3] > 200 && Math.abs(px[i] - 88) < 30 && Math.abs(px[i + 1] - 166) < 30 && px[i + 2] > 220) n++
      return n
    })
    assert.ok(linePixels > 20, `request-rate line drawn (${linePixels} pixels)`)
    // The tables are still there beside the charts.
    await page.waitForFunction(() => document.querySelectorAll('#routes tbody tr').length >= 3)
    // SLUICE_SCREENSHOT=docs/status-page.png refreshes the README's picture.
    await page.screenshot({ path: process.env.SLUICE_SCREENSHOT ?? join(tmpdir(), 'sluice-status-page.png'), fullPage: true })
  } finally {
    await browser.close()
    rmSync(profile, { recursive: true, force: true })
  }
})
