#!/usr/bin/env node
// The dashboard and the alerts, proven on a real Prometheus server (issue 6):
//   1. needs `prometheus` and `promtool` on the PATH (Debian: `apt-get install -y prometheus`).
//      Without them it prints how to install them and exits 0 with a SKIPPED line, unless
//      --require is given (then it exits 1); --install runs that apt-get install itself;
//   2. runs `promtool check rules` on deploy/prometheus/alerts.yml (and `check config`);
//   3. starts the example origin, a redis-server, and Sluice (dist/src/cli.js, built first
//      with `npm run build`) on loopback ports, with a generated config that turns on every
//      feature the dashboard shows: cache, compression, client and upstream rate limits, a
//      breaker on a dead upstream (with retries), Redis (stopped part-way: Redis errors), and
//      one successful and one failed config reload;
//   4. starts prometheus on loopback scraping Sluice every second, with the alert rules loaded;
//   5. drives a short bounded load, then evaluates every dashboard query (panels, template
//      variables, annotations) and every alert expression through /api/v1/query at the end of
//      the load. A query that returns no series, or only NaN, fails the check: no dead panels. Alert
//      expressions are evaluated without their threshold (each operand of a top-level
//      comparison or and/or/unless), since a healthy threshold returns nothing by design;
//      Issue 16's families are also checked for real data (ISSUE16_QUERIES);
//   6. checks that Prometheus evaluated every rule without an error (/api/v1/rules).
// Every process it starts is stopped at the end. Exit 0 when all checks pass, 1 otherwise.
//
//   npm run build && node scripts/prometheus-check.mjs     (a 20 s load by default)
//   node scripts/prometheus-check.mjs --require             (fail, not skip, without prometheus)
//   node scripts/prometheus-check.mjs --install --require   (CI: apt-get install it when missing)
//   PROM_CHECK_LOAD_SECONDS=30 PROM_CHECK_KEEP=1 node scripts/prometheus-check.mjs
import { spawn, spawnSync, execFileSync } from 'node:child_process'
import { createServer } from 'node:net'
import { mkdtempSync, writeFileSync, readFileSync, existsSync, rmSync, openSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import YAML from 'yaml'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const LOAD_SECONDS = Number(process.env.PROM_CHECK_LOAD_SECONDS ?? 20)
const KEEP = process.env.PROM_CHECK_KEEP === '1'
const REQUIRE = process.argv.includes('--require')
const INSTALL = process.argv.includes('--install')
const INSTALL_HINT = 'install them with `apt-get update && apt-get install -y prometheus` (Debian/Ubuntu; the package includes promtool), or put both binaries from https://prometheus.io/download/ on the PATH'
let skipped = ''
const RATE_INTERVAL = '20s' // what Grafana's $__rate_interval is at a 1 s scrape interval and short ranges
const TOKEN = 'prometheus-check-token'
let work = ''
const children = []
const failures = []
const log = (...a) => console.log('[prometheus-check]', ...a)

function freePort () {
  return new Promise((res, rej) => {
    const s = createServer()
    s.once('error', rej)
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => res(port)) })
  })
}

function start (name, cmd, args, opts = {}) {
  const out = openSync(join(work, `${name}.log`), 'a')
  const child = spawn(cmd, args, { cwd: opts.cwd ?? root, env: { ...process.env, ...opts.env }, stdio: ['ignore', out, out] })
  child.name = name
  child.exited = new Promise((r) => child.once('exit', (code, signal) => r({ code, signal })))
  children.push(child)
  return child
}

async function stop (child, signal = 'SIGTERM') {
  if (child.exitCode !== null || child.signalCode !== null) return
  child.kill(signal)
  const t = setTimeout(() => child.kill('SIGKILL'), 8000)
  await child.exited
  clearTimeout(t)
}

async function waitFor (what, fn, timeoutMs = 30000) {
  const deadline = Date.now() + timeoutMs
  let last
  while (Date.now() < deadline) {
    try { if (await fn()) return } catch (e) { last = e }
    await sleep(200)
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ''}`)
}

function have (cmd) { return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0 }

/** True when prometheus and promtool are available (after installing them with --install). */
function ensurePrometheus () {
  if (have('prometheus') && have('promtool')) return true
  const missing = ['prometheus', 'promtool'].filter((c) => !have(c)).join(' and ')
  if (!INSTALL) {
    if (REQUIRE) throw new Error(`${missing} not found on the PATH (--require): ${INSTALL_HINT}`)
    log(`${missing} not found on the PATH: ${INSTALL_HINT}; or rerun with --install`)
    return false
  }
  log(`${missing} missing: installing Debian's prometheus package (--install)`)
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }
  let policy = spawnSync('apt-cache', ['policy', 'prometheus'], { encoding: 'utf8' }).stdout ?? ''
  if (!/Candidate: (?!\(none\))/.test(policy)) {
    execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit', env })
    policy = spawnSync('apt-cache', ['policy', 'prometheus'], { encoding: 'utf8' }).stdout ?? ''
    if (!/Candidate: (?!\(none\))/.test(policy)) throw new Error('Debian has no prometheus package for this system (apt-cache policy prometheus)')
  }
  // The package's service does not start where policy-rc.d forbids it (containers); we run our own.
  execFileSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', 'prometheus'], { stdio: 'inherit', env })
  return true
}

function gatewayConfig ({ port, adminPort, originUrl, deadUrl, redisUrl }) {
  return `# generated by scripts/prometheus-check.mjs
listen: { host: 127.0.0.1, port: ${port} }
admin: { host: 127.0.0.1, port: ${adminPort}, token: "${TOKEN}" }
redis: { url: "${redisUrl}", commandTimeoutMs: 100, connectTimeoutMs: 500 }
log: { level: warn, accessLog: false }
shutdownGraceMs: 2000
cache:
  memory: { maxBytes: 67108864, maxEntryBytes: 1048576 }
upstreams:
  api:
    url: ${originUrl}
    timeoutMs: 5000
    connections: 32
  budgeted:
    url: ${originUrl}
    timeoutMs: 5000
    rateLimit: { requestsPerSecond: 5, burst: 5, maxQueueMs: 50 }
  dead:
    url: ${deadUrl}
    timeoutMs: 2000
    connectTimeoutMs: 500
    circuitBreaker: { errorThresholdPercent: 50, volumeThreshold: 5, windowMs: 10000, resetTimeoutMs: 2000 }
    retry: { attempts: 1, backoffMs: 10, maxBackoffMs: 50, budgetPercent: 100, budgetMinRetries: 50 }
  pool:
    targets: ["${originUrl}", "${deadUrl}"]
    timeoutMs: 2000
    connectTimeoutMs: 500
    healthCheck: { path: /, intervalMs: 500, timeoutMs: 300, unhealthyThreshold: 2 }
routes:
  - name: api-cached
    match: { pathPrefix: /api/, methods: [GET, HEAD] }
    upstream: api
    cache: { enabled: true, defaultTtlSeconds: 60, staleWhileRevalidateSeconds: 30, staleIfErrorSeconds: 300 }
    compression: { enabled: true, minBytes: 256, encodings: [br, gzip] }
    rateLimit: { perClient: { requestsPerSecond: 1000, burst: 2000, key: ip } }
  - name: limited
    match: { pathPrefix: /limited/ }
    upstream: api
    rateLimit: { perClient: { requestsPerSecond: 2, burst: 2, key: ip } }
  - name: budget
    match: { pathPrefix: /budget/ }
    upstream: budgeted
  - name: dead
    match: { pathPrefix: /dead/ }
    upstream: dead
  - name: pool
    match: { pathPrefix: /pool/ }
    upstream: pool
  - name: api-rest
    match: { pathPrefix: / }
    upstream: api
    compression: { enabled: true, minBytes: 64, encodings: [gzip] }
`
}

async function hit (base, path, init = {}) {
  try {
    const r = await fetch(base + path, { ...init, signal: AbortSignal.timeout(5000) })
    await r.arrayBuffer()
    return r.status
  } catch { return 0 }
}

async function load (base, seconds, midway) {
  const statuses = {}
  const count = (s) => { statuses[s] = (statuses[s] ?? 0) + 1 }
  const until = Date.now() + seconds * 1000
  let midwayDone = false
  const paths = [
    ['/api/products', { 'accept-encoding': 'br' }],
    ['/api/products', { 'accept-encoding': 'gzip' }],
    ['/api/products', {}],
    ['/api/products/1', { 'accept-encoding': 'gzip' }],
    ['/api/products/2', {}],
    ['/api/time', {}],
    ['/api/private', {}],
    ['/', { 'accept-encoding': 'gzip' }]
  ]
  const worker = async (w) => {
    let i = w
    while (Date.now() < until) {
      i++
      const [p, headers] = paths[i % paths.length]
      count(await hit(base, `${p}${i % 5 === 0 ? `?v=${i % 40}` : ''}`, { headers }))
      if (i % 4 === 0) count(await hit(base, '/limited/x'))
      if (i % 3 === 0) count(await hit(base, `/budget/${i % 7}`))
      if (i % 5 === 0) count(await hit(base, '/dead/x'))
      if (i % 4 === 1) count(await hit(base, '/pool/x'))
      if (i % 6 === 0) count(await hit(base, '/api/upload', { method: 'POST', body: 'x'.repeat(100) }))
      if (i % 25 === 0) count(await hit(base, '/api/fail'))
      if (!midwayDone && Date.now() > until - seconds * 400) { midwayDone = true; await midway() }
      await sleep(20)
    }
  }
  await Promise.all([0, 1, 2, 3].map(worker))
  return statuses
}

/**
 * Issue 16's series with real data behind them, not only present (each returns a series only
 * when its condition holds): the panels and the alert above read these families; here the load
 * must have put numbers in them. Redis was up for the first part of the load.
 */
const ISSUE16_QUERIES = [
  ['L1 hits by layer', 'sum(increase(sluice_cache_events_total{route="api-cached",result="hit",layer="l1"}[1h])) > 0'],
  ['the l2 hit series is bound', 'sum(sluice_cache_events_total{route="api-cached",result="hit",layer="l2"}) >= 0'],
  ['misses carry no layer', 'count(sluice_cache_events_total{route="api-cached",result="miss",layer=""}) > 0'],
  ['Redis GET timed (cache lookups)', 'sum(increase(sluice_redis_command_duration_seconds_count{command="get"}[1h])) > 0'],
  ['Redis scripts timed (cache stores, limiter buckets)', 'sum(increase(sluice_redis_command_duration_seconds_count{command=~"eval|evalsha"}[1h])) > 0'],
  ['Redis latency buckets agree with the count', 'sum(sluice_redis_command_duration_seconds_bucket{le="+Inf"}) - sum(sluice_redis_command_duration_seconds_count) == 0'],
  ['request bodies sized (the uploads)', 'sum(increase(sluice_http_request_size_bytes_sum{route="api-cached"}[1h])) + sum(increase(sluice_http_request_size_bytes_sum{route="api-rest"}[1h])) > 0'],
  ['response bodies sized', 'sum(increase(sluice_http_response_size_bytes_sum{route="api-cached"}[1h])) > 0'],
  ['the L1 bound is exported', 'sluice_cache_max_bytes{tier="memory"} == 67108864'],
  ['L1 eviction series exist', 'count(sluice_cache_evictions_total{tier="memory"}) == 2'],
  ['targets: the dead target is out of rotation, the live one in', 'min(sluice_upstream_target_healthy{upstream="pool"}) == 0 and max(sluice_upstream_target_healthy{upstream="pool"}) == 1'],
  ['targets: attempts reached the live target', 'sum(increase(sluice_upstream_target_requests_total{upstream="pool"}[1h])) > 0'],
  ['protocol: HTTP/1.1 requests counted', 'sum(sluice_http_requests_by_protocol_total{protocol="http/1.1"}) > 0']
].map(([source, query]) => ({ source: `issue 16: ${source}`, query, raw: query }))

async function promQuery (promUrl, query, time) {
  const u = new URL('/api/v1/query', promUrl)
  u.searchParams.set('query', query)
  u.searchParams.set('time', String(time))
  const r = await fetch(u)
  const j = await r.json()
  if (j.status !== 'success') return { ok: false, error: `${j.errorType}: ${j.error}`, series: 0 }
  const result = j.data.resultType === 'scalar' ? [j.data.result] : j.data.result
  const nan = result.length > 0 && result.every((s) => ['NaN', '+Inf', '-Inf'].includes(String(s.value?.[1] ?? s[1])))
  return { ok: result.length > 0, series: result.length, nan }
}

async function main () {
  if (!ensurePrometheus()) { skipped = 'prometheus/promtool not installed (see above; --require makes this a failure)'; return }
  work = mkdtempSync(join(tmpdir(), 'sluice-promcheck-'))
  if (!existsSync(join(root, 'dist/src/cli.js'))) throw new Error('dist/src/cli.js is missing: run `npm run build` first')
  log(execFileSync('prometheus', ['--version'], { encoding: 'utf8' }).split('\n')[0])

  // promtool on the shipped files.
  for (const args of [['check', 'rules', 'deploy/prometheus/alerts.yml'], ['check', 'config', 'deploy/prometheus/prometheus.yml']]) {
    const r = spawnSync('promtool', args, { cwd: root, encoding: 'utf8' })
    log(`promtool ${args.join(' ')}: ${r.status === 0 ? 'OK' : 'FAILED'}`)
    if (r.status !== 0) failures.push(`promtool ${args.join(' ')}:\n${r.stdout}${r.stderr}`)
  }

  const [port, adminPort, originPort, deadPort, redisPort, promPort] = await Promise.all([freePort(), freePort(), freePort(), freePort(), freePort(), freePort()])
  const originUrl = `http://127.0.0.1:${originPort}`
  const base = `http://127.0.0.1:${port}`
  const admin = `http://127.0.0.1:${adminPort}`
  const promUrl = `http://127.0.0.1:${promPort}`

  // Redis (optional: without redis-server the Redis panels cannot get data, and say so).
  let redis = null
  if (have('redis-server')) {
    redis = start('redis', 'redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { cwd: work })
  } else log('redis-server not found: the Redis panels and alert will have no data')
  const redisUrl = redis ? `redis://127.0.0.1:${redisPort}` : ''

  start('origin', process.execPath, ['examples/origin.mjs'], { env: { PORT: String(originPort), HOST: '127.0.0.1' } })
  const configFile = join(work, 'sluice.yaml')
  const config = gatewayConfig({ port, adminPort, originUrl, deadUrl: `http://127.0.0.1:${deadPort}`, redisUrl })
  writeFileSync(configFile, config)
  const sluice = start('sluice', process.execPath, ['dist/src/cli.js', '--config', configFile])
  await waitFor('the origin', async () => (await fetch(originUrl + '/')).ok)
  await waitFor('sluice /healthz', async () => (await fetch(admin + '/healthz')).ok)
  log(`sluice on ${base} (admin ${admin}), origin ${originUrl}, redis ${redisUrl || 'none'}`)

  // Prometheus with the shipped rules, scraping every second.
  const promConfig = join(work, 'prometheus.yml')
  writeFileSync(promConfig, YAML.stringify({
    global: { scrape_interval: '1s', evaluation_interval: '1s' },
    rule_files: [join(root, 'deploy/prometheus/alerts.yml')],
    scrape_configs: [{ job_name: 'sluice', metrics_path: '/metrics', static_configs: [{ targets: [`127.0.0.1:${adminPort}`] }] }]
  }))
  start('prometheus', 'prometheus', [
    `--config.file=${promConfig}`, `--storage.tsdb.path=${join(work, 'tsdb')}`,
    `--web.listen-address=127.0.0.1:${promPort}`, '--storage.tsdb.retention.time=1h', '--log.level=warn'
  ], { cwd: work })
  await waitFor('prometheus /-/ready', async () => (await fetch(promUrl + '/-/ready')).ok, 60000)
  await waitFor('the first scrape', async () => (await promQuery(promUrl, 'up{job="sluice"} == 1', Date.now() / 1000)).ok, 30000)
  log(`prometheus on ${promUrl}; load for ${LOAD_SECONDS} s`)

  // Reloads: one that works, one that fails (the old config keeps serving), then the good file again.
  const reload = async () => (await fetch(admin + '/admin/reload', { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` } })).status
  const midway = async () => {
    const ok = await reload()
    writeFileSync(configFile, config.replace('routes:', 'routes:\n  - name: broken\n    match: { pathPrefix: /broken/ }\n    upstream: no-such-upstream\n    surprise: true'))
    const bad = await reload()
    writeFileSync(configFile, config)
    log(`reloads: good → ${ok}, broken file → ${bad}`)
    if (redis) { await stop(redis); log('redis stopped: Sluice fails open and counts Redis errors') }
  }
  const statuses = await load(base, LOAD_SECONDS, midway)
  const loadEnd = Date.now() / 1000
  log(`responses by status: ${JSON.stringify(statuses)}`)
  await sleep(3000) // let the last scrapes and a rule evaluation land
  const status = await (await fetch(admin + '/readyz')).json().catch(() => ({}))
  log(`/readyz after the load: ${JSON.stringify(status).slice(0, 300)}`)

  // Every dashboard query and every alert signal, at the end of the load.
  const dash = JSON.parse(readFileSync(join(root, 'deploy/grafana/dashboards/sluice.json'), 'utf8'))
  const alerts = YAML.parse(readFileSync(join(root, 'deploy/prometheus/alerts.yml'), 'utf8'))
  const queries = [
    ...dashboardQueries(dash, { rateInterval: RATE_INTERVAL }),
    ...alertSignals(alerts),
    ...ISSUE16_QUERIES
  ]
  let passed = 0
  for (const q of queries) {
    const r = await promQuery(promUrl, q.query, loadEnd)
    const mark = r.ok ? (r.nan ? 'ok (NaN)' : 'ok') : 'NO SERIES'
    console.log(`  ${mark.padEnd(9)} ${String(r.series).padStart(3)}  ${q.source}: ${q.query.replace(/\s+/g, ' ').slice(0, 140)}${r.error ? `  [${r.error}]` : ''}`)
    if (r.ok && !r.nan) passed++
    else if (r.ok) failures.push(`${q.source}: only NaN/Inf values (an empty panel) for ${q.query.replace(/\s+/g, ' ')}`)
    else failures.push(`${q.source}: no series for ${q.query.replace(/\s+/g, ' ')}${r.error ? ` (${r.error})` : ''}`)
  }
  log(`${passed}/${queries.length} queries returned series with numbers`)

  // Prometheus evaluated every rule, without an error.
  const rules = await (await fetch(promUrl + '/api/v1/rules')).json()
  const all = rules.data.groups.flatMap((g) => g.rules)
  const bad = all.filter((r) => r.health !== 'ok')
  log(`rules loaded by prometheus: ${all.length}, health not ok: ${bad.length}; firing/pending: ${all.filter((r) => r.state && r.state !== 'inactive').map((r) => `${r.name}=${r.state}`).join(', ') || 'none'}`)
  for (const r of bad) failures.push(`rule ${r.name}: health ${r.health} ${r.lastError ?? ''}`)
  if (all.length !== alerts.groups.flatMap((g) => g.rules).length) failures.push(`prometheus loaded ${all.length} rules, alerts.yml has ${alerts.groups.flatMap((g) => g.rules).length}`)

  // Sluice drains and exits 0 on SIGTERM.
  await stop(sluice)
  const { code } = await sluice.exited
  if (code !== 0) failures.push(`sluice exited ${code} on SIGTERM`)
}


// ---- PromQL helpers (also used by test/ops) ----

/** Splits a PromQL expression at top-level operators of the given set (outside (), {}, [] and strings). */
export function splitTopLevel (expr, ops) {
  const parts = []
  let depth = 0
  let quote = null
  let start = 0
  for (let i = 0; i < expr.length; i++) {
    const c = expr[i]
    if (quote) { if (c === '\\') i++; else if (c === quote) quote = null; continue }
    if (c === '"' || c === "'" || c === '`') { quote = c; continue }
    if (c === '(' || c === '{' || c === '[') { depth++; continue }
    if (c === ')' || c === '}' || c === ']') { depth--; continue }
    if (depth !== 0) continue
    for (const op of ops) {
      const word = /^[a-z]/.test(op)
      if (expr.startsWith(op, i) && (!word || (/[\s)]/.test(expr[i - 1] ?? ' ') && /[\s(]/.test(expr[i + op.length] ?? ' ')))) {
        if (!word && op.length === 1 && expr[i + 1] === '=') continue // '>' of '>='
        parts.push(expr.slice(start, i))
        i += op.length - 1
        start = i + 1
        break
      }
    }
  }
  parts.push(expr.slice(start))
  // Drop the modifiers that follow a binary operator: bool, on(...)/ignoring(...), group_left/right(...).
  return parts.map((p) => p.replace(/^\s*(bool\b)?\s*((on|ignoring)\s*\([^)]*\))?\s*((group_left|group_right)\s*(\([^)]*\))?)?/, '').trim()).filter(Boolean)
}

const NUMBER = /^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/

/** The signals of an alert expression: each operand of its top-level and/or/unless and comparisons, literals left out. */
export function signalsOf (expr) {
  const out = []
  for (const side of splitTopLevel(expr, ['and', 'or', 'unless'])) {
    for (const operand of splitTopLevel(side, ['==', '!=', '>=', '<=', '>', '<'])) {
      if (!NUMBER.test(operand)) out.push(operand)
    }
  }
  return out
}

/** Every PromQL query of a Grafana dashboard, with its template variables replaced for evaluation. */
export function dashboardQueries (dash, { rateInterval = '1m', route = '.*', upstream = '.*' } = {}) {
  const subst = (q) => q
    .replaceAll('$__rate_interval', rateInterval).replaceAll('$__interval', rateInterval)
    .replaceAll('$route', route).replaceAll('${route}', route)
    .replaceAll('$upstream', upstream).replaceAll('${upstream}', upstream)
  const out = []
  const walk = (panels) => {
    for (const p of panels ?? []) {
      for (const t of p.targets ?? []) if (t.expr) out.push({ source: `panel "${p.title}" ${t.refId}`, query: subst(t.expr), raw: t.expr })
      walk(p.panels)
    }
  }
  walk(dash.panels)
  for (const v of dash.templating?.list ?? []) {
    if (v.type !== 'query') continue
    const q = typeof v.query === 'string' ? v.query : v.query?.query
    const m = /^label_values\(\s*(.+?)\s*,\s*(\w+)\s*\)$/.exec(q ?? '')
    if (m) out.push({ source: `variable $${v.name}`, query: `group by (${m[2]}) (${subst(m[1])})`, raw: q })
    else if (q) out.push({ source: `variable $${v.name}`, query: subst(q), raw: q })
  }
  for (const a of dash.annotations?.list ?? []) {
    if (a.expr) for (const s of signalsOf(a.expr)) out.push({ source: `annotation "${a.name}"`, query: subst(s), raw: a.expr })
  }
  return out
}

/** Every alert (and recording) rule's signals from a Prometheus rule file. */
export function alertSignals (rules) {
  const out = []
  for (const g of rules.groups ?? []) {
    for (const r of g.rules ?? []) {
      const name = r.alert ?? r.record
      for (const s of signalsOf(String(r.expr))) out.push({ source: `alert ${name}`, query: s, raw: String(r.expr) })
    }
  }
  return out
}

let exitCode = 0
const direct = process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)
if (direct) try {
  await main()
} catch (e) {
  failures.push(`error: ${e.stack ?? e}`)
} finally {
  for (const c of children.reverse()) await stop(c)
  if (failures.length) {
    exitCode = 1
    console.error(`[prometheus-check] FAILED (${failures.length}):\n - ${failures.join('\n - ')}${work ? `\nlogs: ${work}` : ''}`)
  } else if (skipped) console.log(`[prometheus-check] SKIPPED: ${skipped}`)
  else console.log('[prometheus-check] PASSED')
  if (work && !KEEP && !failures.length) rmSync(work, { recursive: true, force: true })
}
if (direct) process.exit(exitCode)
