// The field parsers behind freshness, to the current RFCs: Age (RFC 9111 §5.1), Expires and
// HTTP-date (RFC 9110 §5.6.7, RFC 9111 §5.3), targeted fields as Structured Field Dictionaries
// (RFC 9213, RFC 8941), and If-Modified-Since without Last-Modified (RFC 9110 §13.1.3).
// Unit tests of the parsers, then the same rules end to end through a real gateway.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { request } from 'undici'
import { ageSeconds, parseHttpDate, expiresTime, MAX_DELTA_SECONDS } from '../../src/httpcache/directives.js'
import { targetedDirectives } from '../../src/httpcache/policy.js'
import { NOW, date, judge } from '../helpers/policy.js'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { startTestGateway, simpleConfig, type TestGateway } from '../helpers/gateway.js'


// ---- unit: Age ----

test('Age: the first value of a list or of repeated lines', () => {
  assert.equal(ageSeconds('0, 7200'), 0)
  assert.equal(ageSeconds('0,7200'), 0)
  assert.equal(ageSeconds(['0', '7200']), 0, 'two lines as an array')
  assert.equal(ageSeconds('3600, 3600'), 3600)
  assert.equal(ageSeconds('7200,0'), 7200)
  assert.equal(ageSeconds(' 42 '), 42)
})

test('Age: a value that is not a non-negative integer is ignored; large values are 2^31', () => {
  for (const v of ['abc', '-7200', '7200.0', '', '  ', '7200;foo=bar', '+5', '0x10']) assert.equal(ageSeconds(v), undefined, JSON.stringify(v))
  assert.equal(ageSeconds(undefined), undefined)
  assert.equal(ageSeconds([]), undefined)
  assert.equal(ageSeconds('2147483647'), 2147483647)
  assert.equal(ageSeconds('2147483648'), MAX_DELTA_SECONDS)
  assert.equal(ageSeconds('99999999999999999999'), 2147483648)
})

test('Age in freshness: invalid is as if absent (still fresh), a list uses its first value', () => {
  for (const age of ['abc', '-7200', '7200.0', '']) {
    const { f, why } = judge(200, { 'cache-control': 'max-age=60', age })
    assert.equal(f.lifetimeMs, 60_000, age)
    assert.equal(f.initialAgeMs, 0, age)
    assert.equal(why, null, age)
  }
  assert.equal(judge(200, { 'cache-control': 'max-age=60', age: '0, 7200' }).f.initialAgeMs, 0)
  assert.equal(judge(200, { 'cache-control': 'max-age=60', age: ['0', '7200'] }).f.initialAgeMs, 0)
  assert.equal(judge(200, { 'cache-control': 'max-age=60', age: '3600, 3600' }).f.initialAgeMs, 3_600_000)
  assert.equal(judge(200, { 'cache-control': 'max-age=60', age: '9999999999' }).f.initialAgeMs, 2147483648 * 1000)
})

// ---- unit: HTTP-date and Expires ----

test('HTTP-date: the three forms of RFC 9110 §5.6.7', () => {
  const t = Date.UTC(1994, 10, 6, 8, 49, 37)
  assert.equal(parseHttpDate('Sun, 06 Nov 1994 08:49:37 GMT'), t)
  assert.equal(parseHttpDate('Sunday, 06-Nov-94 08:49:37 GMT', NOW), t)
  assert.equal(parseHttpDate('Sun Nov  6 08:49:37 1994'), t)
  assert.equal(parseHttpDate('Sun Nov 06 08:49:37 1994'), t, 'asctime day as two digits')
  assert.equal(parseHttpDate(new Date(NOW).toUTCString()), NOW)
})

test('HTTP-date: RFC 850 two-digit years more than 50 years ahead are the previous century', () => {
  assert.equal(parseHttpDate('Thursday, 01-Jan-26 00:00:00 GMT', NOW), NOW)
  assert.equal(parseHttpDate('Saturday, 01-Jan-50 00:00:00 GMT', NOW), Date.UTC(2050, 0, 1))
  assert.equal(parseHttpDate('Friday, 01-Jan-99 00:00:00 GMT', NOW), Date.UTC(1999, 0, 1))
  assert.equal(parseHttpDate('Thursday, 01-Jan-76 00:00:00 GMT', NOW), Date.UTC(2076, 0, 1), 'exactly 50 years ahead')
  assert.equal(parseHttpDate('Saturday, 01-Jan-77 00:00:00 GMT', NOW), Date.UTC(1977, 0, 1), '51 years ahead')
  assert.equal(parseHttpDate('Tuesday, 01-Jan-80 00:00:00 GMT', NOW), Date.UTC(1980, 0, 1))
})

test('HTTP-date: anything else is invalid', () => {
  for (const s of [
    'Sun, 06 Nov 1994 8:49:37 GMT', // one-digit hour
    'Sun, 06-Nov-1994 08:49:37 GMT', // dashes in an IMF date
    'Sun,  06 Nov 1994 08:49:37 GMT', // doubled space
    'Sun, 06 Nov  1994 08:49:37 GMT',
    'Sun, 06 Nov 1994  08:49:37 GMT',
    'Sun Nov   6 08:49:37 1994', // asctime with three spaces
    'Sun, 06 Nov 1994 08:49:37 UTC',
    'Sun, 06 Nov 1994 08:49:37',
    'sun, 06 nov 1994 08:49:37 gmt', // case-sensitive
    'Sun, 6 Nov 1994 08:49:37 GMT',
    'Sun, 06 Nov 94 08:49:37 GMT',
    'Sunday, 06-Nov-1994 08:49:37 GMT',
    'Sun, 06-Nov-94 08:49:37 GMT', // RFC 850 with a short day name
    'Sun, 31 Feb 1994 08:49:37 GMT',
    'Sun, 06 Nov 1994 24:00:00 GMT',
    'Sun, 06 Nov 1994 08:60:00 GMT',
    '1994-11-06T08:49:37Z',
    '784111777',
    '',
    'Sun, 06 Nov 1994 08:49:37 GMT, Sun, 06 Nov 1994 08:49:37 GMT'
  ]) assert.ok(Number.isNaN(parseHttpDate(s, NOW)), s)
})

test('Expires: exactly one valid date; several lines or values are invalid', () => {
  assert.equal(expiresTime('Sun, 06 Nov 1994 08:49:37 GMT'), Date.UTC(1994, 10, 6, 8, 49, 37))
  assert.equal(expiresTime(['Sun, 06 Nov 1994 08:49:37 GMT']), Date.UTC(1994, 10, 6, 8, 49, 37))
  assert.ok(Number.isNaN(expiresTime(['Sun, 06 Nov 1994 08:49:37 GMT', 'Sun, 06 Nov 1994 08:49:37 GMT'])))
  assert.ok(Number.isNaN(expiresTime(date(100) + ', ' + date(100))))
  assert.ok(Number.isNaN(expiresTime(undefined)))
})

test('Expires in freshness: valid forms give a lifetime, invalid ones are already expired', () => {
  assert.equal(judge(200, { expires: date(600) }).f.lifetimeMs, 600_000)
  const future = new Date(NOW + 600_000)
  const rfc850 = future.toUTCString().replace(/^(\w{3}), (\d\d) (\w{3}) \d\d(\d\d)/, (_m, _d, dd, mon, yy) => `Thursday, ${dd}-${mon}-${yy}`)
  assert.equal(rfc850, 'Thursday, 01-Jan-26 00:10:00 GMT')
  assert.equal(judge(200, { expires: rfc850 }).f.lifetimeMs, 600_000)
  assert.equal(judge(200, { expires: 'Thu Jan  1 00:10:00 2026' }).f.lifetimeMs, 600_000)
  for (const expires of [date(600).replace('GMT', 'UTC'), 'Thu, 01 Jan 2026 0:10:00 GMT', 'Thu, 01-Jan-2026 00:10:00 GMT', 'Thu,  01 Jan 2026 00:10:00 GMT', [date(600), date(600)]]) {
    const { f, why } = judge(200, { expires })
    assert.equal(f.lifetimeMs, 0, String(expires))
    assert.equal(why, 'NO-FRESHNESS', String(expires))
  }
})

// ---- unit: targeted fields (RFC 9213) ----

test('targeted fields: parsed as Structured Field Dictionaries', () => {
  assert.deepEqual([...targetedDirectives('max-age=60, must-revalidate')!], [['max-age', '60'], ['must-revalidate', true]])
  assert.deepEqual([...targetedDirectives(['max-age=60', 'no-store'])!], [['max-age', '60'], ['no-store', true]])
  assert.deepEqual([...targetedDirectives('max-age=60;foo=bar, private=?0')!], [['max-age', '60']], 'parameters ignored, false is absent')
  assert.deepEqual([...targetedDirectives('max-age=60, foo=tok, bar="x"')!], [['max-age', '60'], ['foo', 'tok'], ['bar', 'x']])
})

test('targeted fields: a parse error or a directive of the wrong type voids the whole field', () => {
  for (const v of ['max-age="10000"', 'max-age=1.5', 'max-age=60.0', 'max-age=-1', 'max-age=tok', 'max-age=(1 2)', 'no-store=1', 'private="set-cookie"',
    'max-age=60,', 'Max-Age=60', 'max-age=60 , , no-store', 'max-age=60;X', 'max-age = 60', '"max-age"=60']) {
    assert.equal(targetedDirectives(v), null, v)
  }
  // Cache-Control then applies.
  assert.equal(judge(200, { 'cache-control': 'max-age=60', 'cdn-cache-control': 'max-age="10000"' }).f.lifetimeMs, 60_000)
  assert.equal(judge(200, { 'cache-control': 'max-age=60', 'cdn-cache-control': 'max-age=10000' }).f.lifetimeMs, 10_000_000)
  assert.equal(judge(200, { 'cache-control': 'max-age=60', 'cdn-cache-control': 'no-store, max-age=1.5' }).why, null)
  assert.equal(judge(200, { 'cache-control': 'max-age=60', 'sluice-cache-control': 'max-age="5"', 'cdn-cache-control': 'max-age=30' }).f.lifetimeMs, 30_000, 'a void own field falls to CDN-Cache-Control')
  assert.equal(judge(200, { 'cache-control': 'max-age=60', 'cdn-cache-control': 'max-age=99999999999' }).f.lifetimeMs, 2147483648 * 1000)
})

// ---- end to end ----

let origin: Origin
let gw: TestGateway
before(async () => {
  origin = await startOrigin()
  gw = await startTestGateway(simpleConfig(origin.url).replace('upstream: origin', `upstream: origin
    cache:
      enabled: true
      staleWhileRevalidateSeconds: 0
      staleIfErrorSeconds: 0`))
})
after(async () => { await gw.close(); await origin.close() })

async function get (path: string, headers: Record<string, string> = {}) {
  const r = await request(gw.url + path, { headers })
  return { status: r.statusCode, headers: r.headers, body: await r.body.text() }
}

/** An origin path answering 200 with `headers` (an array value is sent as repeated lines). */
function serve (path: string, headers: Record<string, string | string[]>) {
  origin.on(path, (_req, res) => {
    res.setHeader('content-type', 'text/plain')
    for (const [k, v] of Object.entries(headers)) res.setHeader(k, v)
    res.end('body ' + path)
  })
}

/** Two requests: was the second one a hit? */
async function secondIsHit (path: string): Promise<boolean> {
  const one = await get(path)
  assert.equal(one.status, 200)
  const two = await get(path)
  assert.equal(two.body, 'body ' + path)
  const hit = String(two.headers['cache-status']).startsWith('sluice; hit')
  assert.equal(origin.count(path), hit ? 1 : 2, path)
  return hit
}

test('e2e Age: an invalid Age is ignored, so the response is still a hit', async () => {
  for (const [i, age] of ['abc', '-7200', '7200.0'].entries()) {
    serve(`/age/bad${i}`, { 'cache-control': 'max-age=60', age })
    assert.equal(await secondIsHit(`/age/bad${i}`), true, age)
  }
})

test('e2e Age: the first value of a list or of two lines is used', async () => {
  serve('/age/list', { 'cache-control': 'max-age=60', age: '0, 7200' })
  assert.equal(await secondIsHit('/age/list'), true)
  serve('/age/lines', { 'cache-control': 'max-age=60', age: ['0', '7200'] })
  assert.equal(await secondIsHit('/age/lines'), true)
  serve('/age/old', { 'cache-control': 'max-age=60', age: '3600, 3600' })
  assert.equal(await secondIsHit('/age/old'), false, 'Age 3600 is past max-age=60')
  serve('/age/old-fresh', { 'cache-control': 'max-age=7200', age: '3600, 3600' })
  assert.equal(await secondIsHit('/age/old-fresh'), true)
  const r = await get('/age/old-fresh')
  assert.ok(Number(r.headers.age) >= 3600, `Age ${String(r.headers.age)}`)
  serve('/age/huge', { 'cache-control': 'max-age=60', age: '99999999999' })
  assert.equal(await secondIsHit('/age/huge'), false)
})

test('e2e Expires: the three date forms in the future are hits', async () => {
  const at = new Date(Date.now() + 3_600_000)
  const imf = at.toUTCString()
  const days = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday']
  const p2 = (n: number) => String(n).padStart(2, '0')
  const time = `${p2(at.getUTCHours())}:${p2(at.getUTCMinutes())}:${p2(at.getUTCSeconds())}`
  const mon = imf.slice(8, 11)
  const rfc850 = `${days[at.getUTCDay()]}, ${p2(at.getUTCDate())}-${mon}-${p2(at.getUTCFullYear() % 100)} ${time} GMT`
  const asctime = `${imf.slice(0, 3)} ${mon} ${String(at.getUTCDate()).padStart(2, ' ')} ${time} ${at.getUTCFullYear()}`
  for (const [name, expires] of [['imf', imf], ['rfc850', rfc850], ['asctime', asctime]]) {
    assert.ok(!Number.isNaN(parseHttpDate(expires)), expires)
    serve(`/exp/${name}`, { expires })
    assert.equal(await secondIsHit(`/exp/${name}`), true, expires)
  }
})

test('e2e Expires: UTC, a one-digit hour, dashes, doubled spaces or two values are not served from cache', async () => {
  const at = new Date(Date.now() + 3_600_000)
  const imf = at.toUTCString()
  const cases: Record<string, string | string[]> = {
    utc: imf.replace('GMT', 'UTC'),
    hour: imf.replace(/ \d\d:/, ' 9:'),
    dashes: imf.replace(/(\d\d) (\w{3}) (\d{4})/, '$1-$2-$3'),
    spaces: imf.replace(', ', ',  '),
    twolines: [imf, imf],
    twovalues: `${imf}, ${imf}`
  }
  for (const [name, expires] of Object.entries(cases)) {
    serve(`/exp-bad/${name}`, { expires })
    assert.equal(await secondIsHit(`/exp-bad/${name}`), false, `${name}: ${String(expires)}`)
  }
})

test('e2e CDN-Cache-Control: a valid dictionary wins over Cache-Control, a wrong type falls back to it', async () => {
  serve('/cdn/ok', { 'cache-control': 'no-store', 'cdn-cache-control': 'max-age=60' })
  assert.equal(await secondIsHit('/cdn/ok'), true)
  serve('/cdn/string', { 'cache-control': 'no-store', 'cdn-cache-control': 'max-age="10000"' })
  assert.equal(await secondIsHit('/cdn/string'), false, 'max-age="10000" voids CDN-Cache-Control: no-store applies')
  serve('/cdn/string-cc', { 'cache-control': 'max-age=60', 'cdn-cache-control': 'max-age="10000"' })
  assert.equal(await secondIsHit('/cdn/string-cc'), true)
  const r = await get('/cdn/string-cc')
  assert.match(String(r.headers['cache-status']), /^sluice; hit; ttl=(5[89]|60)$/, 'the lifetime is Cache-Control\'s 60 s')
  serve('/cdn/unparsable', { 'cache-control': 'no-store', 'cdn-cache-control': 'max-age=60,' })
  assert.equal(await secondIsHit('/cdn/unparsable'), false)
  serve('/cdn/nostore', { 'cache-control': 'max-age=60', 'cdn-cache-control': 'no-store' })
  assert.equal(await secondIsHit('/cdn/nostore'), false)
})

test('e2e If-Modified-Since: a stored 200 without Last-Modified is judged by its Date', async () => {
  const sent = new Date(Math.floor(Date.now() / 1000) * 1000)
  origin.on('/ims/no-lm', (_req, res) => { res.writeHead(200, { 'cache-control': 'max-age=600', date: sent.toUTCString() }); res.end('x') })
  assert.equal((await get('/ims/no-lm')).status, 200)
  const same = await get('/ims/no-lm', { 'if-modified-since': sent.toUTCString() })
  assert.equal(same.status, 304)
  assert.equal(same.body, '')
  const later = await get('/ims/no-lm', { 'if-modified-since': new Date(sent.getTime() + 60_000).toUTCString() })
  assert.equal(later.status, 304)
  const earlier = await get('/ims/no-lm', { 'if-modified-since': new Date(sent.getTime() - 3_000_000).toUTCString() })
  assert.equal(earlier.status, 200)
  assert.equal(earlier.body, 'x')
  assert.equal(origin.count('/ims/no-lm'), 1, 'every answer came from the cache')
})

test('e2e If-Modified-Since: with Last-Modified that is compared; If-None-Match takes precedence', async () => {
  const now = Math.floor(Date.now() / 1000) * 1000
  const lm = new Date(now - 3_600_000).toUTCString()
  origin.on('/ims/lm', (_req, res) => { res.writeHead(200, { 'cache-control': 'max-age=600', 'last-modified': lm, etag: '"v1"' }); res.end('y') })
  assert.equal((await get('/ims/lm')).status, 200)
  assert.equal((await get('/ims/lm', { 'if-modified-since': lm })).status, 304)
  assert.equal((await get('/ims/lm', { 'if-modified-since': new Date(now - 7_200_000).toUTCString() })).status, 200, 'modified since an earlier IMS (Date is later but Last-Modified rules)')
  assert.equal((await get('/ims/lm', { 'if-modified-since': lm, 'if-none-match': '"v2"' })).status, 200, 'If-None-Match wins and does not match')
  assert.equal((await get('/ims/lm', { 'if-modified-since': new Date(now - 7_200_000).toUTCString(), 'if-none-match': '"v1"' })).status, 304)
  assert.equal(origin.count('/ims/lm'), 1)
})
