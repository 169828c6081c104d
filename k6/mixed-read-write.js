// Mixed read/write: 90% cacheable reads, 10% writes (POST, never cached, always forwarded),
// and a version bump now and then followed by a tag purge through the admin API, the way a
// deploy would. Reads should still hit more than half the time.
//   SLUICE_ADMIN_TOKEN=... k6 run k6/mixed-read-write.js
import http from 'k6/http'
import { check } from 'k6'
import { Counter } from 'k6/metrics'
import { BASE_URL, ADMIN_URL, ADMIN_TOKEN, VUS, DURATION, makeOptions, baseThresholds, recordCache } from './lib/options.js'

const purges = new Counter('purges')

export const options = makeOptions({
  scenarios: {
    readers: { executor: 'constant-vus', vus: Math.max(1, Math.round(VUS * 0.9)), duration: DURATION, exec: 'read' },
    writers: { executor: 'constant-vus', vus: Math.max(1, Math.round(VUS * 0.1)), duration: DURATION, exec: 'write' },
    deploys: { executor: 'constant-arrival-rate', rate: 1, timeUnit: '20s', duration: DURATION, preAllocatedVUs: 1, exec: 'deploy' }
  },
  thresholds: baseThresholds,
  // Only reads are expected to hit.
  extraThresholds: { 'cache_hits{scenario:readers}': ['rate>0.5'], 'http_req_failed{scenario:writers}': ['rate<0.01'] }
})

export function read () {
  const id = 1 + Math.floor(Math.random() * 20)
  const path = Math.random() < 0.5 ? '/api/products' : `/api/products/${id}`
  const res = http.get(BASE_URL + path, { tags: { name: path === '/api/products' ? path : '/api/products/:id' } })
  recordCache(res)
  check(res, { 'read 200': (r) => r.status === 200 })
}

export function write () {
  const res = http.post(BASE_URL + '/api/orders', JSON.stringify({ product: 1 + Math.floor(Math.random() * 50), qty: 1 }), {
    headers: { 'Content-Type': 'application/json' },
    tags: { name: 'POST /api/orders' }
  })
  check(res, {
    'write 200': (r) => r.status === 200,
    'write bypasses the cache': (r) => /fwd=bypass/.test(r.headers['Cache-Status'] || '') || !r.headers['Cache-Status']
  })
}

/** A deploy: the origin's data changes, then the products tag is purged on every replica. */
export function deploy () {
  http.post(BASE_URL + '/api/version', null, { tags: { name: 'POST /api/version' } })
  const res = http.post(ADMIN_URL + '/admin/purge', JSON.stringify({ tag: 'products' }), {
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${ADMIN_TOKEN}` },
    tags: { name: 'POST /admin/purge' }
  })
  check(res, { 'purge 200': (r) => r.status === 200 })
  purges.add(1)
}
