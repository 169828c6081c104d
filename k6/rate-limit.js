// Rate limit: one client (every k6 VU shares this machine's IP) sends 100 requests/s to a
// route limited to 50/s with a burst of 100 per client (api-time, /api/time, in
// deploy/sluice.docker.yaml; the other scripts stay off it). About half the requests get 429, each with Retry-After and
// the RateLimit-Policy / RateLimit fields. 429 is the expected answer here, so it does not
// count in http_req_failed; what passes stays near the configured rate.
//   k6 run k6/rate-limit.js            (RATE=100 requests/s by default)
import http from 'k6/http'
import { check } from 'k6'
import { Rate, Counter } from 'k6/metrics'
import { BASE_URL, DURATION, makeOptions, baseThresholds } from './lib/options.js'

const limited = new Rate('rate_limited')
const allowed = new Counter('allowed_requests')
const RATE = Number(__ENV.RATE || 100)
const LIMIT = Number(__ENV.LIMIT_RPS || 50)
const BURST = Number(__ENV.LIMIT_BURST || 100)

// 200-399 and 429 are expected answers.
http.setResponseCallback(http.expectedStatuses({ min: 200, max: 399 }, 429))

export const options = makeOptions({
  scenarios: {
    over_limit: { executor: 'constant-arrival-rate', rate: RATE, timeUnit: '1s', duration: DURATION, preAllocatedVUs: 50, maxVUs: 200 }
  },
  thresholds: baseThresholds,
  extraThresholds: {
    // Some requests must be limited when RATE is above the limit...
    rate_limited: [`rate>${RATE > LIMIT ? ((RATE - LIMIT) / RATE) * 0.5 : 0}`],
    // ...and what passes stays near the limit (burst spread over the run, plus 20% slack).
    allowed_requests: [`rate<${(LIMIT * 1.2 + BURST / 30).toFixed(1)}`]
  }
})

export default function () {
  const res = http.get(`${BASE_URL}/api/time`, { tags: { name: '/api/time' } })
  const is429 = res.status === 429
  limited.add(is429)
  if (!is429) allowed.add(1)
  check(res, {
    'status 200 or 429': (r) => r.status === 200 || r.status === 429,
    '429 has Retry-After': (r) => r.status !== 429 || Number(r.headers['Retry-After']) >= 1,
    '429 has RateLimit-Policy': (r) => r.status !== 429 || Boolean(r.headers['Ratelimit-Policy']),
    '429 has RateLimit': (r) => r.status !== 429 || Boolean(r.headers['Ratelimit'])
  })
}
