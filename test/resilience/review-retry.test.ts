// Review of retries, the breaker and upstream error mapping, as an Envoy / nginx
// (proxy_next_upstream) user expects them, through real gateways in front of real loopback origins.
// - A retry that has to open a connection to a target that drops SYNs (its accept queue full)
//   ends at the request's deadline (timeoutMs), not connectTimeoutMs later.
// - A retry that waits for an upstream budget token waits only until the request's deadline
//   (then the upstream's last answer is sent), not for as long as maxQueueMs allows.
// - The 'upstream error' log line names the target that failed (host:port), not only the upstream.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import net from 'node:net'
import { Readable } from 'node:stream'
import { request } from 'undici'
import { startTestGateway, type TestGateway } from '../helpers/gateway.js'
import { guardProcessHealth } from './helpers.js'
import { reservePort } from '../helpers/ports.js'
import { startOrigin } from '../helpers/origin.js'

guardProcessHealth()

const cleanups: Array<() => Promise<void> | void> = []
after(async () => { for (const c of cleanups.reverse()) await c() })

/**
 * An origin in a child process that answers its first request 503 (Retry-After: 1, Connection:
 * close), then stops itself (SIGSTOP): the kernel still completes handshakes into its accept
 * queue (backlog 1) but nobody accepts. Once `fill()` has queued connections up to the backlog,
 * every further connect hangs, as to a host that drops SYNs.
 */
async function stoppingOrigin (): Promise<{ url: string; stopped: Promise<void>; fill: () => Promise<void> }> {
  const child: ChildProcess = spawn(process.execPath, ['-e', `
const s = require('node:http').createServer((req, res) => {
  res.writeHead(503, { 'retry-after': '1', connection: 'close', 'content-type': 'text/plain', 'content-length': '4' })
  res.end('down', () => { process.stdout.write('stop\\n'); setTimeout(() => process.kill(process.pid, 'SIGSTOP'), 20) })
})
s.listen({ host: '127.0.0.1', port: 0, backlog: 1 }, () => process.stdout.write(s.address().port + '\\n'))
`], { stdio: ['ignore', 'pipe', 'inherit'] })
  const fillers: net.Socket[] = []
  cleanups.push(() => { for (const s of fillers) s.destroy(); child.kill('SIGKILL') })
  const lines: string[] = []
  let onLine: () => void = () => {}
  child.stdout?.on('data', (d) => { lines.push(...String(d).split('\n').filter(Boolean)); onLine() })
  const line = (pred: (l: string) => boolean): Promise<string> => new Promise((resolve) => {
    const check = (): void => { const l = lines.find(pred); if (l !== undefined) resolve(l) }
    const prev = onLine
    onLine = () => { prev(); check() }
    check()
  })
  const port = Number(await line((l) => /^\d+$/.test(l)))
  const stopped = line((l) => l === 'stop').then(async () => {
    // Stopped for sure once /proc says so (T), or after a moment where there is no /proc.
    for (let i = 0; i < 100; i++) {
      await new Promise((resolve) => setTimeout(resolve, 10))
      try {
        const { readFileSync } = await import('node:fs')
        if (/\) T /.test(readFileSync(`/proc/${child.pid}/stat`, 'utf8'))) return
      } catch { if (i > 20) return }
    }
  })
  const fill = async (): Promise<void> => {
    // Two handshakes complete into the stopped listener's queue (backlog 1); the rest would hang.
    const connected: Array<Promise<void>> = []
    for (let i = 0; i < 2; i++) {
      const s = net.connect(port, '127.0.0.1')
      s.on('error', () => {})
      fillers.push(s)
      connected.push(new Promise((resolve) => s.once('connect', () => resolve())))
    }
    await Promise.all(connected)
  }
  return { url: `http://127.0.0.1:${port}`, stopped, fill }
}

async function gateway (yaml: string): Promise<TestGateway> {
  const g = await startTestGateway(yaml, { level: 'warn' })
  cleanups.push(() => g.close())
  return g
}

test('a retry whose connect hangs ends at the route deadline (504), not connectTimeoutMs later', { timeout: 20000 }, async () => {
  const o = await stoppingOrigin()
  const g = await gateway(`
listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0 }
log: { level: warn, accessLog: false }
upstreams:
  main:
    url: ${o.url}
    timeoutMs: 2500
    connectTimeoutMs: 60000
    circuitBreaker: { enabled: false }
    retry: { attempts: 1, backoffMs: 10, maxBackoffMs: 2000 }
routes:
  - name: main
    match: { pathPrefix: / }
    upstream: main
`)
  // The first attempt gets the 503 (Retry-After: 1 s); the retry, 1 s later, must connect again.
  const sent = request(g.url + '/x', { headersTimeout: 12000 })
  await o.stopped
  await o.fill()
  const r = await sent.catch((err: Error) => err)
  assert.ok(!(r instanceof Error), `the gateway answered within the route's deadline, not connectTimeoutMs later (${r instanceof Error ? r.message : ''})`)
  const body = await r.body.json() as { error: string; message: string }
  assert.equal(r.statusCode, 504)
  assert.equal(body.error, 'SLUICE_ERR_UPSTREAM_TIMEOUT')
  assert.match(body.message, /before the deadline/)
})

test('the upstream error log line names the target that failed, with several targets', async () => {
  const up = await startOrigin()
  cleanups.push(() => up.close())
  up.on('/t', (_req, res) => { res.end('ok') })
  const dead = await reservePort() // nothing listens: refused
  const g = await gateway(`
listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0 }
log: { level: warn, accessLog: false }
upstreams:
  pair:
    targets: [ "http://127.0.0.1:${dead}", "${up.url}" ]
    timeoutMs: 3000
    circuitBreaker: { enabled: false }
    outlierDetection: { consecutiveErrors: 1000 }
routes:
  - name: main
    match: { pathPrefix: / }
    upstream: pair
`)
  // A POST is not retried nor failed over on a refused connection when its body streams, so
  // each request that round-robin sends to the dead target ends there with 502.
  let failed = 0
  for (let i = 0; i < 6 && failed === 0; i++) {
    const r = await request(g.url + '/t', { method: 'POST', body: Readable.from([Buffer.from('x'.repeat(100))]), headers: { 'content-type': 'text/plain' } })
    const text = await r.body.text()
    if (r.statusCode === 502) {
      failed++
      const body = JSON.parse(text) as { error: string; message: string }
      assert.equal(body.error, 'SLUICE_ERR_UPSTREAM_CONNECT')
      assert.ok(!body.message.includes(String(dead)), 'the client is not told the target')
    }
  }
  assert.equal(failed, 1, 'round-robin sent one request to the refusing target')
  const line = g.logs.find((l) => l.msg === 'upstream error' && l.code === 'SLUICE_ERR_UPSTREAM_CONNECT')
  assert.ok(line, 'logged')
  assert.equal(line.upstream, 'pair')
  assert.equal(line.target, `127.0.0.1:${dead}`)
})

test('a retry queued for the upstream budget waits only until the deadline, then the last answer is sent', { timeout: 20000 }, async () => {
  const up = await startOrigin()
  cleanups.push(() => up.close())
  let seen = 0
  up.on('/busy', (_req, res) => { seen++; res.writeHead(503, { 'content-type': 'text/plain' }); res.end('busy') })
  // One token per 50 s: the first attempt takes the only one, so the retry would wait ~50 s,
  // which maxQueueMs allows, while the request's deadline is 1.5 s away.
  const g = await gateway(`
listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0 }
log: { level: warn, accessLog: false }
upstreams:
  main:
    url: ${up.url}
    timeoutMs: 1500
    rateLimit: { requestsPerSecond: 0.02, burst: 1, maxQueueMs: 60000 }
    circuitBreaker: { enabled: false }
    retry: { attempts: 1, backoffMs: 10, maxBackoffMs: 50 }
routes:
  - name: main
    match: { pathPrefix: / }
    upstream: main
`)
  const r = await request(g.url + '/busy', { headersTimeout: 12000 }).catch((err: Error) => err)
  assert.ok(!(r instanceof Error), `answered at the deadline, not after the budget's queue (${r instanceof Error ? r.message : ''})`)
  assert.equal(r.statusCode, 503)
  assert.equal(await r.body.text(), 'busy', "the upstream's own answer, as for any retry that cannot be sent")
  assert.equal(seen, 1, 'the retry was never sent')
})
