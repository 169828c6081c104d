// No Docker engine runs here, so these tests check what a build and `docker compose up`
// rely on: every file the Dockerfile and the compose file reference exists (and is not
// excluded from the build context), and their ports and paths agree with the container
// config deploy/sluice.docker.yaml, which itself passes Sluice's own validation.
import { NODE_FLAGS } from '../../src/node-flags.js'
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { posix } from 'node:path'
import YAML from 'yaml'
import { read, exists, configErrors, loadConfigText, CONTAINER_ENV } from './ops-helpers.js'

interface Instruction { op: string; args: string; line: number }
interface Stage { base: string; name: string | undefined; instructions: Instruction[] }

/** Dockerfile → stages of instructions (continuations joined, comments dropped). */
function parseDockerfile (text: string): Stage[] {
  const stages: Stage[] = []
  const lines = text.split('\n')
  for (let i = 0; i < lines.length; i++) {
    const start = i + 1
    let l = lines[i]
    if (/^\s*(#|$)/.test(l)) continue
    while (/\\\s*$/.test(l) && i + 1 < lines.length) {
      l = l.replace(/\\\s*$/, ' ')
      i++
      if (!/^\s*#/.test(lines[i])) l += lines[i]
    }
    const m = /^\s*(\w+)\s+(.*)$/.exec(l)
    assert.ok(m, `Dockerfile line ${start} is not an instruction: ${l}`)
    const op = m[1].toUpperCase()
    const args = m[2].trim()
    if (op === 'FROM') {
      const f = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args)
      assert.ok(f, `FROM on line ${start}`)
      stages.push({ base: f[1], name: f[2], instructions: [] })
    } else {
      assert.ok(stages.length > 0, `${op} before FROM on line ${start}`)
      stages[stages.length - 1].instructions.push({ op, args, line: start })
    }
  }
  return stages
}

/** A JSON (exec form) array, or null for the shell form. */
function execForm (args: string): string[] | null {
  if (!args.startsWith('[')) return null
  return JSON.parse(args) as string[]
}

/** Splits `--flag=value` options from the rest of an instruction's arguments. */
function flags (args: string): { flags: Record<string, string>; rest: string[] } {
  const out: Record<string, string> = {}
  const rest: string[] = []
  for (const word of args.split(/\s+/)) {
    const f = /^--([\w-]+)(?:=(.*))?$/.exec(word)
    if (f && rest.length === 0) out[f[1]] = f[2] ?? 'true'
    else rest.push(word)
  }
  return { flags: out, rest }
}

/** .dockerignore semantics (last matching pattern wins; `!` re-includes). */
function dockerIgnored (patterns: string[], path: string): boolean {
  let ignored = false
  for (const raw of patterns) {
    const neg = raw.startsWith('!')
    const p = (neg ? raw.slice(1) : raw).replace(/^\/+|\/+$/g, '')
    const re = new RegExp('^' + p.split('/').map((seg) => seg === '**' ? '.*' : seg.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]')).join('/') + '(/.*)?$')
    if (re.test(path)) ignored = !neg
  }
  return ignored
}

const dockerfile = parseDockerfile(read('Dockerfile'))
const ignore = read('.dockerignore').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'))
const containerConfigText = read('deploy/sluice.docker.yaml')
const containerConfig = loadConfigText(containerConfigText, 'deploy/sluice.docker.yaml')
const PROXY_PORT: number = containerConfig.listen.port
const ADMIN_PORT: number = containerConfig.admin.port
const runtime = dockerfile[dockerfile.length - 1]
const ins = (stage: Stage, op: string): Instruction[] => stage.instructions.filter((i) => i.op === op)
const cmd = execForm(ins(runtime, 'CMD').at(-1)?.args ?? '')
const CONFIG_PATH = cmd?.[cmd.indexOf('--config') + 1] ?? ''

test('deploy/sluice.docker.yaml is a valid config with a token-guarded admin port on all interfaces', () => {
  assert.deepEqual(configErrors(containerConfigText, 'deploy/sluice.docker.yaml'), [])
  assert.equal(containerConfig.admin.host, '0.0.0.0')
  assert.equal(containerConfig.admin.token, CONTAINER_ENV.SLUICE_ADMIN_TOKEN, 'the token comes from SLUICE_ADMIN_TOKEN')
  const withoutToken = configErrors(containerConfigText, 'deploy/sluice.docker.yaml', { ...CONTAINER_ENV, SLUICE_ADMIN_TOKEN: undefined })
  assert.ok(withoutToken.some((e) => /SLUICE_ADMIN_TOKEN/.test(e)), `an unset SLUICE_ADMIN_TOKEN must stop the start: ${withoutToken.join('; ')}`)
  assert.equal(containerConfig.listen.host, '0.0.0.0')
})

test('Dockerfile: multi-stage on node:22-slim, npm ci and build first, production dependencies at run time', () => {
  assert.ok(dockerfile.length >= 2, 'at least two stages')
  for (const s of dockerfile) assert.match(s.base, /^node:22(\.\d+)*-slim$/, `stage ${s.name ?? '?'} is based on node:22-slim`)
  const build = dockerfile[0]
  const runs = ins(build, 'RUN').map((i) => i.args).join('\n')
  assert.match(runs, /npm ci\b/)
  assert.match(runs, /npm run build\b/)
  const pkg = JSON.parse(read('package.json'))
  assert.ok(pkg.scripts.build, 'package.json has a build script')
  const runtimeRuns = ins(runtime, 'RUN').map((i) => i.args).join('\n')
  assert.match(runtimeRuns, /npm ci\b[^\n]*--omit=dev/, 'runtime installs production dependencies only')
  assert.match(runtimeRuns, /npm ci\b[^\n]*--ignore-scripts/, 'the prepare script (tsc) must not run without dev dependencies')
  assert.doesNotMatch(runtimeRuns, /npm (run build|install\b(?!.*--omit))/)
})

test('Dockerfile: every COPY source exists and is inside the build context; --from names a stage', () => {
  const stageNames = new Set(dockerfile.map((s) => s.name).filter(Boolean))
  const tsconfig = JSON.parse(read('tsconfig.json'))
  let copies = 0
  for (const stage of dockerfile) {
    for (const c of ins(stage, 'COPY').concat(ins(stage, 'ADD'))) {
      const { flags: f, rest } = flags(c.args)
      const parts = execForm(rest.join(' ')) ?? rest
      const sources = parts.slice(0, -1)
      assert.ok(sources.length > 0, `COPY on line ${c.line} has a source and a destination`)
      for (const src of sources) {
        copies++
        if (f.from) {
          assert.ok(stageNames.has(f.from), `COPY --from=${f.from} (line ${c.line}) names a stage`)
          // What the build stage produces: tsc writes <outDir>/<path under rootDir>.
          const rel = posix.relative('/app', posix.resolve('/app', src))
          assert.equal(tsconfig.compilerOptions.outDir, 'dist')
          assert.ok(rel.startsWith('dist/'), `line ${c.line}: copies build output (${src})`)
          assert.ok(exists(rel.replace(/^dist\//, '')), `line ${c.line}: ${src} is compiled from ${rel.replace(/^dist\//, '')}, which exists`)
        } else {
          assert.ok(exists(src), `line ${c.line}: ${src} exists in the repository`)
          assert.ok(!dockerIgnored(ignore, src.replace(/^\.\//, '').replace(/\/$/, '')), `line ${c.line}: ${src} is not excluded by .dockerignore`)
        }
      }
    }
  }
  assert.ok(copies >= 5)
  for (const p of ['node_modules', 'dist', '.git', 'test', 'bench', 'scratch']) assert.ok(dockerIgnored(ignore, p), `.dockerignore keeps ${p} out of the context`)
})

test('Dockerfile: the runtime stage runs as non-root, exposes and probes the config\'s ports, and reads the config from a volume', () => {
  const user = ins(runtime, 'USER').at(-1)?.args
  assert.ok(user && !/^(root|0)(:|$)/.test(user), `USER is non-root (${user})`)
  const exposed = ins(runtime, 'EXPOSE').flatMap((i) => i.args.split(/\s+/)).map((p) => Number(p.split('/')[0]))
  assert.deepEqual(exposed.sort(), [PROXY_PORT, ADMIN_PORT].sort())

  assert.ok(cmd, 'CMD uses the exec form, so node is PID 1 and gets SIGTERM itself')
  assert.equal(cmd[0], 'node')
  // node's flags (Sluice's V8 flags, src/node-flags.ts), then the package's bin
  const script = cmd.find((a) => !a.startsWith('-') && a !== 'node')!
  assert.deepEqual(cmd.slice(1, cmd.indexOf(script)), [...NODE_FLAGS], 'CMD passes Sluice\'s V8 flags')
  assert.equal(script, JSON.parse(read('package.json')).bin.sluice, 'CMD runs the package\'s bin')
  assert.ok(exists(script.replace(/^dist\//, '').replace(/\.js$/, '.ts')), `${script} is compiled from an existing source`)
  assert.equal(CONFIG_PATH, '/etc/sluice/sluice.yaml')

  const volumes = ins(runtime, 'VOLUME').flatMap((i) => execForm(i.args) ?? i.args.split(/\s+/))
  assert.ok(volumes.includes(posix.dirname(CONFIG_PATH)), `VOLUME ${posix.dirname(CONFIG_PATH)}`)
  const configCopy = ins(runtime, 'COPY').find((c) => c.args.trim().endsWith(` ${CONFIG_PATH}`))
  assert.ok(configCopy, 'a default config is copied to the config path')
  assert.match(configCopy.args, /deploy\/sluice\.docker\.yaml/)

  const hc = ins(runtime, 'HEALTHCHECK').at(-1)?.args ?? ''
  assert.match(hc, /CMD/)
  // `sluice health` reads the admin port from $SLUICE_CONFIG, the file CMD runs (no fixed port
  // that a mounted config could move away from); test/ops/review-proc.test.ts runs it.
  const hcArgv = execForm(hc.replace(/^.*?\bCMD\s+/s, ''))
  assert.deepEqual(hcArgv, ['node', JSON.parse(read('package.json')).bin.sluice, 'health'], `HEALTHCHECK runs \`sluice health\`: ${hc}`)
  assert.doesNotMatch(hc, /:\d+\/healthz/, 'no fixed admin port in the HEALTHCHECK')
  assert.equal(ins(runtime, 'ENV').map((i) => /SLUICE_CONFIG=(\S+)/.exec(i.args)?.[1]).find(Boolean), CONFIG_PATH, 'SLUICE_CONFIG names the config CMD runs')
  assert.doesNotMatch(hc, /\bcurl\b|\bwget\b/, 'node:22-slim has neither curl nor wget')
  const stopSignal = ins(runtime, 'STOPSIGNAL').at(-1)?.args ?? 'SIGTERM'
  assert.equal(stopSignal, 'SIGTERM')
})

// ---- docker-compose.yml ----
const compose = YAML.parse(read('docker-compose.yml'))
const services = compose.services as Record<string, any> // eslint-disable-line @typescript-eslint/no-explicit-any

interface Mount { source: string; target: string }
function mounts (svc: any): Mount[] { // eslint-disable-line @typescript-eslint/no-explicit-any
  return (svc.volumes ?? []).map((v: string | { source: string; target: string }) => {
    if (typeof v !== 'string') return { source: v.source, target: v.target }
    const [source, target] = v.split(':')
    return { source, target }
  })
}
function env (svc: any): Record<string, string> { // eslint-disable-line @typescript-eslint/no-explicit-any
  const e = svc.environment ?? {}
  if (Array.isArray(e)) return Object.fromEntries(e.map((x: string) => [x.split('=')[0], x.split('=').slice(1).join('=')]))
  return Object.fromEntries(Object.entries(e).map(([k, v]) => [k, String(v)]))
}
/** The host file or directory behind a container path, through the service's bind mounts. */
function hostPathOf (svc: any, containerPath: string): string | null { // eslint-disable-line @typescript-eslint/no-explicit-any
  for (const m of mounts(svc)) {
    if (containerPath === m.target) return m.source
    if (containerPath.startsWith(m.target + '/')) return m.source.replace(/\/$/, '') + '/' + containerPath.slice(m.target.length + 1)
  }
  return null
}
const portsOf = (svc: any): { host: string; container: number }[] => (svc.ports ?? []).map((p: string) => { // eslint-disable-line @typescript-eslint/no-explicit-any
  const parts = String(p).split(':')
  return { host: parts.slice(0, -1).join(':'), container: Number(parts.at(-1)) }
})

test('compose runs sluice, redis, the example origin, prometheus and grafana; every bind mount exists', () => {
  for (const s of ['sluice', 'redis', 'origin', 'prometheus', 'grafana']) assert.ok(services[s], `service ${s}`)
  for (const [name, svc] of Object.entries(services)) {
    for (const m of mounts(svc)) {
      if (m.source.startsWith('.') || m.source.startsWith('/')) assert.ok(exists(m.source), `${name}: ${m.source} exists`)
    }
    if (svc.build) {
      const ctx = typeof svc.build === 'string' ? svc.build : svc.build.context
      assert.ok(exists(ctx, typeof svc.build === 'object' && svc.build.dockerfile ? svc.build.dockerfile : 'Dockerfile'), `${name}: build context has its Dockerfile`)
    }
  }
})

test('compose: sluice gets the config path, ports, token and addresses its config expects', () => {
  const s = services.sluice
  assert.equal(hostPathOf(s, CONFIG_PATH), './deploy/sluice.docker.yaml', 'the container config is mounted at the CMD\'s --config path')
  const ports = portsOf(s)
  assert.ok(ports.some((p) => p.container === PROXY_PORT), `publishes ${PROXY_PORT}`)
  const admin = ports.find((p) => p.container === ADMIN_PORT)
  assert.ok(admin, `publishes ${ADMIN_PORT}`)
  assert.match(admin.host, /^127\.0\.0\.1:/, 'the admin port is published on the host\'s loopback only')
  const e = env(s)
  assert.ok(e.SLUICE_ADMIN_TOKEN, 'SLUICE_ADMIN_TOKEN is set')
  // Every ${VAR} of the container config without a default is provided.
  for (const m of containerConfigText.matchAll(/\$\{(\w+)\}/g)) assert.ok(e[m[1]] !== undefined, `compose sets ${m[1]}`)
  const redis = new URL(e.REDIS_URL)
  assert.ok(services[redis.hostname], `REDIS_URL points at the ${redis.hostname} service`)
  const origin = new URL(e.ORIGIN_URL)
  assert.ok(services[origin.hostname], `ORIGIN_URL points at the ${origin.hostname} service`)
  assert.equal(env(services[origin.hostname]).PORT, origin.port, 'the origin listens on the port ORIGIN_URL names')
  const grace = /^(\d+)s$/.exec(String(s.stop_grace_period))
  assert.ok(grace && Number(grace[1]) * 1000 > containerConfig.shutdownGraceMs, 'stop_grace_period outlasts shutdownGraceMs')
})

test('compose: the origin runs examples/origin.mjs on all interfaces', () => {
  const o = services.origin
  const command: string[] = Array.isArray(o.command) ? o.command : String(o.command).split(/\s+/)
  const script = command.find((c) => c.endsWith('.mjs'))
  assert.ok(script)
  const hostFile = hostPathOf(o, posix.resolve(o.working_dir ?? '/', script))
  assert.equal(hostFile, './examples/origin.mjs')
  assert.ok(exists(hostFile))
  assert.equal(env(o).HOST, '0.0.0.0', 'reachable from the sluice container')
  assert.match(read('examples/origin.mjs'), /process\.env\.HOST/)
})

test('compose: prometheus scrapes sluice\'s admin port and loads the alert rules', () => {
  const p = services.prometheus
  const cfgArg: string = (p.command ?? []).find((a: string) => a.startsWith('--config.file='))
  const cfgPath = cfgArg ? cfgArg.split('=')[1] : '/etc/prometheus/prometheus.yml'
  const host = hostPathOf(p, cfgPath)
  assert.equal(host, './deploy/prometheus/prometheus.yml')
  const prom = YAML.parse(read(host))
  const job = prom.scrape_configs.find((j: { job_name: string }) => j.job_name === 'sluice')
  assert.ok(job, 'a scrape job named sluice (the alert SluiceDown uses up{job="sluice"})')
  assert.equal(job.metrics_path ?? '/metrics', '/metrics')
  assert.deepEqual(job.static_configs[0].targets, [`sluice:${ADMIN_PORT}`])
  for (const rf of prom.rule_files) {
    const inContainer = posix.resolve(posix.dirname(cfgPath), rf)
    assert.equal(hostPathOf(p, inContainer), './deploy/prometheus/alerts.yml', `rule file ${rf} is mounted`)
  }
})

test('compose: grafana provisions the prometheus datasource and the Sluice dashboard', () => {
  const g = services.grafana
  const dsDir = hostPathOf(g, '/etc/grafana/provisioning/datasources')
  const dbDir = hostPathOf(g, '/etc/grafana/provisioning/dashboards')
  assert.equal(dsDir, './deploy/grafana/provisioning/datasources')
  assert.equal(dbDir, './deploy/grafana/provisioning/dashboards')
  const ds = YAML.parse(read(dsDir, 'prometheus.yml'))
  const prom = ds.datasources.find((d: { type: string }) => d.type === 'prometheus')
  assert.ok(prom)
  const url = new URL(prom.url)
  assert.ok(services[url.hostname], 'the datasource points at the prometheus service')
  assert.equal(url.port, '9090')
  const provider = YAML.parse(read(dbDir, 'sluice.yml')).providers[0]
  const dashDir = hostPathOf(g, provider.options.path)
  assert.equal(dashDir, './deploy/grafana/dashboards')
  assert.ok(exists(dashDir, 'sluice.json'))
  const home = env(g).GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH
  if (home) assert.ok(exists(hostPathOf(g, home) ?? ''), 'the home dashboard path is mounted')
})
