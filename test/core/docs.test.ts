// The docs tell the truth: generated references are fresh, and every error code, metric and
// admin endpoint appears in the README.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
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

test('every admin endpoint is listed in the README', () => {
  for (const ep of ['/healthz', '/readyz', '/metrics', '/admin/purge', '/admin/reload', '/admin/config', '/admin/upstreams']) {
    assert.ok(readme.includes('`' + ep) || readme.includes(ep + '`') || readme.includes(' ' + ep), `${ep} missing`)
  }
})
