// Generates deploy/grafana/dashboards/sluice.json, the Grafana dashboard provisioned by
// docker-compose.yml. Edit the panels here and run `node deploy/grafana/generate.mjs`;
// test/ops checks that the JSON is current and that every query uses declared metrics, and
// scripts/prometheus-check.mjs runs every query against a real Prometheus.
// Metric names: src/observability/metrics.ts. Template variables: $datasource, $route, $upstream.
import { writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

const ds = { type: 'prometheus', uid: '${datasource}' }
const RI = '$__rate_interval'
const R = 'route=~"$route"'
const U = 'upstream=~"$upstream"'
/** Cache results that answered from stored bytes (the same definition as the /dashboard status page). */
const SERVED_FROM_CACHE = 'hit|stale|revalidated|coalesced'

let nextId = 1
const t = (expr, legendFormat, extra = {}) => ({ datasource: ds, expr, legendFormat, refId: String.fromCharCode(64 + (extra.n ?? 1)), ...extra.more })
function targets (...list) { return list.map(([expr, legend], i) => t(expr, legend, { n: i + 1 })) }

function panel (type, title, gridPos, tgts, opts = {}) {
  return {
    id: nextId++,
    type,
    title,
    description: opts.description ?? '',
    datasource: ds,
    gridPos,
    targets: tgts,
    fieldConfig: { defaults: { unit: opts.unit ?? 'short', ...(opts.defaults ?? {}) }, overrides: [] },
    options: opts.options ?? (type === 'timeseries' ? { legend: { displayMode: 'table', placement: 'bottom', calcs: ['mean', 'max', 'lastNotNull'] }, tooltip: { mode: 'multi', sort: 'desc' } } : {})
  }
}
const row = (title, y) => ({ id: nextId++, type: 'row', title, collapsed: false, gridPos: { h: 1, w: 24, x: 0, y }, panels: [] })
const stat = (title, x, y, expr, unit, description, defaults = {}) => panel('stat', title, { h: 4, w: 4, x, y }, targets([expr, title]), { unit, description, defaults, options: { reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false }, colorMode: 'value', graphMode: 'area', textMode: 'auto' } })
const ts = (title, x, y, w, tgts, unit, description, defaults = {}) => panel('timeseries', title, { h: 8, w, x, y }, targets(...tgts), { unit, description, defaults: { custom: { lineWidth: 1, fillOpacity: 10, showPoints: 'never' }, ...defaults } })

const quantiles = (metric, by, sel) => [0.5, 0.95, 0.99].map((q) => [
  `histogram_quantile(${q}, sum by (${by}, le) (rate(${metric}_bucket{${sel}}[${RI}])))`,
  `p${Math.round(q * 100)} {{${by}}}`
])

const hitRatio = (by, sel) =>
  `sum by (${by}) (rate(sluice_http_requests_total{${sel},cache=~"${SERVED_FROM_CACHE}"}[${RI}]))\n/ sum by (${by}) (rate(sluice_http_requests_total{${sel},cache!="none"}[${RI}]))`

let y = 0
const panels = []
// ---- Overview ----
panels.push(row('Overview', y)); y += 1
panels.push(
  stat('Requests/s', 0, y, `sum(rate(sluice_http_requests_total{${R}}[${RI}]))`, 'reqps', 'All requests answered by Sluice on the selected routes.'),
  stat('5xx ratio', 4, y, `sum(rate(sluice_http_requests_total{${R},status_class="5xx"}[${RI}])) / sum(rate(sluice_http_requests_total{${R}}[${RI}]))`, 'percentunit', 'Share of responses with a 5xx status (alert SluiceHighErrorRatio above 5%).', { thresholds: { mode: 'absolute', steps: [{ color: 'green', value: null }, { color: 'orange', value: 0.01 }, { color: 'red', value: 0.05 }] } }),
  stat('p99 latency', 8, y, `histogram_quantile(0.99, sum by (le) (rate(sluice_http_request_duration_seconds_bucket{${R}}[${RI}])))`, 's', 'Time from request to last byte, all selected routes (alert SluiceLatencyP99AboveSLO above 0.5 s).', { thresholds: { mode: 'absolute', steps: [{ color: 'green', value: null }, { color: 'red', value: 0.5 }] } }),
  stat('Cache hit ratio', 12, y, `sum(rate(sluice_http_requests_total{${R},cache=~"${SERVED_FROM_CACHE}"}[${RI}])) / sum(rate(sluice_http_requests_total{${R},cache!="none"}[${RI}]))`, 'percentunit', 'Requests on cached routes answered from stored bytes (hit, stale, revalidated, coalesced) over all requests on cached routes.'),
  stat('Open breakers', 16, y, 'count(sluice_circuit_state == 2) or vector(0)', 'short', 'Upstreams whose circuit breaker is open now.', { thresholds: { mode: 'absolute', steps: [{ color: 'green', value: null }, { color: 'red', value: 1 }] } }),
  stat('Since last good config load', 20, y, 'time() - max(sluice_config_last_reload_success_timestamp_seconds)', 's', 'Time since the config was last loaded or reloaded successfully.')
)
y += 4
// ---- Traffic ----
panels.push(row('Traffic', y)); y += 1
panels.push(
  ts('Request rate by route', 0, y, 12, [[`sum by (route) (rate(sluice_http_requests_total{${R}}[${RI}]))`, '{{route}}']], 'reqps', 'sluice_http_requests_total per route.'),
  ts('Responses by status class', 12, y, 12, [[`sum by (status_class) (rate(sluice_http_requests_total{${R}}[${RI}]))`, '{{status_class}}']], 'reqps', 'Includes 429 (rate limited) in 4xx and 503 from open breakers in 5xx.')
)
y += 8
panels.push(
  ts('Error rate (5xx ratio) by route', 0, y, 12, [[`sum by (route) (rate(sluice_http_requests_total{${R},status_class="5xx"}[${RI}]))\n/ sum by (route) (rate(sluice_http_requests_total{${R}}[${RI}]))`, '{{route}}']], 'percentunit', '5xx responses over all responses, per route.'),
  ts('Latency p50 / p95 / p99 by route', 12, y, 12, quantiles('sluice_http_request_duration_seconds', 'route', R), 's', 'sluice_http_request_duration_seconds: request to last byte sent. Long-lived streams (SSE) count their whole duration.')
)
y += 8
panels.push(
  ts('Requests by client protocol', 0, y, 12, [[`sum by (protocol) (rate(sluice_http_requests_by_protocol_total[${RI}]))`, '{{protocol}}']], 'reqps', 'sluice_http_requests_by_protocol_total: http/1.0, http/1.1 or h2 (listen.http2).'),
  ts('WebSocket tunnels open', 12, y, 12, [['sum by (protocol) (sluice_websocket_tunnels_open)', '{{protocol}}']], 'short', 'sluice_websocket_tunnels_open: tunnels open now, by client protocol (http/1.1 Upgrade, or h2 extended CONNECT, RFC 8441). Upgrade requests by result: sluice_websocket_tunnels_total.')
)
y += 8
// ---- Upstreams ----
panels.push(row('Upstreams', y)); y += 1
panels.push(
  ts('Upstream latency p50 / p95 / p99', 0, y, 12, quantiles('sluice_upstream_request_duration_seconds', 'upstream', U), 's', 'From sending to the upstream until its response headers.'),
  ts('Upstream responses by status class', 12, y, 12, [[`sum by (upstream, status_class) (rate(sluice_upstream_request_duration_seconds_count{${U}}[${RI}]))`, '{{upstream}} {{status_class}}']], 'reqps', 'Every attempt, retries included.')
)
y += 8
panels.push(
  ts('In-flight upstream requests', 0, y, 8, [[`sum by (upstream) (sluice_upstream_in_flight_requests{${U}})`, '{{upstream}}']], 'short', 'Requests waiting for or streaming from each upstream.'),
  ts('Retries', 8, y, 8, [[`sum by (upstream) (rate(sluice_upstream_retries_total{${U}}[${RI}]))`, '{{upstream}}']], 'reqps', 'Retries sent (idempotent methods, listed statuses, within the retry budget).'),
  ts('Upstream budget queue wait p95', 16, y, 8, [[`histogram_quantile(0.95, sum by (upstream, le) (rate(sluice_upstream_queue_wait_seconds_bucket{${U}}[${RI}])))`, '{{upstream}}']], 's', 'Time requests waited for a token of upstreams.<name>.rateLimit (maxQueueMs).')
)
y += 8
panels.push(
  ts('Targets in rotation', 0, y, 12, [[`sum by (upstream) (sluice_upstream_target_healthy{${U}})`, '{{upstream}} in rotation'], [`count by (upstream) (sluice_upstream_target_healthy{${U}})`, '{{upstream}} configured']], 'short', 'sluice_upstream_target_healthy: targets passing their health checks and not ejected, against all targets (alert SluiceUpstreamTargetDown when one stays out).'),
  ts('Attempts per target', 12, y, 12, [[`sum by (upstream, target) (rate(sluice_upstream_target_requests_total{${U}}[${RI}]))`, '{{upstream}} {{target}}']], 'reqps', 'sluice_upstream_target_requests_total: how the balancer spreads attempts (retries and failovers included).')
)
y += 8
// ---- Cache ----
panels.push(row('Cache', y)); y += 1
panels.push(
  ts('Cache hit ratio by route', 0, y, 12, [[hitRatio('route', R), '{{route}}']], 'percentunit', 'hit, stale, revalidated and coalesced over all requests on cached routes (bypass included), as on /dashboard.', { min: 0, max: 1 }),
  ts('Cache events by result', 12, y, 12, [[`sum by (result) (rate(sluice_cache_events_total{${R}}[${RI}]))`, '{{result}}']], 'ops', 'sluice_cache_events_total: hit, miss, stale, bypass, revalidated, coalesced.')
)
y += 8
panels.push(
  ts('Cache size', 0, y, 12, [['sum by (tier) (sluice_cache_bytes)', '{{tier}}']], 'bytes', 'Bytes held by the memory (L1) and Redis (L2) tiers.'),
  ts('Cache entries', 12, y, 12, [['sum by (tier) (sluice_cache_entries)', '{{tier}}']], 'short', 'Entries held by each tier.')
)
y += 8
// Issue 16: hits by layer, L1 evictions and the L1 bound.
panels.push(
  ts('Cache hits by layer', 0, y, 8, [[`sum by (layer) (rate(sluice_cache_events_total{${R},result="hit"}[${RI}]))`, '{{layer}}']], 'ops', 'Fresh hits served from the in-process L1 (the fast path) or read from Redis (L2, then kept in L1).'),
  ts('L1 evictions', 8, y, 8, [[`sum by (reason) (rate(sluice_cache_evictions_total{tier="memory"}[${RI}]))`, '{{reason}}']], 'ops', 'sluice_cache_evictions_total: size = evicted to make room (the working set is larger than cache.memory.maxBytes), expired = dropped once past its stale windows. Purges are not counted.'),
  ts('L1 use of its bound', 16, y, 8, [['sum by (instance) (sluice_cache_bytes{tier="memory"})\n/ sum by (instance) (sluice_cache_max_bytes{tier="memory"})', '{{instance}}']], 'percentunit', 'Bytes held by the memory tier over cache.memory.maxBytes (alert SluiceCacheMemoryNearBound above 90% while evicting).', { min: 0, max: 1 })
)
y += 8
// ---- Body sizes ----
panels.push(row('Body sizes', y)); y += 1
panels.push(
  ts('Request body size p50 / p95 / p99 by route', 0, y, 12, quantiles('sluice_http_request_size_bytes', 'route', R), 'bytes', 'sluice_http_request_size_bytes: Content-Length, or the length of a body Sluice buffered; chunked uploads that stream are not observed.'),
  ts('Response body size p50 / p95 / p99 by route', 12, y, 12, quantiles('sluice_http_response_size_bytes', 'route', R), 'bytes', 'sluice_http_response_size_bytes: Content-Length, or the bytes of a streamed body counted as they pass; 0 for HEAD, 204 and 304.')
)
y += 8
// ---- Compression ----
panels.push(row('Compression', y)); y += 1
panels.push(
  ts('Bytes saved by compression', 0, y, 12, [[`sum by (encoding) (rate(sluice_compression_bytes_total{direction="in"}[${RI}]))\n- sum by (encoding) (rate(sluice_compression_bytes_total{direction="out"}[${RI}]))`, '{{encoding}}']], 'Bps', 'Bytes into the compressors minus bytes out, per second.'),
  ts('Compression ratio (out / in)', 12, y, 12, [[`sum by (encoding) (rate(sluice_compression_bytes_total{direction="out"}[${RI}]))\n/ sum by (encoding) (rate(sluice_compression_bytes_total{direction="in"}[${RI}]))`, '{{encoding}}']], 'percentunit', 'Lower is better.')
)
y += 8
// ---- Protection ----
panels.push(row('Rate limits and breakers', y)); y += 1
panels.push(
  ts('Rate-limited requests', 0, y, 12, [[`sum by (scope, name) (rate(sluice_rate_limited_total[${RI}]))`, '{{scope}} {{name}}']], 'reqps', 'scope=client: per-client limits of a route (429); scope=upstream: the outbound budget of an upstream. Shadow-mode limits count here too.'),
  panel('state-timeline', 'Circuit breaker state', { h: 8, w: 12, x: 12, y }, targets([`max by (upstream) (sluice_circuit_state{${U}})`, '{{upstream}}']), {
    unit: 'short',
    description: 'sluice_circuit_state per upstream: 0 closed, 1 half-open, 2 open.',
    defaults: {
      mappings: [{ type: 'value', options: { 0: { text: 'closed', color: 'green', index: 0 }, 1: { text: 'half-open', color: 'orange', index: 1 }, 2: { text: 'open', color: 'red', index: 2 } } }],
      thresholds: { mode: 'absolute', steps: [{ color: 'green', value: null }, { color: 'orange', value: 1 }, { color: 'red', value: 2 }] },
      color: { mode: 'thresholds' }
    },
    options: { showValue: 'auto', mergeValues: true, rowHeight: 0.8, legend: { showLegend: true, displayMode: 'list', placement: 'bottom' } }
  })
)
y += 8
panels.push(
  ts('Breaker transitions', 0, y, 12, [[`sum by (upstream, to) (increase(sluice_circuit_transitions_total{${U}}[${RI}]))`, '{{upstream}} → {{to}}']], 'short', 'sluice_circuit_transitions_total: state changes per upstream.', { custom: { drawStyle: 'bars', fillOpacity: 60, lineWidth: 1, showPoints: 'never' } })
)
// ---- Operations ----
panels.push(
  ts('Redis errors', 12, y, 12, [[`sum by (op) (rate(sluice_redis_errors_total[${RI}]))`, '{{op}}']], 'ops', 'Failed or timed-out Redis commands; Sluice fails open (cache miss, local limiter bucket) and reports degraded in /readyz.')
)
y += 8
panels.push(
  ts('Redis command latency p50 / p95 / p99', 0, y, 24, quantiles('sluice_redis_command_duration_seconds', 'command', 'command=~".+"'), 's', 'sluice_redis_command_duration_seconds: from sending a command until its reply or failure (timeouts included), by command; scripts show as evalsha (eval after NOSCRIPT).')
)
y += 8
panels.push(row('Operations', y)); y += 1
panels.push(
  ts('Config reloads', 0, y, 8, [[`sum by (result) (increase(sluice_config_reloads_total[${RI}]))`, '{{result}}']], 'short', 'SIGHUP, file change or POST /admin/reload. A failure keeps the old config serving.', { custom: { drawStyle: 'bars', fillOpacity: 60, lineWidth: 1, showPoints: 'never' } }),
  ts('Process memory', 8, y, 8, [['sum by (instance) (process_resident_memory_bytes)', 'rss {{instance}}'], ['sum by (instance) (nodejs_heap_size_used_bytes)', 'heap used {{instance}}']], 'bytes', 'Node process metrics (prom-client defaults).'),
  ts('Event loop lag p99 and CPU', 16, y, 8, [['max by (instance) (nodejs_eventloop_lag_p99_seconds)', 'event loop lag p99 {{instance}}'], [`sum by (instance) (rate(process_cpu_seconds_total[${RI}]))`, 'CPU seconds/s {{instance}}']], 's', 'A busy event loop shows here before it shows in latency.')
)
y += 8
panels.push(panel('table', 'Build', { h: 4, w: 24, x: 0, y }, [t('sluice_build_info', '{{version}}', { more: { format: 'table', instant: true } })], { description: 'sluice_build_info: version and Node.js version per instance.', options: { showHeader: true } }))

const variables = [
  { name: 'datasource', type: 'datasource', query: 'prometheus', label: 'Data source', current: {}, hide: 0 },
  { name: 'route', label: 'Route', type: 'query', datasource: ds, query: { query: 'label_values(sluice_http_requests_total, route)', refId: 'route' }, definition: 'label_values(sluice_http_requests_total, route)', includeAll: true, multi: true, allValue: '.*', current: { selected: true, text: ['All'], value: ['$__all'] }, refresh: 2, sort: 1, hide: 0 },
  { name: 'upstream', label: 'Upstream', type: 'query', datasource: ds, query: { query: 'label_values(sluice_upstream_request_duration_seconds_count, upstream)', refId: 'upstream' }, definition: 'label_values(sluice_upstream_request_duration_seconds_count, upstream)', includeAll: true, multi: true, allValue: '.*', current: { selected: true, text: ['All'], value: ['$__all'] }, refresh: 2, sort: 1, hide: 0 }
]

const dashboard = {
  uid: 'sluice',
  title: 'Sluice',
  description: 'Sluice gateway: traffic, latency, upstreams, cache, compression, rate limits, breakers, Redis and reloads.',
  tags: ['sluice', 'gateway'],
  timezone: 'browser',
  editable: true,
  graphTooltip: 1,
  refresh: '10s',
  schemaVersion: 39,
  version: 1,
  time: { from: 'now-1h', to: 'now' },
  timepicker: {},
  annotations: {
    list: [
      { builtIn: 1, datasource: { type: 'grafana', uid: '-- Grafana --' }, enable: true, hide: true, iconColor: 'rgba(0, 211, 255, 1)', name: 'Annotations & Alerts', type: 'dashboard' },
      { datasource: ds, enable: true, iconColor: 'blue', name: 'Config reloads', expr: 'changes(sluice_config_last_reload_success_timestamp_seconds[1m]) > 0', step: '1m', titleFormat: 'config reloaded', tagKeys: 'instance' }
    ]
  },
  templating: { list: variables },
  panels
}

const out = fileURLToPath(new URL('./dashboards/sluice.json', import.meta.url))
export const json = JSON.stringify(dashboard, null, 2) + '\n'
if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  writeFileSync(out, json)
  console.log(`wrote ${out} (${panels.length} panels)`)
}
