import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { spawnSync } from 'node:child_process'
import { parseConfig } from '../../src/config/load.js'
import { BASE_CONFIG, configIssues } from '../helpers/config-issues.js'
import { compile } from '../../src/config/compile.js'
import { ConfigSchema } from '../../src/config/schema.js'
import { jsonSchemaForEditors } from '../../src/config/types-helpers.js'
import { tempConfig } from '../helpers/gateway.js'
import { cliCommand } from '../helpers/cli.js'

const base = BASE_CONFIG
const issues = configIssues

test('a minimal config loads with every default filled in', () => {
  const { config } = parseConfig(base, 'test.yaml', {})
  assert.equal(config.listen.port, 8080)
  assert.equal(config.admin.host, '127.0.0.1')
  assert.equal(config.upstreams.api.connections, 128)
  assert.equal(config.upstreams.api.tls.rejectUnauthorized, true)
  assert.equal(config.upstreams.api.circuitBreaker.volumeThreshold >= 10, true)
  assert.equal(config.routes[0].match.host, '*')
})

test('an unknown key is an error that names the line, column and key path', () => {
  const out = issues(base.replace('    upstream: api', '    upstream: api\n    cachee: { enabled: true }'))
  assert.deepEqual(out, ['test.yaml:8:5 routes[0].cachee: unknown key (did you mean cache?)'])
})

test('a wrong type names the expected type and bound', () => {
  const yaml = base + '    cache: { enabled: true, defaultTtlSeconds: -5 }\n'
  assert.deepEqual(issues(yaml), ['test.yaml:8:48 routes[0].cache.defaultTtlSeconds: expected integer >= 0'])
  assert.match(issues(base.replace('url: http://127.0.0.1:3000', 'url: http://127.0.0.1:3000\n    connections: lots'))[0], /upstreams\.api\.connections: expected integer/)
})

test('a route naming a missing upstream, a duplicate name and an ambiguous route are errors', () => {
  const yaml = base + `  - name: a
    match: { pathPrefix: /api/ }
    upstream: nope
`
  const out = issues(yaml)
  assert.ok(out.some((l) => /routes\[1\]\.name: duplicate route name "a"/.test(l)), out.join('\n'))
  assert.ok(out.some((l) => /^test\.yaml:10:15 routes\[1\]\.upstream: unknown upstream "nope"/.test(l)), out.join('\n'))
  assert.ok(out.some((l) => /routes\[1\]\.match: matches the same requests as routes\[0\]/.test(l)), out.join('\n'))
})

test('routes with the same prefix but disjoint methods or hosts are not ambiguous', () => {
  const yaml = base.replace('match: { pathPrefix: /api/ }', 'match: { pathPrefix: /api/, methods: [GET] }') + `  - name: b
    match: { pathPrefix: /api/, methods: [POST] }
    upstream: api
  - name: c
    match: { pathPrefix: /api/, host: example.com }
    upstream: api
`
  assert.deepEqual(issues(yaml), [])
})

test('a bad upstream URL is an error', () => {
  assert.match(issues(base.replace('http://127.0.0.1:3000', 'ftp://x'))[0], /test\.yaml:3:10 upstreams\.api\.url: the scheme must be http or https/)
  assert.match(issues(base.replace('http://127.0.0.1:3000', 'not a url'))[0], /upstreams\.api\.url: not a valid URL/)
})

test('invalid YAML is an error with its position', () => {
  const out = issues('upstreams:\n  api: { url: http://x\nroutes: [')
  assert.ok(out.length > 0)
  assert.match(out[0], /^test\.yaml:\d+:\d+ \(file\): YAML: /)
})

test('${VAR} and ${VAR:-default} are interpolated, with types for unquoted values', () => {
  const yaml = 'listen:\n  port: ${PORT:-9090}\nadmin: { token: "${TOKEN}" }\n' + base
  const { config } = parseConfig(yaml, 'test.yaml', { TOKEN: 's3cret' })
  assert.equal(config.listen.port, 9090)
  assert.equal(config.admin.token, 's3cret')
  assert.deepEqual(issues('admin: { token: "${NOPE}" }\n' + base), ['test.yaml:1:17 admin.token: environment variable NOPE is not set (write ${NOPE:-default} to give a default)'])
})

test('the admin port on a non-loopback address needs a token', () => {
  assert.match(issues('admin: { host: 0.0.0.0 }\n' + base)[0], /admin\.host: the admin port on a non-loopback address/)
  assert.deepEqual(issues('admin: { host: 0.0.0.0, token: t }\n' + base), [])
})

test('turning off upstream TLS verification loads with a warning', () => {
  const yaml = base.replace('http://127.0.0.1:3000', 'https://api.example.com\n    tls: { rejectUnauthorized: false }')
  const { warnings } = parseConfig(yaml, 'test.yaml', {})
  assert.match(warnings[0], /upstreams\.api\.tls\.rejectUnauthorized: TLS certificate verification is OFF/)
})

test('the snapshot is frozen and route defaults are merged once', () => {
  const yaml = `defaults:
  cache: { enabled: true, defaultTtlSeconds: 30 }
  timeoutMs: 1234
` + base + `    cache: { staleIfErrorSeconds: 9 }
  - name: b
    match: { pathPrefix: /b/ }
    upstream: api
    cache: { enabled: false }
`
  const loaded = parseConfig(yaml, 'test.yaml', {})
  const snap = compile(loaded.config, loaded.raw, 'test.yaml')
  const [a, b] = snap.routes
  assert.equal(a.cache.enabled, true)
  assert.equal(a.cache.defaultTtlSeconds, 30)
  assert.equal(a.cache.staleIfErrorSeconds, 9)
  assert.equal(a.timeoutMs, 1234)
  assert.equal(b.cache.enabled, false)
  assert.equal(b.cache.defaultTtlSeconds, 30)
  assert.ok(Object.isFrozen(snap) && Object.isFrozen(a) && Object.isFrozen(a.cache) && Object.isFrozen(snap.config.routes))
  assert.throws(() => { (a.cache as { enabled: boolean }).enabled = false })
})

test('route precedence: longest prefix, then exact host, then methods, then file order', () => {
  const yaml = `upstreams: { api: { url: http://127.0.0.1:1 } }
routes:
  - { name: root, match: { pathPrefix: / }, upstream: api }
  - { name: api, match: { pathPrefix: /api/ }, upstream: api }
  - { name: api-host, match: { pathPrefix: /api/, host: shop.example.com }, upstream: api }
  - { name: api-wild, match: { pathPrefix: /api/, host: "*.example.com" }, upstream: api }
  - { name: api-post, match: { pathPrefix: /api/, methods: [POST] }, upstream: api }
`
  const loaded = parseConfig(yaml, 'test.yaml', {})
  const { router } = compile(loaded.config, loaded.raw, 'test.yaml')
  const m = (host: string, method: string, path: string) => router.match(host, method, path)?.name
  assert.equal(m('x', 'GET', '/other'), 'root')
  assert.equal(m('x', 'GET', '/api/1'), 'api')
  assert.equal(m('x', 'POST', '/api/1'), 'api-post')
  assert.equal(m('SHOP.example.com:8080', 'GET', '/api/1'), 'api-host')
  assert.equal(m('eu.example.com', 'GET', '/api/1'), 'api-wild')
  assert.equal(m('example.com', 'GET', '/api/1'), 'api')
})

test('config/sluice.schema.json is generated from the schema and up to date', () => {
  const onDisk = JSON.parse(readFileSync('config/sluice.schema.json', 'utf8'))
  assert.deepEqual(onDisk, JSON.parse(JSON.stringify(jsonSchemaForEditors(ConfigSchema))), 'stale: run `npm run schema`')
})

test('the example config/sluice.yaml is valid as shipped', () => {
  const loaded = parseConfig(readFileSync('config/sluice.yaml', 'utf8'), 'config/sluice.yaml', {})
  assert.ok(loaded.config.routes.length >= 2)
})

test('`sluice validate` prints each error with line and path and exits 1', () => {
  const { file } = tempConfig(base.replace('    upstream: api', '    upstream: api\n    timeoutMs: fast'))
  const [cmd, args] = cliCommand(['validate', '--config', file])
  const r = spawnSync(cmd, args, { encoding: 'utf8' })
  assert.equal(r.status, 1)
  assert.match(r.stderr, /sluice\.yaml:8:16 routes\[0\]\.timeoutMs: expected integer >= 1, got "fast"/)
  const ok = spawnSync(...cliCommand(['validate', '--config', 'config/sluice.yaml']), { encoding: 'utf8' })
  assert.equal(ok.status, 0, ok.stderr)
  assert.match(ok.stdout, /OK \(2 routes, 1 upstreams/)
})

test('`sluice schema` prints a JSON Schema', () => {
  const r = spawnSync(...cliCommand(['schema']), { encoding: 'utf8' })
  assert.equal(r.status, 0)
  const s = JSON.parse(r.stdout)
  assert.equal(s.additionalProperties, false)
  assert.ok(s.properties.routes && s.properties.upstreams)
})

test('a union names the wrong key inside a mapping, or lists what it accepts', () => {
  const yaml = base.replace('url: http://127.0.0.1:3000', 'targets: [{ url: "http://127.0.0.1:3000", wieght: 2 }]')
  assert.deepEqual(issues(yaml), ['test.yaml:3:47 upstreams.api.targets[0].wieght: unknown key (did you mean weight?)'])
  assert.deepEqual(issues('workers: two\n' + base), ['test.yaml:1:10 workers: expected "auto" or integer >= 1, got "two"'])
})

test('a duplicate key names its key path', () => {
  assert.deepEqual(issues(base.replace('url: http://127.0.0.1:3000', 'url: http://127.0.0.1:3000\n    url: http://127.0.0.1:3001')),
    ['test.yaml:4:5 upstreams.api.url: YAML: Map keys must be unique'])
})

test('${VAR}: a numeric value where a string is wanted stays text; an empty variable and a nested default are named', () => {
  const yaml = 'admin:\n  token: ${T}\n' + base.replace('url: http://127.0.0.1:3000', 'url: http://127.0.0.1:3000\n    timeoutMs: ${MS}')
  const { config } = parseConfig(yaml, 'test.yaml', { T: '0123', MS: '500' })
  assert.equal(config.admin.token, '0123')
  assert.equal(config.upstreams.api.timeoutMs, 500)
  assert.deepEqual(issues('admin: { token: "${E}" }\n' + base, { E: '' }), ['test.yaml:1:17 admin.token: environment variable E is empty (write ${E:-default} to give a default)'])
  assert.deepEqual(issues('admin: { token: "${A:-${B}}" }\n' + base), ['test.yaml:1:17 admin.token: ${A:-...}: a default cannot hold another ${...} reference'])
})

test('an upstream\'s hash key is frozen with the rest of the snapshot', () => {
  const loaded = parseConfig(base.replace('url: http://127.0.0.1:3000', 'url: http://127.0.0.1:3000\n    balance: hash\n    hashKey: "header:x-user"'), 'test.yaml', {})
  const snap = compile(loaded.config, loaded.raw, 'test.yaml')
  assert.ok(Object.isFrozen(snap.upstreams.api.hashKey))
})
