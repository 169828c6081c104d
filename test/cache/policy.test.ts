// Unit tests of the RFC 9111 rules as pure functions: directive parsing, freshness,
// storability with its bypass reasons, targeted fields, and key normalisation.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { parseDirectives, seconds, httpDate } from '../../src/httpcache/directives.js'
import { requestDirectives, surrogateDirectives, withheldFields, SURROGATE_TOKEN } from '../../src/httpcache/policy.js'
import { NOW, date, judge } from '../helpers/policy.js'
import { baseKey, keyPath, variantKey, varyNames, varyValue } from '../../src/httpcache/key.js'
import { singleRange, ifRangeMatches } from '../../src/httpcache/range.js'
import { ageMs, ttlMs, storeTtlMs, encodeEntry, decodeEntry, type CacheEntry } from '../../src/httpcache/entry.js'
import { usability } from '../../src/httpcache/freshness.js'
import type { CacheRouteConfig } from '../../src/httpcache/config.js'


test('directives: case, quoted values, duplicates and malformed numbers', () => {
  const d = parseDirectives('Max-Age=60, no-cache="set-cookie, x", private, max-age=5')
  assert.equal(d.get('max-age'), '60', 'the map keeps the text of the first occurrence')
  assert.equal(seconds(d, 'max-age'), 5, 'but a duplicated max-age counts as its lowest value')
  assert.equal(d.get('no-cache'), 'set-cookie, x')
  assert.equal(d.get('private'), true)
  assert.equal(seconds(parseDirectives('max-age=abc'), 'max-age'), undefined)
  assert.equal(seconds(parseDirectives('max-age=1.5'), 'max-age'), undefined)
  assert.equal(seconds(parseDirectives('max-age=99999999999'), 'max-age'), 2147483648, 'capped at 2^31 (RFC 9111 §1.2.2)')
  assert.equal(parseDirectives(['max-age=1', 'public']).get('public'), true, 'several field lines are one list')
  assert.ok(Number.isNaN(httpDate('0')))
  assert.ok(Number.isNaN(httpDate('yesterday')))
  assert.equal(httpDate('Sunday, 06-Nov-94 08:49:37 GMT'), Date.parse('1994-11-06T08:49:37Z'), 'the obsolete RFC 850 form')
})

test('freshness: s-maxage over max-age over Expires minus Date', () => {
  assert.equal(judge(200, { 'cache-control': 'max-age=60, s-maxage=10' }).f.lifetimeMs, 10_000)
  assert.equal(judge(200, { 'cache-control': 'max-age=60', expires: date(600) }).f.lifetimeMs, 60_000)
  assert.equal(judge(200, { expires: date(600) }).f.lifetimeMs, 600_000)
  assert.equal(judge(200, { expires: '0' }).f.lifetimeMs, 0, 'an invalid Expires is already stale')
  assert.equal(judge(200, { expires: date(-60) }).f.lifetimeMs, 0)
  const f = judge(200, { 'cache-control': 'max-age=60', age: '20' }).f
  assert.equal(f.initialAgeMs, 20_000, 'the Age received counts')
})

test('freshness: Age uses its first value, and an Age that is not a non-negative integer is ignored (RFC 9111 §5.1)', () => {
  for (const age of ['abc', '-1', '1.0', '10;x=1', '']) {
    const f = judge(200, { 'cache-control': 'max-age=3600', age }).f
    assert.equal(f.lifetimeMs, 3_600_000, age)
    assert.equal(f.initialAgeMs, 0, `${JSON.stringify(age)} is ignored`)
  }
  assert.equal(judge(200, { 'cache-control': 'max-age=3600', age: '7200,0' }).f.initialAgeMs, 7_200_000, 'the first value')
  assert.equal(judge(200, { 'cache-control': 'max-age=3600', age: '0, 7200' }).f.initialAgeMs, 0, 'the first value')
  assert.equal(judge(200, { 'cache-control': 'max-age=3600', age: ['0', '7200'] }).f.initialAgeMs, 0, 'the first of two Age lines')
})

test('freshness: heuristics only for heuristically cacheable statuses or public, and the route default only without origin freshness', () => {
  const lm = { 'last-modified': date(-1000) }
  assert.equal(judge(200, lm).f.lifetimeMs, 100_000, '10% of the time since Last-Modified')
  assert.equal(judge(200, lm).f.explicit, false)
  assert.equal(judge(299, lm).f.lifetimeMs, 0, 'not a heuristically cacheable status')
  assert.equal(judge(599, { ...lm, 'cache-control': 'public' }).f.lifetimeMs, 100_000, 'public allows heuristics for any status')
  assert.equal(judge(200, { 'last-modified': date(-10 * 86400 * 100) }).f.lifetimeMs, 86400_000, 'capped by maxHeuristicSeconds')
  assert.equal(judge(200, {}, { route: { defaultTtlSeconds: 30 } }).f.lifetimeMs, 30_000)
  assert.equal(judge(200, { 'cache-control': 'max-age=5' }, { route: { defaultTtlSeconds: 30 } }).f.lifetimeMs, 5000, 'the origin wins')
  assert.equal(judge(200, { 'cache-control': 'max-age=0' }, { route: { defaultTtlSeconds: 30 } }).f.lifetimeMs, 0, 'max-age=0 is freshness too')
})

test('freshness: stale windows from the directive or the route; must-revalidate and no-cache', () => {
  const f = judge(200, { 'cache-control': 'max-age=1, stale-while-revalidate=30' }, { route: { staleWhileRevalidateSeconds: 5, staleIfErrorSeconds: 7 } }).f
  assert.equal(f.swrMs, 30_000, 'the directive wins over the route')
  assert.equal(f.sieMs, 7000)
  assert.equal(judge(200, { 'cache-control': 'max-age=1, must-revalidate' }).f.mustRevalidate, true)
  assert.equal(judge(200, { 'cache-control': 'max-age=1, proxy-revalidate' }).f.mustRevalidate, true)
  assert.equal(judge(200, { 'cache-control': 's-maxage=1' }).f.mustRevalidate, true, 's-maxage implies proxy-revalidate')
  assert.equal(judge(200, { 'cache-control': 'max-age=60, no-cache' }).f.noCache, true)
  assert.equal(judge(200, { 'cache-control': 'max-age=60, no-cache="x-a"' }).f.noCache, false, 'the qualified form only names fields')
})

test('storable: each refusal names its reason', () => {
  const fresh = { 'cache-control': 'max-age=60' }
  assert.equal(judge(200, fresh).why, null)
  assert.equal(judge(100, fresh).why, 'STATUS')
  assert.equal(judge(206, fresh).why, 'STATUS')
  assert.equal(judge(200, { 'cache-control': 'max-age=60, no-store' }).why, 'NO-STORE')
  assert.equal(judge(200, fresh, { req: { 'cache-control': 'no-store' } }).why, 'NO-STORE', 'the request may forbid storing too')
  assert.equal(judge(200, { 'cache-control': 'max-age=60, private' }).why, 'PRIVATE')
  assert.equal(judge(200, { 'cache-control': 'max-age=60, private="x-user"' }).why, null, 'qualified private names fields only')
  assert.equal(judge(200, { ...fresh, vary: 'Accept, *' }).why, 'VARY-STAR')
  assert.equal(judge(200, { ...fresh, 'set-cookie': 'a=1' }).why, 'SET-COOKIE')
  assert.equal(judge(200, { ...fresh, 'set-cookie': 'a=1' }, { route: { allowSetCookie: true } }).why, null, 'a route may opt in')
  assert.equal(judge(200, { ...fresh, 'content-type': 'text/event-stream' }).why, 'EVENT-STREAM')
  assert.equal(judge(200, {}).why, 'NO-FRESHNESS', 'nothing to reuse or revalidate with')
  assert.equal(judge(200, { etag: '"a"' }).why, null, 'a validator is enough: the entry is revalidated before use')
  assert.equal(judge(299, fresh).why, null, 'explicit freshness makes any final status storable')
  assert.equal(judge(299, { etag: '"a"' }).why, 'STATUS')
  assert.equal(judge(200, { 'cache-control': 'max-age=60, must-understand, no-store' }).why, null, 'must-understand on a known status overrides no-store')
  assert.equal(judge(299, { 'cache-control': 'max-age=60, must-understand, no-store' }).why, 'STATUS')
})

test('storable: a request with Authorization only with public, s-maxage or must-revalidate', () => {
  const req = { authorization: 'Bearer x' }
  assert.equal(judge(200, { 'cache-control': 'max-age=60' }, { req }).why, 'AUTHORIZATION')
  for (const cc of ['max-age=60, public', 's-maxage=60', 'max-age=60, must-revalidate']) assert.equal(judge(200, { 'cache-control': cc }, { req }).why, null, cc)
})

test('targeted fields override Cache-Control: own field, then CDN-Cache-Control, then Surrogate-Control', () => {
  const cc = { 'cache-control': 'no-store' }
  assert.equal(judge(200, { ...cc, 'sluice-cache-control': 'max-age=30', 'cdn-cache-control': 'max-age=10' }).f.lifetimeMs, 30_000)
  assert.equal(judge(200, { ...cc, 'cdn-cache-control': 'max-age=10' }).why, null)
  assert.equal(judge(200, { ...cc, 'cdn-cache-control': 'max-age=10' }).f.lifetimeMs, 10_000)
  assert.equal(judge(200, { 'cache-control': 'max-age=60', 'cdn-cache-control': 'no-store' }).why, 'NO-STORE')
  assert.equal(judge(200, { ...cc, 'x-edge': 'max-age=5' }, { route: { targetedField: 'x-edge' } }).f.lifetimeMs, 5000, 'the field is configurable')
  const t = judge(200, { 'cache-control': 'max-age=600', expires: date(900), 'cdn-cache-control': 'max-age=10' }).f
  assert.equal(t.lifetimeMs, 10_000, 'Expires does not apply under a targeted field')
})

test('Surrogate-Control: directives for this device win, those for other devices are ignored', () => {
  const mine = surrogateDirectives(`max-age=5, max-age=60;${SURROGATE_TOKEN}`, SURROGATE_TOKEN)
  assert.equal(mine.get('max-age'), '60')
  const other = surrogateDirectives('max-age=60;other-cdn, no-store;other-cdn', SURROGATE_TOKEN)
  assert.equal(other.size, 0)
  assert.equal(surrogateDirectives('content="ESI/1.0;x", max-age=9', SURROGATE_TOKEN).get('content'), 'ESI/1.0;x', 'a ; inside quotes is no target')
  assert.equal(surrogateDirectives(`No-Store;${SURROGATE_TOKEN.toUpperCase()}`, SURROGATE_TOKEN).get('no-store'), true)
  // Cache-Control: no-store, but Surrogate-Control gives Sluice its own lifetime.
  const j = judge(200, { 'cache-control': 'no-store', 'surrogate-control': `max-age=10000;${SURROGATE_TOKEN}` })
  assert.equal(j.why, null)
  assert.equal(j.f.lifetimeMs, 10_000_000)
  // Aimed elsewhere: Cache-Control governs.
  assert.equal(judge(200, { 'cache-control': 'no-store', 'surrogate-control': 'max-age=10000;other' }).why, 'NO-STORE')
})

test('Surrogate-Control: duplicated directives resolve to the most restrictive, as Cache-Control does', () => {
  const T = SURROGATE_TOKEN
  assert.equal(seconds(surrogateDirectives('max-age=600, max-age=5', T), 'max-age'), 5, 'two untargeted max-age: the lower')
  assert.equal(seconds(surrogateDirectives(`max-age=600;${T}, max-age=5;${T}`, T), 'max-age'), 5, 'two targeted max-age: the lower')
  assert.equal(seconds(surrogateDirectives([`max-age=600;${T}`, `max-age=abc;${T}`], T), 'max-age'), 0, 'an invalid duplicate makes it stale')
  assert.equal(seconds(surrogateDirectives(`max-age=5, max-age=600;${T}, max-age=60;${T}`, T), 'max-age'), 60, 'the targeted ones still win over the untargeted')
  assert.equal(surrogateDirectives(`private="x-a";${T}, private;${T}`, T).get('private'), true)
  assert.equal(judge(200, { 'surrogate-control': 'max-age=600, max-age=5' }).f.lifetimeMs, 5000)
  assert.equal(judge(200, { 'surrogate-control': [`max-age=600;${T}`, `max-age=5;${T}`] }).f.lifetimeMs, 5000)
})

test('request directives: Pragma: no-cache only without Cache-Control', () => {
  assert.equal(requestDirectives({ pragma: 'no-cache' }).has('no-cache'), true)
  assert.equal(requestDirectives({ pragma: 'no-cache', 'cache-control': 'max-age=5' }).has('no-cache'), false)
  assert.equal(requestDirectives({ pragma: 'foo' }).size, 0)
})

test('request directives: duplicates resolve to the most restrictive (lowest max-age and max-stale, highest min-fresh)', () => {
  const e = { responseTime: NOW, requestTime: NOW, lifetimeMs: 600_000, initialAgeMs: 0, swrMs: 0, sieMs: 0, mustRevalidate: false, noCache: false } as CacheEntry
  const rc = { clientNoCacheRevalidates: true } as CacheRouteConfig
  const use = (cc: string | string[], at: number) => usability(e, rc, requestDirectives({ 'cache-control': cc }), NOW + at * 1000)
  // 10 s old, 590 s of freshness left.
  assert.equal(use('max-age=600', 10), 'fresh')
  assert.equal(use('max-age=600, max-age=5', 10), 'revalidate', 'the lower max-age')
  assert.equal(use(['max-age=5', 'max-age=600'], 10), 'revalidate', 'the lower max-age, over two lines')
  assert.equal(use('max-age=600, max-age=abc', 10), 'revalidate', 'an invalid duplicate max-age counts as 0')
  assert.equal(use('min-fresh=3600, min-fresh=1', 10), 'revalidate', 'the higher min-fresh')
  assert.equal(use('min-fresh=1, min-fresh=3600', 10), 'revalidate', 'the higher min-fresh, second')
  assert.equal(use('min-fresh=1, min-fresh=60', 10), 'fresh')
  assert.equal(use('max-age=600, no-cache', 10), 'revalidate', 'no-cache present wins')
  // 700 s old: stale by 100 s.
  assert.equal(use('max-stale=3600', 700), 'stale-ok')
  assert.equal(use('max-stale=3600, max-stale=10', 700), 'revalidate', 'the lower max-stale')
  assert.equal(use('max-stale, max-stale=10', 700), 'revalidate', 'a bounded max-stale is lower than an unbounded one')
  assert.equal(use('max-stale=10, max-stale', 700), 'revalidate', 'in either order')
  assert.equal(use('max-stale, max-stale', 700), 'stale-ok')
  assert.equal(use('max-stale=3600, max-stale=200', 700), 'stale-ok')
  assert.equal(requestDirectives({ 'cache-control': 'max-age=60, no-store' }).has('no-store'), true)
})

test('keys: method class, lower-case host, route query options and key headers', () => {
  const plain = { sortQuery: false, ignoreParams: [], headers: [] }
  assert.equal(baseKey('HEAD', 'Example.COM', '/a?x=1', {}, plain), baseKey('GET', 'example.com', '/a?x=1', {}, plain), 'HEAD shares the GET entry')
  assert.notEqual(baseKey('GET', 'a.example', '/a', {}, plain), baseKey('GET', 'b.example', '/a', {}, plain), 'the host is in the key')
  const o = { sortQuery: true, ignoreParams: ['utm_*', 'fbclid'], headers: ['x-tenant'] }
  assert.equal(keyPath('/p?b=2&utm_source=x&a=1&fbclid=9', o), '/p?a=1&b=2')
  assert.equal(keyPath('/p?utm_medium=y', o), '/p')
  assert.equal(keyPath('/p?b=2&a=1', plain), '/p?b=2&a=1', 'left alone unless the route asks')
  assert.notEqual(baseKey('GET', 'h', '/p', { 'x-tenant': 'a' }, o), baseKey('GET', 'h', '/p', { 'x-tenant': 'b' }, o))
})

test('Vary: names are sorted and deduplicated; values normalised where it is safe', () => {
  assert.deepEqual(varyNames(['Accept-Language, accept', 'ACCEPT']), ['accept', 'accept-language'])
  assert.equal(varyValue('foo', { foo: ' 1, 2 ' }), varyValue('foo', { foo: '1,2' }), 'whitespace around list items')
  assert.equal(varyValue('foo', { foo: ['1', '2'] }), varyValue('foo', { foo: '1, 2' }), 'two lines are one list')
  assert.notEqual(varyValue('foo', { foo: '2, 1' }), varyValue('foo', { foo: '1, 2' }), 'order may matter in unknown fields')
  assert.equal(varyValue('accept-language', { 'accept-language': 'en, DE' }), varyValue('accept-language', { 'accept-language': ' de ,   en' }), 'Accept-Language: case, space and order')
  assert.equal(varyValue('accept-encoding', { 'accept-encoding': 'gzip, deflate, br' }), 'br', 'reduced to the encoding Sluice would serve')
  assert.equal(varyValue('accept-encoding', { 'accept-encoding': 'gzip;q=1, br;q=0.5' }), 'gzip')
  assert.equal(varyValue('accept-encoding', {}), 'identity')
  const base = 'G|h|/v'
  assert.equal(variantKey(base, [], { foo: '1' }), base)
  assert.notEqual(variantKey(base, ['foo'], { foo: '1' }), variantKey(base, ['foo'], {}), 'absent differs from present')
})

test('entry timing and the binary record', () => {
  const e: CacheEntry = {
    key: 'G|h|/e', base: 'G|h|/e', path: '/e', status: 200, headers: { etag: '"1"', 'x-multi': ['a', 'b'] },
    body: Buffer.from([0, 255, 10, 13]), br: Buffer.from('b'), requestTime: NOW, responseTime: NOW,
    lifetimeMs: 60_000, initialAgeMs: 5000, swrMs: 30_000, sieMs: 300_000, mustRevalidate: false, noCache: false,
    tags: ['t'], varyNames: [], authOk: false
  }
  assert.equal(ageMs(e, NOW + 10_000), 15_000)
  assert.equal(ttlMs(e, NOW + 10_000), 45_000)
  assert.equal(storeTtlMs(e, NOW), 55_000 + 300_000, 'freshness left plus the longest stale window')
  assert.equal(storeTtlMs({ ...e, mustRevalidate: true, lifetimeMs: 0 }, NOW), 300_000, 'kept a while for revalidation when it has a validator')
  const back = decodeEntry(encodeEntry(e))
  assert.ok(back)
  assert.deepEqual(back.body, e.body)
  assert.deepEqual(back.br, e.br)
  assert.equal(back.gzip, undefined)
  assert.deepEqual(back.headers, e.headers)
  assert.equal(decodeEntry(Buffer.from([0, 0, 0, 99, 1])), undefined, 'a truncated record is a miss')
})

test('byte ranges: one range within the stored size, else pass it on', () => {
  assert.deepEqual(singleRange('bytes=0-1', 11), { start: 0, end: 1 })
  assert.deepEqual(singleRange('bytes=1-', 11), { start: 1, end: 10 })
  assert.deepEqual(singleRange('bytes=-1', 11), { start: 10, end: 10 })
  assert.deepEqual(singleRange('bytes=-100', 11), { start: 0, end: 10 }, 'a suffix longer than the body is all of it')
  assert.deepEqual(singleRange('bytes=5-100', 11), { start: 5, end: 10 }, 'the last byte is clamped')
  for (const h of ['bytes=0-1,3-4', 'bytes=11-', 'bytes=-0', 'bytes=3-2', 'items=0-1', 'bytes=-', 'bytes=a-b']) assert.equal(singleRange(h, 11), null, h)
  assert.equal(ifRangeMatches('"a"', { etag: '"a"' }), true)
  assert.equal(ifRangeMatches('W/"a"', { etag: 'W/"a"' }), false, 'weak tags never match If-Range')
  assert.equal(ifRangeMatches('"a"', { etag: 'W/"a"' }), false)
  const lm = 'Thu, 01 Jan 2026 00:00:00 GMT'
  const stored = { 'last-modified': lm, date: 'Thu, 01 Jan 2026 00:00:01 GMT' }
  assert.equal(ifRangeMatches(lm, stored), true)
  assert.equal(ifRangeMatches('Thursday, 01-Jan-26 00:00:00 GMT', stored), true, 'the obsolete RFC 850 form')
  assert.equal(ifRangeMatches('Thu Jan  1 00:00:00 2026', stored), true, 'the obsolete asctime form')
  assert.equal(ifRangeMatches('Fri, 02 Jan 2026 00:00:00 GMT', stored), false)
  for (const d of ['2026-01-01', '2026-01-01T00:00:00Z', 'Thu, 01 Jan 2026 00:00:00 UTC', 'thu, 01 jan 2026 00:00:00 gmt', '1 Jan 2026']) assert.equal(ifRangeMatches(d, stored), false, d)
  assert.equal(ifRangeMatches(lm, { 'last-modified': lm, date: lm }), false, 'a Last-Modified less than a second before Date is weak')
  assert.equal(ifRangeMatches(lm, { 'last-modified': lm }), false, 'without Date it is weak')
})

test('fields named by qualified private and no-cache are withheld from storage', () => {
  assert.deepEqual(withheldFields(parseDirectives('max-age=60, private="X-User, X-Token", no-cache="a"')), ['x-user', 'x-token', 'a'])
  assert.deepEqual(withheldFields(parseDirectives('max-age=60, no-cache, private')), [], 'the unqualified forms are handled by storable and freshness')
})
