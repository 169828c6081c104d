// The operations docs (docs/recipes/*.md, docs/migrate-from-nginx.md) each carry a complete
// config that Sluice's own loader accepts, say what their recipe promises, and the nginx
// mapping names only config keys that exist.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readdirSync } from 'node:fs'
import { read, repo, configErrors, loadConfigText } from './ops-helpers.js'

const RECIPES = ['protect-third-party-api.md', 'cache-json-api-with-tags.md', 'sse.md', 'replicas-on-one-redis.md']
const DOCS = [...RECIPES.map((r) => `docs/recipes/${r}`), 'docs/migrate-from-nginx.md']

/** The fenced yaml blocks of a Markdown file that are Sluice configs (they have routes). */
function configBlocks (md: string): string[] {
  return [...md.matchAll(/```ya?ml\n([\s\S]*?)```/g)].map((m) => m[1]).filter((y) => /^routes:/m.test(y))
}

test('every recipe exists and the recipes folder has no untested file', () => {
  const present = readdirSync(repo('docs/recipes')).filter((f) => f.endsWith('.md')).sort()
  assert.deepEqual(present, [...RECIPES].sort())
})

test('each doc has a complete config that `sluice validate` would accept', () => {
  for (const d of DOCS) {
    const blocks = configBlocks(read(d))
    assert.ok(blocks.length >= 1, `${d} has a config`)
    for (const [i, y] of blocks.entries()) {
      assert.deepEqual(configErrors(y, `${d}#${i + 1}`, { SLUICE_ADMIN_TOKEN: 'doc-token' }), [], `${d}, config ${i + 1}`)
    }
  }
})

test('protect a third-party API: 300 requests/min with a burst of 400 is requestsPerSecond 5, burst 400', () => {
  const md = read('docs/recipes/protect-third-party-api.md')
  const c = loadConfigText(configBlocks(md)[0], 'protect', {})
  const limited = Object.values(c.upstreams as Record<string, { rateLimit?: { requestsPerSecond: number; burst: number } }>).filter((u) => u.rateLimit)
  assert.equal(limited.length, 1)
  assert.equal(limited[0].rateLimit?.requestsPerSecond, 5)
  assert.equal(limited[0].rateLimit?.burst, 400)
  assert.equal(300 / 60, limited[0].rateLimit?.requestsPerSecond)
  assert.match(md, /## Why `requestsPerSecond: 5` and `burst: 400`/)
})

test('cache a JSON API with tags: Cache-Tag from the origin, purge on deploy with curl', () => {
  const md = read('docs/recipes/cache-json-api-with-tags.md')
  assert.match(md, /^Cache-Tag: /m)
  assert.match(md, /curl[^\n]*-X POST[^\n]*\/admin\/purge[\s\S]{0,200}Authorization: Bearer[\s\S]{0,200}-d '\{"tag": "products"\}'/)
  const c = loadConfigText(configBlocks(md)[0], 'tags', {})
  assert.ok(c.routes.some((r: { cache: { enabled: boolean } }) => r.cache.enabled))
  // The example origin really sends the tag the recipe purges.
  assert.match(read('examples/origin.mjs'), /'cache-tag': 'products'/)
})

test('SSE: the stream route has no cache and the upstream no idle-body timeout', () => {
  const c = loadConfigText(configBlocks(read('docs/recipes/sse.md'))[0], 'sse', {})
  const route = c.routes.find((r: { name: string }) => r.name === 'events')
  assert.notEqual(route.cache?.enabled, true)
  assert.notEqual(route.compression?.enabled, true)
  assert.equal(c.upstreams[route.upstream].bodyTimeoutMs, 0)
})

test('replicas on one Redis: a Redis URL and expectedReplicas on every limit', () => {
  const c = loadConfigText(configBlocks(read('docs/recipes/replicas-on-one-redis.md'))[0], 'replicas', { SLUICE_ADMIN_TOKEN: 't' })
  assert.match(c.redis.url, /^rediss?:\/\//)
  for (const u of Object.values(c.upstreams as Record<string, { rateLimit?: { expectedReplicas: number } }>)) if (u.rateLimit) assert.ok(u.rateLimit.expectedReplicas > 1)
  for (const r of c.routes) if (r.rateLimit) assert.ok(r.rateLimit.perClient.expectedReplicas > 1)
})

test('migrate from nginx: the table maps proxy_cache, proxy_pass, limit_req and gzip to config keys that exist', () => {
  const md = read('docs/migrate-from-nginx.md')
  const rows = md.split('\n').filter((l) => l.startsWith('| `'))
  for (const d of ['proxy_cache', 'proxy_pass', 'limit_req', 'gzip', 'proxy_cache_valid', 'proxy_cache_use_stale', 'proxy_cache_key', 'limit_req_zone', 'gzip_min_length']) {
    assert.ok(rows.some((r) => new RegExp('^\\| `' + d + '[ `]').test(r)), `a row for ${d}`)
  }
  // Every key path in the Sluice column is a documented config key (docs/configuration.md).
  const keys = [...read('docs/configuration.md').matchAll(/^\| `([^`]+)` \|/gm)].map((m) => m[1])
  assert.ok(keys.length > 50)
  let checked = 0
  for (const r of rows) {
    const sluice = r.split(' | ')[1] ?? ''
    for (const m of sluice.matchAll(/`([^`]+)`/g)) {
      const path = m[1].split(':')[0].trim()
      if (/^upstreams\.(?!<name>)/.test(path)) continue // an example name; the generic form is listed beside it
      if (!/^[a-z][\w]*(\[\])?(\.(<name>|[a-zA-Z]\w*))+$/.test(path)) continue
      checked++
      assert.ok(keys.some((k) => k === path || k.endsWith('.' + path)), `${path} is a config key`)
    }
  }
  assert.ok(checked >= 25, `${checked} key paths checked`)
})
