// The Grafana dashboard and the Prometheus alert rules use only metrics Sluice declares
// (src/observability/metrics.ts, read from the registry it builds, so prom-client's default
// process metrics are included) with labels those metrics have. scripts/prometheus-check.mjs
// then runs the same queries on a real Prometheus.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import YAML from 'yaml'
import { createMetrics } from '../../src/observability/metrics.js'
import { read, importRepo } from './ops-helpers.js'

interface Family { type: string; labels: Set<string> }

/** Metric name → type and label names, as Sluice exports them (histograms with their series suffixes). */
async function declaredMetrics (): Promise<Map<string, Family>> {
  const m = createMetrics()
  const out = new Map<string, Family>()
  // Prometheus adds these to every scraped series; `up` is the scrape health series.
  const target = ['job', 'instance']
  for (const metric of m.registry.getMetricsAsArray() as unknown as { name: string; labelNames?: readonly string[]; get (): Promise<{ type: string }> | { type: string } }[]) {
    const { type } = await metric.get()
    const labels = new Set([...(metric.labelNames ?? []), ...target])
    out.set(metric.name, { type, labels })
    if (type === 'histogram') {
      out.set(`${metric.name}_bucket`, { type: 'counter', labels: new Set([...labels, 'le']) })
      out.set(`${metric.name}_sum`, { type: 'counter', labels })
      out.set(`${metric.name}_count`, { type: 'counter', labels })
    }
  }
  out.set('up', { type: 'gauge', labels: new Set(target) })
  return out
}

const KEYWORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'bool', 'offset', 'and', 'or', 'unless', 'inf', 'nan', 'atan2'])

/** Each vector selector of a PromQL expression: its metric name and the label names it matches on. */
export function selectors (expr: string): { name: string; labels: string[] }[] {
  // Strings, ranges and grouping lists cannot hold metric names.
  let e = expr.replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""')
  e = e.replace(/\[[^\]]*\]/g, '')
  e = e.replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ')
  const out: { name: string; labels: string[] }[] = []
  const token = /(\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[a-z]*)|([a-zA-Z_:][\w:]*)\s*(\{[^}]*\})?\s*(\()?|(\{[^}]*\})/g
  for (const m of e.matchAll(token)) {
    if (m[1]) continue // a number or duration
    if (m[5]) { // {__name__=...} or a bare matcher set
      const name = /__name__\s*=\s*"([^"]*)"/.exec(m[5])
      assert.ok(name, `a selector without a metric name in ${expr}`)
      continue
    }
    const word = m[2]
    if (m[4] && !m[3]) continue // a function call
    if (KEYWORDS.has(word.toLowerCase())) continue
    const labels = m[3] ? [...m[3].matchAll(/([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)/g)].map((x) => x[1]) : []
    out.push({ name: word, labels })
  }
  return out
}

function checkExpr (families: Map<string, Family>, expr: string, where: string): number {
  const sels = selectors(expr)
  assert.ok(sels.length > 0, `${where}: no metric in ${expr}`)
  for (const s of sels) {
    const f = families.get(s.name)
    assert.ok(f, `${where}: ${s.name} is not a metric Sluice declares (src/observability/metrics.ts): ${expr}`)
    for (const l of s.labels) assert.ok(f.labels.has(l), `${where}: ${s.name} has no label "${l}" (it has ${[...f.labels].join(', ')})`)
  }
  return sels.length
}

const dashboard = JSON.parse(read('deploy/grafana/dashboards/sluice.json'))
const alerts = YAML.parse(read('deploy/prometheus/alerts.yml'))

test('the PromQL selector reader finds metric names and labels, and skips functions, keywords and durations', () => {
  assert.deepEqual(selectors('histogram_quantile(0.99, sum by (route, le) (rate(sluice_http_request_duration_seconds_bucket{route=~"$route",cache!="none"}[5m])))'),
    [{ name: 'sluice_http_request_duration_seconds_bucket', labels: ['route', 'cache'] }])
  assert.deepEqual(selectors('count(sluice_circuit_state == 2) or vector(0)'), [{ name: 'sluice_circuit_state', labels: [] }])
  assert.deepEqual(selectors('a / on (x) group_left b offset 1d > bool 0.5e3').map((s) => s.name), ['a', 'b'])
})

test('the dashboard JSON is valid, current with its generator, and has unique panel ids', async () => {
  const gen = await importRepo('deploy/grafana/generate.mjs')
  assert.equal(read('deploy/grafana/dashboards/sluice.json'), gen.json, 'run `node deploy/grafana/generate.mjs` after editing it')
  assert.equal(dashboard.uid, 'sluice')
  const ids = dashboard.panels.map((p: { id: number }) => p.id)
  assert.equal(new Set(ids).size, ids.length)
  for (const p of dashboard.panels) {
    assert.ok(p.gridPos && p.gridPos.w > 0 && (p.type === 'row' || p.gridPos.h > 0), `panel ${p.title} has a position`)
    if (p.type !== 'row') assert.ok(p.targets?.length > 0, `panel ${p.title} has a query`)
  }
})

test('the dashboard shows everything issue 6 lists', () => {
  const exprs = dashboard.panels.flatMap((p: { targets?: { expr: string }[] }) => (p.targets ?? []).map((t) => t.expr)).join('\n')
  const has = (what: string, re: RegExp) => assert.match(exprs, re, what)
  has('request rate', /rate\(sluice_http_requests_total/)
  has('error rate', /status_class="5xx"/)
  for (const q of ['0.5', '0.95', '0.99']) has(`p${q} by route`, new RegExp(`histogram_quantile\\(${q.replace('.', '\\.')}, sum by \\(route, le\\) \\(rate\\(sluice_http_request_duration_seconds_bucket`))
  has('upstream latency', /sluice_upstream_request_duration_seconds_bucket/)
  has('cache hit ratio', /cache=~"hit\|stale\|revalidated\|coalesced"/)
  has('cache events', /sluice_cache_events_total/)
  has('bytes saved by compression', /direction="in"[\s\S]*-[\s\S]*direction="out"/)
  has('rate-limited requests', /sluice_rate_limited_total/)
  has('breaker state', /sluice_circuit_state/)
  has('redis errors', /sluice_redis_errors_total/)
  has('config reloads', /sluice_config_reloads_total/)
  const breaker = dashboard.panels.find((p: { title: string }) => p.title === 'Circuit breaker state')
  assert.equal(breaker.type, 'state-timeline', 'breaker state over time')
})

test('every dashboard query (panels, variables, annotations) uses only declared metrics and labels', async () => {
  const families = await declaredMetrics()
  const { dashboardQueries } = await importRepo('scripts/prometheus-check.mjs')
  const queries: { source: string; query: string }[] = dashboardQueries(dashboard)
  assert.ok(queries.length >= 30, `${queries.length} queries`)
  let n = 0
  for (const q of queries) n += checkExpr(families, q.query, q.source)
  assert.ok(n >= queries.length)
  // The variables the queries use are defined.
  const vars = new Set(dashboard.templating.list.map((v: { name: string }) => v.name))
  for (const p of dashboard.panels) {
    for (const t of p.targets ?? []) {
      for (const m of String(t.expr).matchAll(/\$\{?(\w+)/g)) if (!m[1].startsWith('__')) assert.ok(vars.has(m[1]), `${p.title}: $${m[1]} is a dashboard variable`)
    }
  }
})

test('alerts.yml has the Prometheus rule-group shape and the alerts issue 6 lists', () => {
  assert.ok(Array.isArray(alerts.groups) && alerts.groups.length > 0)
  const names = new Set<string>()
  for (const g of alerts.groups) {
    assert.equal(typeof g.name, 'string')
    assert.ok(Array.isArray(g.rules) && g.rules.length > 0)
    for (const r of g.rules) {
      assert.ok(typeof r.alert === 'string' || typeof r.record === 'string', 'a rule is an alert or a recording rule')
      assert.equal(typeof r.expr, 'string')
      for (const k of Object.keys(r)) assert.ok(['alert', 'record', 'expr', 'for', 'keep_firing_for', 'labels', 'annotations'].includes(k), `rule ${r.alert}: unknown key ${k}`)
      if (r.for !== undefined) assert.match(String(r.for), /^(\d+(ms|s|m|h|d|w|y))+$/)
      if (r.alert) {
        assert.ok(!names.has(r.alert), `alert ${r.alert} is unique`)
        names.add(r.alert)
        assert.match(r.labels?.severity ?? '', /^(critical|warning|info)$/, `${r.alert} has a severity`)
        assert.ok(r.annotations?.summary, `${r.alert} has a summary`)
      }
    }
  }
  const exprs = alerts.groups.flatMap((g: { rules: { expr: string }[] }) => g.rules.map((r) => r.expr)).join('\n')
  assert.match(exprs, /status_class="5xx"/, 'error ratio')
  assert.match(exprs, /histogram_quantile\(0\.99,[\s\S]*sluice_http_request_duration_seconds_bucket[\s\S]*> 0\.5/, 'p99 above the SLO')
  assert.match(exprs, /sluice_circuit_state/, 'breaker open')
  assert.match(exprs, /cache=~"hit\|stale\|revalidated\|coalesced"[\s\S]*</, 'falling cache hit ratio')
  assert.match(exprs, /sluice_redis_errors_total/, 'redis errors')
  assert.match(exprs, /sluice_config_reloads_total\{result="failure"\}/, 'failed reloads')
})

test('every alert expression uses only declared metrics and labels, and splits into signals', async () => {
  const families = await declaredMetrics()
  const { alertSignals, signalsOf } = await importRepo('scripts/prometheus-check.mjs')
  for (const g of alerts.groups) for (const r of g.rules) checkExpr(families, r.expr, `alert ${r.alert}`)
  const signals: { source: string; query: string }[] = alertSignals(alerts)
  for (const s of signals) {
    assert.doesNotMatch(s.query.replace(/\{[^}]*\}|\([^()]*\)/g, ''), /\s(>|<|==|!=|>=|<=)\s*[\d.]+\s*$/, `${s.source}: the threshold is stripped`)
    checkExpr(families, s.query, s.source)
  }
  assert.deepEqual(signalsOf('a{x=">"} > 0.5 and on (i) b < 2 * c'), ['a{x=">"}', 'b', '2 * c'])
  assert.deepEqual(signalsOf('x >= bool 3'), ['x'])
})
