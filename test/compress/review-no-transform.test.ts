// A revalidation whose 304 adds Cache-Control: no-transform: the stored entry's compressed
// copies are Sluice's transformation of it, so they go; hits are then served as the origin
// sent the body (RFC 9110 §7.7: a proxy does not transform content marked no-transform).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { request } from 'undici'
import { startOrigin } from '../helpers/origin.js'
import { startTestGateway, simpleConfig } from '../helpers/gateway.js'
import { until } from '../helpers/wait.js'

test('a 304 that adds no-transform drops the entry\'s compressed copies: later hits go out as the origin sent them', async () => {
  const origin = await startOrigin()
  const gw = await startTestGateway(simpleConfig(origin.url).replace('    upstream: origin\n', `    upstream: origin
    cache: { enabled: true }
    compression: { enabled: true, minBytes: 100, encodings: [gzip] }
`))
  const body = JSON.stringify({ items: Array.from({ length: 100 }, (_, i) => ({ id: i, name: `item ${i}` })) })
  let conditional = 0
  origin.on('/nt', (req, res) => {
    if (req.headers['if-none-match'] === '"v1"') {
      conditional++
      res.writeHead(304, { etag: '"v1"', 'cache-control': 'max-age=60, no-transform' })
      res.end()
      return
    }
    res.writeHead(200, { 'content-type': 'application/json', etag: '"v1"', 'cache-control': 'max-age=1' })
    res.end(body)
  })
  const get = async () => {
    const r = await request(gw.url + '/nt', { headers: { 'accept-encoding': 'gzip' } })
    await r.body.arrayBuffer()
    return { cs: String(r.headers['cache-status']), ce: r.headers['content-encoding'] }
  }
  try {
    await get()
    await until('a hit served from the stored gzip copy', async () => { const r = await get(); return r.cs.startsWith('sluice; hit') && r.ce === 'gzip' })
    // The entry goes stale after 1 s; the next request revalidates it (a 304 with no-transform).
    await until('the revalidation', async () => { await get(); return conditional > 0 }, { intervalMs: 100 })
    const hit = await get()
    assert.match(hit.cs, /^sluice; hit/)
    assert.equal(hit.ce, undefined, 'no-transform: not the stored gzip copy')
  } finally { await gw.close(); await origin.close() }
})
