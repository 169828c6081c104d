// Operator-facing checks of the `sluice` CLI and the ops assets, from an operations review:
//  - `sluice validate FILE` checks FILE (not the default config in its place);
//  - a command line the CLI cannot parse (an unknown flag, --config without a value) is a
//    usage error: exit 2, the message and the usage on stderr, no stack trace;
//  - `sluice schema` accepts what the loader accepts: the shipped configs, whose values use
//    ${VAR} references, pass it as written (an editor with the schema marks nothing);
//  - the k6 scripts run against the compose stack (deploy/sluice.docker.yaml) without its
//    per-client limit turning their load into 429s: every k6 VU is the same client address.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { cliCommand } from '../helpers/cli.js'
import { repo, read, CONTAINER_ENV } from './ops-helpers.js'
import { parseConfig } from '../../src/config/load.js'
import Ajv from 'ajv'
import YAML from 'yaml'
import { compile } from '../../src/config/compile.js'

function sluice (args: string[], env: Record<string, string | undefined> = {}): { status: number | null, stdout: string, stderr: string } {
  const [cmd, argv] = cliCommand(args)
  const base = { ...process.env }
  delete base.SLUICE_CONFIG
  const r = spawnSync(cmd, argv, { cwd: repo(), env: { ...base, ...env }, encoding: 'utf8', timeout: 60000 })
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}

const GOOD = `upstreams:
  api: { url: "http://127.0.0.1:3000" }
routes:
  - name: all
    match: { pathPrefix: / }
    upstream: api
`
// listen.port out of range on line 2; the route names an upstream that does not exist.
const BAD = `listen:
  port: 99999
upstreams:
  api: { url: "http://127.0.0.1:3000" }
routes:
  - name: all
    match: { pathPrefix: / }
    upstream: api
`

test('review-ops: `sluice validate FILE` checks FILE, not the default config', { timeout: 120000 }, (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-validate-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const bad = join(dir, 'bad.yaml')
  const good = join(dir, 'good.yaml')
  writeFileSync(bad, BAD)
  writeFileSync(good, GOOD)

  const b = sluice(['validate', bad])
  assert.equal(b.status, 1, `a bad file named by position fails: ${b.stdout}${b.stderr}`)
  assert.equal(b.stdout, '', 'errors go to stderr only')
  assert.match(b.stderr, new RegExp(`^${bad.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:2:\\d+ listen\\.port: `, 'm'), b.stderr)

  const g = sluice(['validate', good])
  assert.equal(g.status, 0, g.stderr)
  assert.match(g.stdout, new RegExp(`^${good.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: OK \\(1 routes, 1 upstreams`), g.stdout)

  // The same file twice is fine; two different files is a usage error.
  assert.equal(sluice(['validate', '--config', good, good]).status, 0)
  const two = sluice(['validate', '--config', good, bad])
  assert.equal(two.status, 2, two.stderr)
  assert.match(two.stderr, /two config files/)
  const three = sluice(['validate', good, bad])
  assert.equal(three.status, 2, three.stderr)
})

test('review-ops: an unknown flag or a flag without its value is a usage error (exit 2, usage on stderr, no stack)', { timeout: 120000 }, () => {
  for (const args of [['validate', '--bogus'], ['--conifg', 'x.yaml'], ['validate', '--config']]) {
    const r = sluice(args)
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`)
    assert.equal(r.stdout, '')
    assert.match(r.stderr, /^sluice: /, r.stderr)
    assert.match(r.stderr, /usage:\n/, r.stderr)
    assert.doesNotMatch(r.stderr, /\n\s+at /, `no stack trace: ${r.stderr}`)
  }
  const h = sluice(['validate', '--help'])
  assert.equal(h.status, 0)
  assert.match(h.stdout, /^usage:\n/)
  assert.equal(h.stderr, '')
})

// ---- k6 scripts against the container config ----

/** Copies k6/ into `dir` with its k6 imports pointed at stand-ins that record each request. */
function k6WithStandIns (dir: string): void {
  const stubs: Record<string, string> = {
    k6: 'export function check (v, sets) { for (const f of Object.values(sets)) f(v); return true }\nexport function sleep () {}\nexport function group (_n, f) { return f() }\nexport default {}',
    'k6/http': `const res = (method, url) => { globalThis.__k6calls.push({ method, url }); return { status: 200, headers: { 'Cache-Status': 'sluice; hit', Age: '1', 'Retry-After': '1', 'Ratelimit-Policy': 'x', Ratelimit: 'x' }, body: '' } }
const http = { get: (u) => res('GET', u), post: (u) => res('POST', u), put: (u) => res('PUT', u), del: (u) => res('DELETE', u), request: (m, u) => res(m, u),
  setResponseCallback () {}, expectedStatuses: (...s) => ({ expected: s }) }
export default http`,
    'k6/metrics': 'class M { add () {} }\nexport class Rate extends M {}\nexport class Counter extends M {}\nexport class Trend extends M {}\nexport class Gauge extends M {}'
  }
  for (const [name, code] of Object.entries(stubs)) writeFileSync(join(dir, `${name.replace('/', '-')}.mjs`), code)
  cpSync(repo('k6'), join(dir, 'k6'), { recursive: true })
  const walk = (d: string): string[] => readdirSync(d, { withFileTypes: true }).flatMap((e) => e.isDirectory() ? walk(join(d, e.name)) : e.name.endsWith('.js') ? [join(d, e.name)] : [])
  for (const f of walk(join(dir, 'k6'))) {
    const text = readFileSync(f, 'utf8')
      .replace(/from\s+'(k6(?:\/[\w/]+)?)'/g, (_m, spec: string) => `from '${pathToFileURL(join(dir, `${spec.replace('/', '-')}.mjs`)).href}'`)
      .replace(/from '(\.[^']+)\.js'/g, "from '$1.mjs'")
    writeFileSync(f.replace(/\.js$/, '.mjs'), text)
  }
}

test('review-ops: only k6/rate-limit.js drives a per-client-limited route of the compose config faster than its limit', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-k6-review-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  k6WithStandIns(dir)
  const g = globalThis as Record<string, unknown>
  g.__ENV = {}
  g.__VU = 1
  g.__ITER = 0
  const loaded = parseConfig(read('deploy/sluice.docker.yaml'), 'deploy/sluice.docker.yaml', CONTAINER_ENV)
  const snap = compile(loaded.config, loaded.raw, 'deploy/sluice.docker.yaml')
  const limitOf = (method: string, url: string): { requestsPerSecond: number, burst: number } | null => {
    const u = new URL(url)
    if (u.port !== '8080') return null // the admin port
    const route = snap.router.match('localhost:8080', method, u.pathname)
    return route?.rateLimit?.perClient ?? null
  }
  const ITERATIONS = 400
  let rateLimitScriptLimited = 0
  for (const script of ['cache-hit', 'mixed-read-write', 'rate-limit', 'breaker', 'soak']) {
    const m = await import(pathToFileURL(join(dir, 'k6', `${script}.mjs`)).href)
    g.__k6calls = []
    const data = typeof m.setup === 'function' ? m.setup() : undefined
    for (const [name, sc] of Object.entries(m.options.scenarios as Record<string, { executor: string, exec?: string, rate?: number, timeUnit?: string, stages?: { target: number }[] }>)) {
      g.__k6calls = []
      for (let i = 0; i < ITERATIONS; i++) m[sc.exec ?? 'default'](data)
      const calls = g.__k6calls as { method: string, url: string }[]
      const limited = calls.filter((c) => limitOf(c.method, c.url) !== null)
      if (script === 'rate-limit') { rateLimitScriptLimited += limited.length; continue }
      if (limited.length === 0) continue
      // All VUs are one client: a scenario may reach a limited route only at a bounded rate below the limit.
      const limit = Math.min(...limited.map((c) => limitOf(c.method, c.url)!.requestsPerSecond))
      const perSecond = /arrival-rate$/.test(sc.executor)
        ? Math.max(sc.rate ?? 0, ...(sc.stages ?? []).map((s) => s.target)) / (sc.timeUnit === undefined || sc.timeUnit === '1s' ? 1 : Number.parseInt(sc.timeUnit) || 1)
        : Infinity
      const toLimited = perSecond * limited.length / calls.length
      assert.ok(toLimited <= limit, `k6/${script}.js scenario ${name} sends ${Number.isFinite(toLimited) ? `about ${toLimited.toFixed(0)}/s` : 'an unbounded rate'} from one client to ${limited[0].url}, a route limited to ${limit}/s per client: its thresholds fail on 429s`)
    }
  }
  assert.ok(rateLimitScriptLimited > 0, 'k6/rate-limit.js reaches a route with a per-client limit')
})

test('review-ops: `sluice schema` accepts the shipped configs as written, ${VAR} values included, and still refuses a bad value', { timeout: 120000 }, () => {
  const out = sluice(['schema'])
  assert.equal(out.status, 0, out.stderr)
  const schema = JSON.parse(out.stdout)
  // ajv comes with fastify; its CommonJS export is the class itself.
  const AjvClass = ((Ajv as unknown as { default?: unknown }).default ?? Ajv) as new (o: object) => { compile (s: object): ((d: unknown) => boolean) & { errors?: unknown[] | null } }
  const validate = new AjvClass({ strict: false, allErrors: true }).compile(schema)
  for (const file of ['config/sluice.yaml', 'deploy/sluice.docker.yaml']) {
    const text = read(file)
    assert.match(text, /yaml-language-server: \$schema=/, `${file} points editors at the schema`)
    assert.ok(parseConfig(text, file, CONTAINER_ENV).config, `${file} loads`)
    const ok = validate(YAML.parse(text))
    assert.ok(ok, `${file} as written fails the editor schema: ${JSON.stringify(validate.errors?.slice(0, 3))}`)
  }
  // The references do not switch the checks off: a literal out of range, a word where a number
  // goes, an unknown log level and a misspelt reference are still errors.
  const base = YAML.parse(read('deploy/sluice.docker.yaml'))
  for (const [path, value] of [[['listen', 'port'], 99999], [['listen', 'port'], 'eighty'], [['log', 'level'], 'loud'], [['listen', 'port'], '$SLUICE_PORT']] as const) {
    const doc = structuredClone(base)
    doc[path[0]][path[1]] = value
    assert.equal(validate(doc), false, `${path.join('.')}: ${JSON.stringify(value)} is refused`)
  }
})
