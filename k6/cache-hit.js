// Cache-hit scenario: a small hot set of cacheable JSON resources read many times. After the
// first miss per key, Sluice answers from L1 (or Redis L2): expect cache_hits well above 50%
// and a p95 far below the 500 ms threshold.
//   k6 run k6/cache-hit.js            (BASE_URL, VUS, DURATION)
import http from 'k6/http'
import { check } from 'k6'
import { BASE_URL, VUS, DURATION, makeOptions, cachedThresholds, recordCache } from './lib/options.js'

export const options = makeOptions({
  scenarios: {
    hot_reads: { executor: 'constant-vus', vus: VUS, duration: DURATION }
  },
  thresholds: cachedThresholds
})

const PATHS = ['/api/products', '/api/products/1', '/api/products/2', '/api/products/3', '/api/products/4', '/api/products/5']

export function setup () {
  // Warm the cache once so the run measures hits, not the first misses.
  for (const p of PATHS) http.get(BASE_URL + p)
}

export default function () {
  const path = PATHS[Math.floor(Math.random() * PATHS.length)]
  const res = http.get(BASE_URL + path, { headers: { 'Accept-Encoding': 'br, gzip' }, tags: { name: path.startsWith('/api/products/') ? '/api/products/:id' : path } })
  const hit = recordCache(res)
  check(res, {
    'status 200': (r) => r.status === 200,
    'has Cache-Status': (r) => Boolean(r.headers['Cache-Status']),
    'hit carries Age': (r) => !hit || r.headers['Age'] !== undefined
  })
}
