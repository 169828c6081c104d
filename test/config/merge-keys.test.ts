// YAML merge keys (`<<: *anchor`, YAML 1.1, as docker-compose and Kubernetes users write them)
// and top-level `x-` keys that only hold anchors: a merged value loads as if written in place,
// and a mistake in it names a real line of the file and the key path where it is used.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { parseConfig } from '../../src/config/load.js'
import { configIssues } from '../helpers/config-issues.js'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { startTestGateway, getText } from '../helpers/gateway.js'

let origin: Origin
before(async () => { origin = await startOrigin() })
after(async () => { await origin.close() })

const merged = (url: string, timeoutMs = '5000') => `listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0 }
x-upstream-defaults: &updefaults
  timeoutMs: ${timeoutMs}
  connectTimeoutMs: 700
upstreams:
  a:
    <<: *updefaults
    url: ${url}
  b: { <<: *updefaults, url: "${url}", connectTimeoutMs: 900 }
  c:
    connectTimeoutMs: 800
    <<: *updefaults
    url: ${url}
routes:
  - name: all
    match: { pathPrefix: / }
    upstream: a
`

test('a merged upstream loads with the merged values, and a gateway started from it proxies', async (t) => {
  const tg = await startTestGateway(merged(origin.url))
  t.after(() => tg.close())
  const ups = tg.gw.holder.current().config.upstreams
  assert.equal(ups.a.timeoutMs, 5000)
  assert.equal(ups.a.connectTimeoutMs, 700)
  assert.equal(ups.a.url, origin.url)
  // No key named << and no x- key reaches the checked config.
  assert.deepEqual(Object.keys(ups).sort(), ['a', 'b', 'c'])
  assert.equal('<<' in ups.a, false)
  assert.equal('x-upstream-defaults' in tg.gw.holder.current().config, false)
  const r = await getText(tg.url, '/merged')
  assert.equal(r.status, 200)
  assert.equal(r.body, 'origin GET /merged')
})

test('a key written beside << wins over the merged one, before or after it', () => {
  const { config } = parseConfig(merged('http://127.0.0.1:1'), 'test.yaml', {})
  assert.equal(config.upstreams.b.connectTimeoutMs, 900)
  assert.equal(config.upstreams.b.timeoutMs, 5000)
  assert.equal(config.upstreams.c.connectTimeoutMs, 800)
  assert.equal(config.upstreams.c.timeoutMs, 5000)
})

test('a bad merged value names the line it is written on and the key path of each use', () => {
  const issues = configIssues(merged('http://127.0.0.1:1', '-1'))
  // timeoutMs: -1 is written on line 4 (in the anchor); a, b and c each use it.
  assert.deepEqual(issues.sort(), [
    'test.yaml:4:14 upstreams.a.timeoutMs: expected integer >= 1',
    'test.yaml:4:14 upstreams.b.timeoutMs: expected integer >= 1',
    'test.yaml:4:14 upstreams.c.timeoutMs: expected integer >= 1'
  ])
})

test('an unknown key that came through << names its line in the anchor and the key path of the use', () => {
  const yaml = `x-d: &d { timeoutMs: 5000, timoutMs: 1 }
upstreams:
  api:
    <<: *d
    url: http://127.0.0.1:1
routes:
  - name: r
    upstream: api
`
  assert.deepEqual(configIssues(yaml), ['test.yaml:1:28 upstreams.api.timoutMs: unknown key (did you mean timeoutMs?)'])
})

test('a ${VAR} in a merged value: its error says so, and a number where a string is wanted stays the text', () => {
  const yaml = `x-d: &d { timeoutMs: "\${T}" }
upstreams:
  api:
    <<: *d
    url: http://127.0.0.1:1
routes:
  - name: r
    upstream: api
`
  assert.deepEqual(configIssues(yaml, { T: 'soon' }), ['test.yaml:1:22 upstreams.api.timeoutMs: expected integer >= 1, got "soon" (from ${T})'])
  const pw = `x-r: &r
  password: \${PW}
redis:
  url: redis://127.0.0.1:1
  <<: *r
upstreams:
  api: { url: http://127.0.0.1:1 }
routes:
  - name: r
    upstream: api
`
  assert.equal(parseConfig(pw, 'test.yaml', { PW: '1234' }).config.redis.password, '1234')
})

test('an unset ${VAR} under a top-level x- key nothing uses is not an error; the same block merged somewhere is', () => {
  const yaml = (use: string) => `x-prod: &prod
  url: \${PROD_ORIGIN}
  timeoutMs: 5000
x-staging:
  redis: { url: "redis://\${STAGING_REDIS}" }
  list: [ "\${STAGING_A}", { b: "\${STAGING_B}" } ]
upstreams:
  api:
    ${use}
routes:
  - name: r
    upstream: api
`
  // Neither block is used: the config loads without PROD_ORIGIN or any STAGING_ variable.
  assert.equal(parseConfig(yaml('url: http://127.0.0.1:1'), 'test.yaml', {}).config.upstreams.api.url, 'http://127.0.0.1:1')
  // x-prod merged into the upstream: its unset variable is an error again, at its line in the
  // anchor and the key path where it is used.
  assert.deepEqual(configIssues(yaml('<<: *prod'), {}), ['test.yaml:2:8 upstreams.api.url: environment variable PROD_ORIGIN is not set (write ${PROD_ORIGIN:-default} to give a default)'])
  assert.equal(parseConfig(yaml('<<: *prod'), 'test.yaml', { PROD_ORIGIN: 'http://127.0.0.1:2' }).config.upstreams.api.url, 'http://127.0.0.1:2')
  // An x- block that only another unused x- block merges is not used either.
  const chained = `x-base: &base { url: "\${BASE_ORIGIN}" }
x-unused: { <<: *base, timeoutMs: 5000 }
upstreams:
  api: { url: http://127.0.0.1:1 }
routes:
  - name: r
    upstream: api
`
  assert.equal(parseConfig(chained, 'test.yaml', {}).config.upstreams.api.url, 'http://127.0.0.1:1')
})

test('an unset ${VAR} in an anchor names its line and the key path of each use; a key written beside << hides the merged one', () => {
  const yaml = `x-d: &d
  url: \${ORIGIN}
  timeoutMs: 100
upstreams:
  a: { <<: *d }
  b:
    <<: *d
    url: http://127.0.0.1:1
  c: *d
  e: &e
    url: \${E_ORIGIN}
  f: *e
routes:
  - name: r
    upstream: a
`
  const msg = (v: string) => `environment variable ${v} is not set (write \${${v}:-default} to give a default)`
  assert.deepEqual(configIssues(yaml, {}), [
    `test.yaml:2:8 upstreams.a.url: ${msg('ORIGIN')}`,
    `test.yaml:2:8 upstreams.c.url: ${msg('ORIGIN')}`,
    `test.yaml:11:10 upstreams.e.url: ${msg('E_ORIGIN')}`,
    `test.yaml:11:10 upstreams.f.url: ${msg('E_ORIGIN')}`
  ])
})

test('an alias to an anchor that does not exist names its line and key path, merged or not', () => {
  const merge = `upstreams:
  api:
    <<: *nodefaults
    url: http://127.0.0.1:1
routes:
  - name: r
    upstream: api
`
  assert.deepEqual(configIssues(merge), ['test.yaml:3:9 upstreams.api.<<: YAML: alias *nodefaults has no anchor &nodefaults before it'])
  const plain = `upstreams:
  api:
    url: http://127.0.0.1:1
    timeoutMs: *t
routes:
  - name: r
    upstream: api
`
  assert.deepEqual(configIssues(plain), ['test.yaml:4:16 upstreams.api.timeoutMs: YAML: alias *t has no anchor &t before it'])
})

test('<< of something that is not a mapping names its line and key path', () => {
  const yaml = `upstreams:
  api:
    <<: 5000
    url: http://127.0.0.1:1
routes:
  - name: r
    upstream: api
`
  assert.deepEqual(configIssues(yaml), ['test.yaml:3:9 upstreams.api.<<: YAML: << merges a mapping, an alias of one, or a list of those'])
})

test('a top-level key that does not start with x- is still an unknown key; x- keys are ignored only at the top', () => {
  const yaml = (top: string) => `${top}: &d { timeoutMs: 5000 }
upstreams:
  api: { <<: *d, url: http://127.0.0.1:1, x-note: 1 }
routes:
  - name: r
    upstream: api
`
  assert.deepEqual(configIssues(yaml('upstream-defaults')), ['test.yaml:1:1 upstream-defaults: unknown key', 'test.yaml:3:43 upstreams.api.x-note: unknown key'])
  assert.deepEqual(configIssues(yaml('x-defaults')), ['test.yaml:3:43 upstreams.api.x-note: unknown key'])
})

test('duplicate keys are still refused beside merge keys', () => {
  const yaml = `x-d: &d { timeoutMs: 5000 }
upstreams:
  api:
    <<: *d
    url: http://127.0.0.1:1
    url: http://127.0.0.1:2
routes:
  - name: r
    upstream: api
`
  const issues = configIssues(yaml)
  assert.equal(issues.length, 1, issues.join('\n'))
  assert.match(issues[0], /^test\.yaml:6:5 upstreams\.api\.url: YAML: Map keys must be unique/)
})
