// k6 is not installable here, so the scripts are checked without it: each one parses as an
// ES module (TypeScript's parser, no type checking) and imports only k6 modules or files that
// exist; then each is loaded in Node against small stand-ins for the k6 modules, so that its
// real `options` (scenarios, thresholds) and exported functions can be checked, and the
// Cache-Status reader is run on real header values.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, relative } from 'node:path'
import { pathToFileURL } from 'node:url'
import ts from 'typescript'
import { repo, exists } from './ops-helpers.js'

const SCRIPTS = ['cache-hit.js', 'mixed-read-write.js', 'rate-limit.js', 'breaker.js', 'soak.js']
const K6_MODULES = new Set(['k6', 'k6/http', 'k6/metrics', 'k6/execution', 'k6/data', 'k6/crypto', 'k6/encoding', 'k6/timers', 'k6/ws', 'k6/net/grpc'])
/** Scripts whose traffic should mostly hit the cache: they keep a cache_hits > 0.5 threshold. */
const HITS_EXPECTED = ['cache-hit.js', 'mixed-read-write.js', 'breaker.js', 'soak.js']

function jsFiles (dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => e.isDirectory() ? jsFiles(join(dir, e.name)) : e.name.endsWith('.js') ? [join(dir, e.name)] : [])
}

interface Parsed { imports: string[]; exports: Set<string>; hasDefault: boolean }

/** Parses a file as an ES module; fails on any syntax error. */
function parseModule (file: string): Parsed {
  const text = readFileSync(file, 'utf8')
  const out = ts.transpileModule(text, { fileName: file, reportDiagnostics: true, compilerOptions: { allowJs: true, module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 } })
  const errors = (out.diagnostics ?? []).map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n'))
  assert.deepEqual(errors, [], `${file} parses`)
  const sf = ts.createSourceFile(file, text, ts.ScriptTarget.ES2022, true, ts.ScriptKind.JS)
  const imports: string[] = []
  const exports = new Set<string>()
  let hasDefault = false
  let esm = false
  for (const s of sf.statements) {
    if (ts.isImportDeclaration(s)) { esm = true; imports.push((s.moduleSpecifier as ts.StringLiteral).text) }
    const mods = ts.canHaveModifiers(s) ? ts.getModifiers(s) ?? [] : []
    const exported = mods.some((m) => m.kind === ts.SyntaxKind.ExportKeyword)
    const isDefault = mods.some((m) => m.kind === ts.SyntaxKind.DefaultKeyword)
    if (exported) esm = true
    if (exported && isDefault) hasDefault = true
    else if (exported && (ts.isFunctionDeclaration(s) || ts.isClassDeclaration(s)) && s.name) exports.add(s.name.text)
    else if (exported && ts.isVariableStatement(s)) for (const d of s.declarationList.declarations) if (ts.isIdentifier(d.name)) exports.add(d.name.text)
    if (ts.isExportAssignment(s)) { esm = true; hasDefault = true }
    if (ts.isExportDeclaration(s)) esm = true
    // CommonJS has no place in a k6 script.
    if (ts.isExpressionStatement(s) && /^(module\.exports|exports\.)/.test(s.expression.getText(sf))) assert.fail(`${file} uses CommonJS`)
  }
  assert.ok(esm, `${file} is an ES module (import/export)`)
  return { imports, exports, hasDefault }
}

test('every k6 script and library parses as an ES module and imports only k6 modules or files that exist', () => {
  const files = jsFiles(repo('k6'))
  for (const s of SCRIPTS) assert.ok(exists('k6', s), `k6/${s} exists`)
  assert.ok(files.length >= SCRIPTS.length + 1)
  for (const f of files) {
    const p = parseModule(f)
    for (const spec of p.imports) {
      if (spec.startsWith('.')) assert.ok(exists(relative(repo(), join(dirname(f), spec))), `${relative(repo(), f)} imports ${spec}, which exists`)
      else assert.ok(K6_MODULES.has(spec), `${relative(repo(), f)} imports ${spec}: only k6 modules (k6 runs no npm packages)`)
    }
    if (SCRIPTS.includes(relative(repo('k6'), f))) assert.ok(p.exports.has('options'), `${relative(repo(), f)} exports options`)
  }
})

// ---- the scripts loaded against stand-ins for k6 ----
const work = mkdtempSync(join(tmpdir(), 'sluice-k6-'))
after(() => rmSync(work, { recursive: true, force: true }))
const STUBS: Record<string, string> = {
  k6: 'export function check (v, sets) { for (const f of Object.values(sets)) f(v); return true }\nexport function sleep () {}\nexport function group (_n, f) { return f() }\nexport default {}',
  'k6/http': `const calls = globalThis.__k6calls = []
const res = (method, url, body, params) => { calls.push({ method, url, body, params }); return globalThis.__k6response ?? { status: 200, headers: {}, body: '' } }
const http = {
  get: (u, p) => res('GET', u, null, p), post: (u, b, p) => res('POST', u, b, p), put: (u, b, p) => res('PUT', u, b, p), del: (u, b, p) => res('DELETE', u, b, p),
  request: (m, u, b, p) => res(m, u, b, p), batch: (reqs) => reqs.map(() => res('GET')),
  setResponseCallback: (cb) => { globalThis.__k6callback = cb }, expectedStatuses: (...s) => ({ expected: s })
}
export default http
export const { get, post } = http`,
  'k6/metrics': `class Metric { constructor (name) { this.name = name; this.values = []; (globalThis.__k6metrics ??= {})[name] = this } add (v) { this.values.push(v) } }
export class Rate extends Metric {}
export class Counter extends Metric {}
export class Trend extends Metric {}
export class Gauge extends Metric {}`
}
for (const [name, code] of Object.entries(STUBS)) writeFileSync(join(work, `${name.replace('/', '-')}.mjs`), code)
cpSync(repo('k6'), join(work, 'k6'), { recursive: true })
// Point the k6 imports at the stand-ins.
for (const f of jsFiles(join(work, 'k6'))) {
  const text = readFileSync(f, 'utf8').replace(/from\s+'(k6(?:\/[\w/]+)?)'/g, (_m, spec: string) => {
    assert.ok(STUBS[spec], `${f}: no stand-in for ${spec}`)
    return `from '${pathToFileURL(join(work, `${spec.replace('/', '-')}.mjs`)).href}'`
  })
  writeFileSync(f.replace(/\.js$/, '.mjs'), text.replace(/from '(\.[^']+)\.js'/g, "from '$1.mjs'"))
}
const g = globalThis as Record<string, unknown>
g.__ENV = {}
g.__VU = 1
g.__ITER = 0
async function load (script: string): Promise<Record<string, any>> { // eslint-disable-line @typescript-eslint/no-explicit-any
  return import(pathToFileURL(join(work, 'k6', script.replace(/\.js$/, '.mjs'))).href)
}

test('every script keeps the shared thresholds: p95 < 500 ms and under 1% failed requests', async () => {
  for (const s of SCRIPTS) {
    const m = await load(s)
    const th = m.options.thresholds as Record<string, string[]>
    const keys = Object.keys(th)
    const duration = keys.filter((k) => k === 'http_req_duration' || k.startsWith('http_req_duration{'))
    const failed = keys.filter((k) => k === 'http_req_failed' || k.startsWith('http_req_failed{'))
    assert.ok(duration.length > 0 && duration.every((k) => th[k].includes('p(95)<500')), `${s}: http_req_duration p(95)<500 (${JSON.stringify(th)})`)
    assert.ok(failed.length > 0 && failed.every((k) => th[k].includes('rate<0.01')), `${s}: http_req_failed rate<0.01`)
    if (HITS_EXPECTED.includes(s)) {
      const hits = keys.filter((k) => k === 'cache_hits' || k.startsWith('cache_hits{'))
      assert.ok(hits.length > 0 && hits.every((k) => th[k].includes('rate>0.5')), `${s}: cache_hits rate>0.5`)
    }
  }
})

test('every scenario runs a function the script exports, and each script runs once against a stand-in response', async () => {
  for (const s of SCRIPTS) {
    const m = await load(s)
    const scenarios = m.options.scenarios as Record<string, { executor: string; exec?: string }>
    assert.ok(Object.keys(scenarios).length > 0, `${s} has scenarios`)
    for (const [name, sc] of Object.entries(scenarios)) {
      assert.match(sc.executor, /^(constant-vus|ramping-vus|constant-arrival-rate|ramping-arrival-rate|per-vu-iterations|shared-iterations|externally-controlled)$/, `${s}/${name} executor`)
      const fn = m[sc.exec ?? 'default']
      assert.equal(typeof fn, 'function', `${s}/${name} runs ${sc.exec ?? 'default'}, which the script exports`)
      g.__k6response = { status: 200, headers: { 'Cache-Status': 'sluice; hit; ttl=30', Age: '1' }, body: '{}' }
      fn(typeof m.setup === 'function' ? m.setup() : undefined)
    }
  }
  const calls = g.__k6calls as { url: string }[]
  assert.ok(calls.length > 0 && calls.every((c) => /^http:\/\/localhost:(8080|9901)\//.test(c.url)), 'requests go to the compose stack by default')
})

test('a cache hit is read from Cache-Status: only Sluice\'s own `hit` member counts', async () => {
  const lib = await load('lib/options.js')
  const hit = (v?: string) => lib.isCacheHit({ headers: v === undefined ? {} : { 'Cache-Status': v } })
  assert.equal(hit('sluice; hit'), true)
  assert.equal(hit('sluice; hit; ttl=12'), true)
  assert.equal(hit('cdn; fwd=miss, sluice; hit; ttl=3'), true)
  assert.equal(hit('sluice; fwd=miss; stored'), false)
  assert.equal(hit('sluice; fwd=stale; fwd-status=503; detail=SLUICE_ERR_CIRCUIT_OPEN'), false)
  assert.equal(hit('sluice; fwd=bypass; detail=METHOD'), false)
  assert.equal(hit('othercache; hit'), false)
  assert.equal(hit(undefined), false)
  const rate = (g.__k6metrics as Record<string, { values: boolean[] }>).cache_hits
  assert.ok(rate, 'the custom Rate is named cache_hits')
})

test('k6/README.md says how to run every script against the compose stack', () => {
  const readme = readFileSync(repo('k6/README.md'), 'utf8')
  assert.match(readme, /docker compose up/)
  for (const s of SCRIPTS) assert.match(readme, new RegExp(`k6 run [^\\n]*k6/${s.replace('.', '\\.')}`), `README runs ${s}`)
})
