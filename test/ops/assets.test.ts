// Cross-checks of the operations assets as a whole (issue 6), complementing docker.test.ts,
// monitoring.test.ts, k6.test.ts, k8s.test.ts and docs.test.ts, which check each asset in depth:
//  - the two ports agree everywhere they are written (Dockerfile, compose, container config,
//    Prometheus target, Kubernetes sidecar);
//  - the container config passes the real `sluice validate` command, and fails it without a token;
//  - every k6 script passes Node's own parser (`node --check`) as an ES module;
//  - every metric name written anywhere in the deploy files, docs, k6 README and README is
//    one that src/observability/metrics.ts declares.
// Run with: npx tsx --test test/ops/assets.test.ts
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { copyFileSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import YAML from 'yaml'
import { createMetrics } from '../../src/observability/metrics.js'
import { parseConfig } from '../../src/config/load.js'
import { repo, read, exists } from './ops-helpers.js'

const PROXY_PORT = 8080
const ADMIN_PORT = 9901

/** Instructions of a Dockerfile, continuation lines joined, comments dropped. */
function dockerInstructions (text: string): { op: string; args: string }[] {
  const out: { op: string; args: string }[] = []
  let cur = ''
  for (const raw of text.split('\n')) {
    if (/^\s*#/.test(raw)) continue
    cur += raw.replace(/\\\s*$/, ' ')
    if (/\\\s*$/.test(raw)) continue
    const m = /^\s*([A-Za-z]+)\s+(.*)$/.exec(cur)
    if (m) out.push({ op: m[1].toUpperCase(), args: m[2].trim() })
    cur = ''
  }
  return out
}

const docker = dockerInstructions(read('Dockerfile'))
const compose = YAML.parse(read('docker-compose.yml'))
const containerConfig = parseConfig(read('deploy/sluice.docker.yaml'), 'deploy/sluice.docker.yaml', { SLUICE_ADMIN_TOKEN: 'x' }).config

test('assets: Dockerfile COPY sources and compose build context and bind mounts exist', () => {
  for (const c of docker.filter((i) => i.op === 'COPY' || i.op === 'ADD')) {
    if (/--from=/.test(c.args)) continue // build output, checked in docker.test.ts
    const parts = c.args.split(/\s+/).filter((p) => !p.startsWith('--'))
    for (const src of parts.slice(0, -1)) assert.ok(exists(src), `COPY source ${src} exists`)
  }
  for (const [name, svc] of Object.entries<any>(compose.services)) { // eslint-disable-line @typescript-eslint/no-explicit-any
    if (svc.build !== undefined) {
      const ctx = typeof svc.build === 'string' ? svc.build : svc.build.context ?? '.'
      assert.ok(exists(ctx), `${name}: build context ${ctx} exists`)
      const file = typeof svc.build === 'object' && svc.build.dockerfile ? svc.build.dockerfile : 'Dockerfile'
      assert.ok(exists(ctx, file), `${name}: ${file} exists in ${ctx}`)
    }
    for (const v of svc.volumes ?? []) {
      const source = typeof v === 'string' ? v.split(':')[0] : v.source
      if (!/^\.{1,2}\//.test(source)) continue // a named volume
      assert.ok(exists(source), `${name}: bind-mount source ${source} exists`)
    }
  }
})

test('assets: ports 8080 and 9901 agree in the Dockerfile, compose, the container config, Prometheus and the sidecar', () => {
  const exposed = docker.filter((i) => i.op === 'EXPOSE').flatMap((i) => i.args.split(/\s+/)).map((p) => Number(p.split('/')[0]))
  assert.deepEqual([...exposed].sort(), [PROXY_PORT, ADMIN_PORT], 'Dockerfile EXPOSE')
  const hc = docker.filter((i) => i.op === 'HEALTHCHECK').at(-1)?.args ?? ''
  // `sluice health` probes the admin port the config sets (test/ops/review-proc.test.ts runs it).
  assert.match(hc, /"dist\/src\/cli\.js", "health"/, 'HEALTHCHECK runs `sluice health`, which reads the admin port from the config')

  const ports = (compose.services.sluice.ports ?? []).map((p: string) => Number(String(p).split(':').at(-1)))
  assert.deepEqual([...ports].sort(), [PROXY_PORT, ADMIN_PORT], 'compose publishes both container ports')

  assert.equal(containerConfig.listen.port, PROXY_PORT, 'deploy/sluice.docker.yaml listen.port')
  assert.equal(containerConfig.admin.port, ADMIN_PORT, 'deploy/sluice.docker.yaml admin.port')
  assert.equal(containerConfig.listen.host, '0.0.0.0')
  assert.equal(containerConfig.admin.host, '0.0.0.0')

  const prom = YAML.parse(read('deploy/prometheus/prometheus.yml'))
  const targets: string[] = prom.scrape_configs.flatMap((s: any) => s.static_configs.flatMap((c: any) => c.targets)) // eslint-disable-line @typescript-eslint/no-explicit-any
  assert.ok(targets.includes(`sluice:${ADMIN_PORT}`), `prometheus scrapes sluice:${ADMIN_PORT} (${targets.join(', ')})`)

  let sidecars = 0
  for (const f of readdirSync(repo('deploy/k8s')).filter((n) => /\.ya?ml$/.test(n))) {
    const docs = YAML.parseAllDocuments(read('deploy/k8s', f)).map((d) => d.toJS())
    for (const d of docs.filter((x) => x?.kind === 'Deployment')) {
      for (const c of d.spec.template.spec.containers.filter((x: any) => /sluice/.test(x.image ?? ''))) { // eslint-disable-line @typescript-eslint/no-explicit-any
        sidecars++
        const cports = (c.ports ?? []).map((p: { containerPort: number }) => p.containerPort).sort()
        assert.deepEqual(cports, [PROXY_PORT, ADMIN_PORT], `${f}: sidecar containerPorts`)
        const byName = Object.fromEntries((c.ports ?? []).map((p: { name: string; containerPort: number }) => [p.name, p.containerPort]))
        for (const probe of ['livenessProbe', 'readinessProbe']) {
          const port = c[probe]?.httpGet?.port
          assert.equal(typeof port === 'string' ? byName[port] : port, ADMIN_PORT, `${f}: ${probe} on the admin port`)
        }
      }
    }
    for (const cm of docs.filter((x) => x?.kind === 'ConfigMap')) {
      for (const [key, text] of Object.entries<string>(cm.data ?? {})) {
        if (!/\.ya?ml$/.test(key)) continue
        const cfg = parseConfig(text, `${f}:${key}`, { SLUICE_ADMIN_TOKEN: 'x' }).config
        assert.equal(cfg.listen.port, PROXY_PORT, `${f}: ConfigMap listen.port`)
        assert.equal(cfg.admin.port, ADMIN_PORT, `${f}: ConfigMap admin.port`)
      }
    }
  }
  assert.ok(sidecars >= 1, 'a Sluice sidecar in deploy/k8s')
})

/** Runs the sluice command line from the sources (tsx), as `sluice validate` would. */
function sluice (args: string[], env: NodeJS.ProcessEnv): { status: number | null; out: string } {
  const { SLUICE_ADMIN_TOKEN: _t, ...base } = process.env
  const r = spawnSync(process.execPath, ['--import', 'tsx', repo('src/cli.ts'), ...args], { cwd: repo(), env: { ...base, ...env }, encoding: 'utf8', timeout: 60000 })
  return { status: r.status, out: `${r.stdout}${r.stderr}` }
}

test('assets: `sluice validate` accepts deploy/sluice.docker.yaml with SLUICE_ADMIN_TOKEN and refuses it without', { timeout: 120000 }, () => {
  const ok = sluice(['validate', '--config', 'deploy/sluice.docker.yaml'], { SLUICE_ADMIN_TOKEN: 'x' })
  assert.equal(ok.status, 0, ok.out)
  assert.match(ok.out, /OK/)
  const bad = sluice(['validate', '--config', 'deploy/sluice.docker.yaml'], {})
  assert.equal(bad.status, 1, bad.out)
  assert.match(bad.out, /sluice\.docker\.yaml:\d+:\d+ admin\.token: .*SLUICE_ADMIN_TOKEN/)
})

test('assets: every k6 script passes `node --check` as an ES module', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-k6-check-'))
  try {
    const files: string[] = []
    const walk = (rel: string): void => {
      for (const n of readdirSync(repo(rel))) {
        const p = `${rel}/${n}`
        if (statSync(repo(p)).isDirectory()) walk(p)
        else if (n.endsWith('.js')) files.push(p)
      }
    }
    walk('k6')
    assert.ok(files.length >= 6, `k6 scripts found: ${files.join(', ')}`)
    for (const f of files) {
      const copy = join(dir, f.replaceAll('/', '__').replace(/\.js$/, '.mjs'))
      copyFileSync(repo(f), copy)
      const r = spawnSync(process.execPath, ['--check', copy], { encoding: 'utf8' })
      assert.equal(r.status, 0, `${f}: ${r.stderr}`)
    }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

// Names Sluice exports: its own families, plus Node's process metrics (on by default).
async function metricNames (processMetrics: boolean): Promise<Set<string>> {
  const json = await createMetrics({ processMetrics }).registry.getMetricsAsJSON()
  return new Set(json.map((m) => m.name))
}
const known = (name: string, set: Set<string>): boolean => set.has(name) || set.has(name.replace(/_(bucket|sum|count)$/, ''))

test('assets: every PromQL expression in the dashboard and alerts.yml names only declared metrics', async () => {
  const declared = await metricNames(true)
  const sluiceOwn = await metricNames(false)
  assert.ok(sluiceOwn.has('sluice_http_requests_total') && sluiceOwn.size >= 15, 'metrics.ts declares the families')
  const exprs: { where: string; expr: string }[] = []
  const dash = JSON.parse(read('deploy/grafana/dashboards/sluice.json'))
  const walk = (panels: any[]): void => { // eslint-disable-line @typescript-eslint/no-explicit-any
    for (const p of panels ?? []) {
      for (const t of p.targets ?? []) if (t.expr) exprs.push({ where: `panel "${p.title}"`, expr: t.expr })
      walk(p.panels)
    }
  }
  walk(dash.panels)
  for (const v of dash.templating?.list ?? []) {
    const q = typeof v.query === 'string' ? v.query : v.query?.query
    if (q) exprs.push({ where: `variable ${v.name}`, expr: q })
  }
  for (const a of dash.annotations?.list ?? []) if (a.expr) exprs.push({ where: `annotation ${a.name}`, expr: a.expr })
  const alerts = YAML.parse(read('deploy/prometheus/alerts.yml'))
  assert.ok(Array.isArray(alerts.groups) && alerts.groups.length > 0, 'alerts.yml has groups')
  for (const g of alerts.groups) {
    assert.ok(Array.isArray(g.rules) && g.rules.length > 0, `group ${g.name} has rules`)
    for (const r of g.rules) {
      assert.ok(typeof r.alert === 'string' && typeof r.expr === 'string', `a rule of ${g.name} has alert and expr`)
      exprs.push({ where: `alert ${r.alert}`, expr: r.expr })
    }
  }
  assert.ok(exprs.length >= 20, `${exprs.length} expressions`)
  for (const { where, expr } of exprs) {
    // Label values and matchers are inside quotes or braces; metric names are the rest.
    const bare = expr.replace(/"[^"]*"/g, '""').replace(/\{[^}]*\}/g, '{}')
    const names = bare.match(/\b(sluice|process|nodejs)_[a-z0-9_]+/g) ?? []
    for (const n of names) assert.ok(known(n, declared), `${where}: ${n} is not declared (${expr})`)
  }
})

test('assets: every sluice_* metric named in the deploy files, docs, k6 and README is declared', async () => {
  const sluiceOwn = await metricNames(false)
  const files = ['README.md', 'Dockerfile', 'docker-compose.yml', 'k6/README.md']
  const add = (rel: string, re: RegExp): void => {
    for (const n of readdirSync(repo(rel))) {
      const p = `${rel}/${n}`
      if (statSync(repo(p)).isDirectory()) add(p, re)
      else if (re.test(n)) files.push(p)
    }
  }
  add('deploy', /\.(ya?ml|json)$/)
  add('docs', /\.md$/)
  let count = 0
  for (const f of files) {
    for (const m of read(f).matchAll(/\bsluice_[a-z0-9_]*[a-z0-9]\b(?!\*)/g)) {
      count++
      assert.ok(known(m[0], sluiceOwn), `${f}: ${m[0]} is not a metric of src/observability/metrics.ts`)
    }
  }
  assert.ok(count > 20, `${count} metric mentions checked`)
})
