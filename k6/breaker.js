// Breaker: one scenario hammers /api/fail (the example origin answers 503), which opens the
// `api` upstream's circuit breaker (errorThresholdPercent 50 over volumeThreshold 20). While
// it is open, Sluice answers 503 SLUICE_ERR_CIRCUIT_OPEN with Retry-After instead of calling
// the origin, and a second scenario keeps reading cached products: they are served (fresh,
// or stale within staleIfErrorSeconds), so readers see no failures.
//   k6 run k6/breaker.js
// Watch it: Grafana "Circuit breaker state", or curl -H "Authorization: Bearer $TOKEN" localhost:9901/admin/upstreams
import http from 'k6/http'
import { check, sleep } from 'k6'
import { Rate } from 'k6/metrics'
import { BASE_URL, DURATION, makeOptions, recordCache } from './lib/options.js'

const breakerOpen = new Rate('breaker_open_answers')

export const options = makeOptions({
  scenarios: {
    failing: { executor: 'constant-arrival-rate', rate: 30, timeUnit: '1s', duration: DURATION, preAllocatedVUs: 10, maxVUs: 50, exec: 'failing' },
    readers: { executor: 'constant-vus', vus: 5, duration: DURATION, exec: 'read', startTime: '0s' }
  },
  // The failing scenario's 503s are the point of the test: thresholds apply to readers.
  thresholds: {
    'http_req_duration{scenario:readers}': ['p(95)<500'],
    'http_req_failed{scenario:readers}': ['rate<0.01'],
    'cache_hits{scenario:readers}': ['rate>0.5'],
    // Most calls to the failing endpoint are answered by the open breaker, not the origin.
    breaker_open_answers: ['rate>0.5']
  }
})

export function setup () {
  for (let i = 1; i <= 5; i++) http.get(`${BASE_URL}/api/products/${i}`)
}

export function failing () {
  const res = http.get(`${BASE_URL}/api/fail`, { responseCallback: http.expectedStatuses(503), tags: { name: '/api/fail' } })
  const open = res.status === 503 && (res.body || '').includes('SLUICE_ERR_CIRCUIT_OPEN')
  breakerOpen.add(open)
  check(res, {
    '503': (r) => r.status === 503,
    'open breaker sends Retry-After': (r) => !open || Number(r.headers['Retry-After']) >= 1
  })
}

export function read () {
  const res = http.get(`${BASE_URL}/api/products/${1 + Math.floor(Math.random() * 5)}`, { tags: { name: '/api/products/:id' } })
  recordCache(res)
  check(res, { 'reads still 200': (r) => r.status === 200 })
  sleep(0.1)
}
