// Soak: a steady, realistic mix for a long time (default 30 minutes) at a moderate arrival
// rate, to catch what short runs miss: memory growth (watch process_resident_memory_bytes and
// sluice_cache_bytes in Grafana), latency creep, pool or socket leaks.
//   DURATION=2h RATE=200 k6 run k6/soak.js
import http from 'k6/http'
import { check } from 'k6'
import { BASE_URL, makeOptions, cachedThresholds, recordCache } from './lib/options.js'

const RATE = Number(__ENV.RATE || 100)

export const options = makeOptions({
  scenarios: {
    soak: {
      executor: 'ramping-arrival-rate',
      startRate: 0,
      timeUnit: '1s',
      preAllocatedVUs: 50,
      maxVUs: 300,
      stages: [
        { target: RATE, duration: '2m' },
        { target: RATE, duration: __ENV.DURATION || '30m' },
        { target: 0, duration: '1m' }
      ]
    }
  },
  thresholds: cachedThresholds
})

export default function () {
  const r = Math.random()
  let res
  if (r < 0.6) {
    // Hot, cacheable reads; some with query variety (distinct keys, bounded).
    const id = 1 + Math.floor(Math.random() * 50)
    res = http.get(`${BASE_URL}/api/products/${id}`, { headers: { 'Accept-Encoding': 'gzip' }, tags: { name: '/api/products/:id' } })
  } else if (r < 0.85) {
    res = http.get(`${BASE_URL}/api/products`, { headers: { 'Accept-Encoding': 'br' }, tags: { name: '/api/products' } })
  } else if (r < 0.95) {
    res = http.get(`${BASE_URL}/api/time`, { tags: { name: '/api/time' } })
  } else {
    res = http.post(`${BASE_URL}/api/orders`, JSON.stringify({ product: 1 }), { headers: { 'Content-Type': 'application/json' }, tags: { name: 'POST /api/orders' } })
    check(res, { 'write 200': (x) => x.status === 200 })
    return
  }
  recordCache(res)
  check(res, { 'read 200': (x) => x.status === 200 })
}
