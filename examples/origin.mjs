// The example origin behind `npm start`: a small JSON API with cacheable, uncacheable,
// slow, tagged and streaming endpoints, so every Sluice feature has something to act on.
// PORT (default 3000), HOST (default 127.0.0.1).
import { createServer } from 'node:http'

const port = Number(process.env.PORT ?? 3000)
const host = process.env.HOST ?? '127.0.0.1'
let version = 1

const products = Array.from({ length: 50 }, (_, i) => ({ id: i + 1, name: `Product ${i + 1}`, price: Math.round((i + 1) * 7.5 * 100) / 100, tags: ['demo', i % 2 ? 'odd' : 'even'] }))

function json (res, status, body, headers = {}) {
  const s = JSON.stringify(body)
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(s), ...headers })
  res.end(s)
}

const server = createServer((req, res) => {
  const url = new URL(req.url ?? '/', 'http://origin')
  const p = url.pathname
  if (p === '/' || p === '/api/') {
    return json(res, 200, { service: 'sluice example origin', endpoints: ['/api/products', '/api/products/:id', '/api/time', '/api/slow', '/api/private', '/api/events', '/api/version', '/api/fail'] }, { 'cache-control': 'public, max-age=10' })
  }
  if (p === '/api/products') return json(res, 200, { version, products }, { 'cache-control': 'public, max-age=30', 'cache-tag': 'products', etag: `"products-v${version}"` })
  const m = /^\/api\/products\/(\d+)$/.exec(p)
  if (m) {
    const item = products[Number(m[1]) - 1]
    if (!item) return json(res, 404, { error: 'not found' }, { 'cache-control': 'public, max-age=5' })
    return json(res, 200, item, { 'cache-control': 'public, max-age=60', 'cache-tag': `products product-${item.id}` })
  }
  if (p === '/api/time') return json(res, 200, { now: new Date().toISOString() }, { 'cache-control': 'public, max-age=5, stale-while-revalidate=30' })
  if (p === '/api/slow') { setTimeout(() => json(res, 200, { slow: true }, { 'cache-control': 'no-store' }), Number(url.searchParams.get('ms') ?? 500)); return }
  if (p === '/api/private') return json(res, 200, { secret: 'per-user' }, { 'cache-control': 'private', 'set-cookie': 'session=abc; HttpOnly' })
  if (p === '/api/version' && req.method === 'POST') { version++; return json(res, 200, { version }) }
  if (p === '/api/fail') return json(res, 503, { error: 'failing on purpose' }, { 'retry-after': '5' })
  if (p === '/api/events') {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' })
    let n = 0
    const t = setInterval(() => { res.write(`id: ${++n}\ndata: {"tick":${n}}\n\n`); if (n >= 10) { clearInterval(t); res.end() } }, 500)
    req.on('close', () => clearInterval(t))
    return
  }
  if (req.method === 'POST' || req.method === 'PUT') {
    let size = 0
    req.on('data', (c) => { size += c.length })
    req.on('end', () => json(res, 200, { received: size }))
    return
  }
  json(res, 404, { error: 'not found', path: p })
})
server.listen(port, host, () => console.log(JSON.stringify({ msg: 'example origin listening', url: `http://${host}:${port}` })))
const stop = () => server.close(() => process.exit(0))
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
