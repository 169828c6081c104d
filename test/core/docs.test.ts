// The docs tell the truth: generated references are fresh, and every error code, metric,
// admin endpoint and CLI command and option appears in the README.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync, readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { renderConfigReference, renderJsonSchema } from '../../src/config/reference.js'
import { ERRORS } from '../../src/errors.js'
import { createMetrics } from '../../src/observability/metrics.js'

const readme = readFileSync('README.md', 'utf8')

test('docs/configuration.md and config/sluice.schema.json are generated from the schema and fresh', () => {
  assert.equal(readFileSync('docs/configuration.md', 'utf8'), renderConfigReference(), 'stale: run `npm run schema`')
  assert.equal(readFileSync('config/sluice.schema.json', 'utf8'), renderJsonSchema(), 'stale: run `npm run schema`')
})

test('every error code is listed in the README with its status', () => {
  for (const [code, spec] of Object.entries(ERRORS)) {
    const row = readme.split('\n').find((l) => l.startsWith('| `' + code + '`'))
    assert.ok(row, `${code} is missing from README.md`)
    assert.match(row!, new RegExp(`\\b${spec.status}\\b`), `${code}: README row does not give status ${spec.status}`)
  }
})

test('every sluice_ metric is listed in the README', async () => {
  const m = createMetrics({ processMetrics: false })
  const names = (await m.registry.getMetricsAsJSON()).map((x) => x.name).filter((n) => n.startsWith('sluice_'))
  assert.ok(names.length >= 15)
  for (const n of names) assert.ok(readme.includes('`' + n + '`'), `${n} is missing from README.md`)
})

/** The README's table under `## heading`: its rows (lines starting with `| `), header and separator left out. */
function tableRows (heading: string): string[] {
  const start = readme.indexOf('\n## ' + heading + '\n')
  assert.ok(start >= 0, `README has a "## ${heading}" section`)
  const end = readme.indexOf('\n## ', start + 1)
  return readme.slice(start, end < 0 ? undefined : end).split('\n').filter((l) => l.startsWith('| ') && !l.startsWith('|---')).slice(1)
}

/** Every .ts file under src/, as text. */
function sources (dir = 'src'): string {
  let out = ''
  for (const name of readdirSync(dir)) {
    const p = join(dir, name)
    if (statSync(p).isDirectory()) out += sources(p)
    else if (name.endsWith('.ts')) out += readFileSync(p, 'utf8') + '\n'
  }
  return out
}

test('every admin endpoint is listed in the README with its method', () => {
  // The routes src/admin.ts registers (app.get('/x'), admin.post('/admin/y')), and the asset
  // paths it registers in a loop.
  const src = readFileSync('src/admin.ts', 'utf8')
  const routes = [...src.matchAll(/\b(?:app|admin)\.(get|post|put|delete|patch)\('(\/[^']*)'/g)].map((m) => `${m[1].toUpperCase()} ${m[2]}`)
  for (const m of src.matchAll(/\['(\/admin\/assets\/[^']+)'/g)) routes.push(`GET ${m[1]}`)
  assert.ok(routes.length >= 13, `${routes.length} admin routes found in src/admin.ts`)
  const rows = tableRows('Admin port')
  for (const r of routes) {
    assert.ok(rows.some((row) => row.split(' | ')[0].includes('`' + r)), `${r} is missing from the README's admin endpoint table`)
  }
})

test('every CLI command and option is in the README, and the README names no other command', () => {
  const src = readFileSync('src/cli.ts', 'utf8')
  const usage = /const USAGE = `([\s\S]*?)`/.exec(src)?.[1] ?? ''
  const commands = [...usage.matchAll(/^ {2}sluice ((?:\[run\])|[a-z]+(?: [a-z]+)?)(?= )/gm)].map((m) => m[1])
  assert.ok(commands.length >= 7, `${commands.length} commands in the usage text`)
  const rows = tableRows('Command line')
  const documented = rows.map((row) => /^\| `sluice ((?:\[run\])|[a-z]+(?: diff)?)/.exec(row)?.[1]).filter((c) => c !== undefined)
  for (const c of commands) assert.ok(documented.includes(c), `sluice ${c} is in the usage text but not in the README's command table`)
  for (const c of documented) assert.ok(commands.includes(c!), `the README documents sluice ${c}, which the usage text does not list`)
  // Every option parseArgs accepts, long and short, is named in the README's Command line section.
  const options = /options: \{([\s\S]*?)\n {4}\}/.exec(src)?.[1] ?? ''
  const section = readme.slice(readme.indexOf('\n## Command line\n'), readme.indexOf('\n## Configuration\n'))
  const names = [...options.matchAll(/^\s+(\w+): \{([^}]*)\}/gm)]
  assert.ok(names.length >= 7, `${names.length} options found in src/cli.ts`)
  for (const [, name, spec] of names) {
    assert.ok(section.includes('`--' + name) || section.includes(' --' + name), `--${name} is not documented under "Command line"`)
    const short = /short: '(\w)'/.exec(spec)?.[1]
    if (short !== undefined) assert.match(section, new RegExp('(^|[\\s`(])-' + short + '[\\s`,)]'), `-${short} (--${name}) is not documented under "Command line"`)
  }
})

test('every log line the README says to alert on is one Sluice writes, at the level it says', () => {
  const src = sources()
  const rows = readme.split('\n').filter((l) => /^\| (warn|error|fatal) \| `/.test(l))
  assert.ok(rows.length >= 10, `${rows.length} log lines listed`)
  for (const row of rows) {
    const [, level, msg] = /^\| (\w+) \| `([^`]+)`/.exec(row)!
    // A message with an interpolated part is documented with <...> in its place.
    const parts = msg.split(/<[^>]+>/).filter((p) => p.length > 0)
    const call = new RegExp('\\.' + level + '\\([^\\n]*' + parts.map((p) => p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('[^\\n]*'))
    // The logger writes its own `log lines dropped` note as a raw JSON line at level 40 (warn).
    const note = level === 'warn' && src.split('\n').some((l) => l.includes('"level":40') && parts.every((p) => l.includes(p)))
    assert.ok(call.test(src) || note, `"${msg}" is not a ${level} line in src/`)
  }
})
