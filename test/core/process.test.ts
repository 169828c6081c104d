// The CLI as operators run it: a real process, real signals.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { createServer } from 'node:net'
import { request } from 'undici'
import { readFileSync } from 'node:fs'
import { Readable } from 'node:stream'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { tempConfig } from '../helpers/gateway.js'
import { cliCommand, startedUrls } from '../helpers/cli.js'

let origin: Origin
before(async () => { origin = await startOrigin() })
after(async () => { await origin.close() })

interface Proc { child: ChildProcess; out: string[]; url: string; adminUrl: string; file: string }

async function startCli (routes = ''): Promise<Proc> {
  // Port 0: the OS picks both ports; the "sluice started" line reports them.
  const { file } = tempConfig(`listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0 }
shutdownGraceMs: 5000
upstreams:
  origin: { url: "${origin.url}", timeoutMs: 5000 }
routes:
  - { name: all, match: { pathPrefix: / }, upstream: origin }
${routes}`)
  const [cmd, args] = cliCommand(['--config', file])
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  const out: string[] = []
  child.stdout!.on('data', (d) => out.push(String(d)))
  child.stderr!.on('data', (d) => out.push(String(d)))
  const end = Date.now() + 15000
  let urls = startedUrls(out)
  while (urls === null) {
    if (child.exitCode !== null) throw new Error('sluice exited: ' + out.join(''))
    if (Date.now() > end) throw new Error('sluice did not start: ' + out.join(''))
    await new Promise((r) => setTimeout(r, 50))
    urls = startedUrls(out)
  }
  return { child, out, ...urls, file }
}

test('SIGTERM drains: a slow request that started before the signal completes with 200, then the process exits 0', async () => {
  let started!: () => void
  const inFlight = new Promise<void>((resolve) => { started = resolve })
  origin.on('/slow', (_req, res) => { started(); setTimeout(() => res.end('finished'), 700) })
  const p = await startCli()
  const pending = request(`${p.url}/slow`)
  await inFlight
  p.child.kill('SIGTERM')
  const r = await pending
  assert.equal(r.statusCode, 200)
  assert.equal(await r.body.text(), 'finished')
  const [code] = await once(p.child, 'exit')
  assert.equal(code, 0, p.out.join(''))
  assert.match(p.out.join(''), /draining/)
})

test('a second SIGTERM during the drain exits at once with code 1, cutting the request still in flight', async () => {
  let started!: () => void
  const inFlight = new Promise<void>((resolve) => { started = resolve })
  origin.on('/slower', (_req, res) => { started(); setTimeout(() => res.end('finished'), 5000) })
  const p = await startCli()
  const pending = request(`${p.url}/slower`).then(async (r) => { await r.body.text(); return r.statusCode }, () => 'cut')
  await inFlight
  p.child.kill('SIGTERM')
  for (let i = 0; i < 100 && !/draining/.test(p.out.join('')); i++) await new Promise((r) => setTimeout(r, 20))
  p.child.kill('SIGTERM')
  const [code] = await once(p.child, 'exit')
  assert.equal(code, 1, p.out.join(''))
  assert.match(p.out.join(''), /second signal while draining/)
  assert.equal(await pending, 'cut')
})

test('SIGHUP reloads the config file', async () => {
  const p = await startCli()
  try {
    const { writeFileSync, readFileSync } = await import('node:fs')
    writeFileSync(p.file, readFileSync(p.file, 'utf8').replace('timeoutMs: 5000', 'timeoutMs: 6000'))
    p.child.kill('SIGHUP')
    const end = Date.now() + 10000
    while (!p.out.join('').includes('config reloaded')) {
      if (Date.now() > end) throw new Error('no reload: ' + p.out.join(''))
      await new Promise((r) => setTimeout(r, 50))
    }
    assert.match(p.out.join(''), /"trigger":"SIGHUP"/)
  } finally {
    p.child.kill('SIGTERM')
    await once(p.child, 'exit')
  }
})

test('a port already in use is a clear error and exit code 1', async () => {
  const busy = createServer().listen(0, '127.0.0.1')
  await once(busy, 'listening')
  const port = (busy.address() as { port: number }).port
  const { file } = tempConfig(`listen: { host: 127.0.0.1, port: ${port} }
admin: { host: 127.0.0.1, port: 0 }
upstreams: { origin: { url: "${origin.url}" } }
routes: [ { name: all, upstream: origin } ]
`)
  const [cmd, args] = cliCommand(['--config', file])
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  let err = ''
  child.stderr!.on('data', (d) => { err += d })
  const [code] = await once(child, 'exit')
  busy.close()
  assert.equal(code, 1)
  assert.match(err, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port}: the address is already in use`))
})

test('an invalid config at start is a clear error and exit code 1', async () => {
  const { file } = tempConfig('upstreams: { a: { url: "http://x" } }\nroutes: [ { name: r, upstream: b } ]\n')
  const [cmd, args] = cliCommand(['--config', file])
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  let err = ''
  child.stderr!.on('data', (d) => { err += d })
  const [code] = await once(child, 'exit')
  assert.equal(code, 1)
  assert.match(err, /sluice\.yaml:2:32 routes\[0\]\.upstream: unknown upstream "b"/)
  assert.match(err, /not started: the configuration is not valid/)
})

/** Peak resident memory of a process (VmHWM), in bytes. */
function peakRss (pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m ? Number(m[1]) * 1024 : NaN
}

test('a 50 MB request body streams through the gateway process in bounded memory', async () => {
  let received = 0
  origin.streamBodies = true
  origin.on('/upload', (req, res) => {
    req.on('data', (c: Buffer) => { received += c.length })
    req.on('end', () => { res.end(String(received)); received = 0 })
  })
  const p = await startCli()
  const chunk = Buffer.alloc(64 * 1024, 'x')
  const upload = async (total: number) => {
    async function * body () { for (let sent = 0; sent < total; sent += chunk.length) yield chunk }
    const r = await request(`${p.url}/upload`, { method: 'POST', body: Readable.from(body()), headers: { 'content-length': String(total) } })
    assert.equal(r.statusCode, 200)
    assert.equal(await r.body.text(), String(total))
  }
  try {
    // The first 50 MB settles V8's heap sizing (a one-time step of up to ~50 MB of GC headroom).
    // After that, a 200 MB body must raise the peak by far less than its size: buffering it
    // would add 200 MB; streaming adds at most some garbage awaiting collection.
    await upload(50 * 1024 * 1024)
    const before = peakRss(p.child.pid!)
    await upload(200 * 1024 * 1024)
    const grew = peakRss(p.child.pid!) - before
    assert.ok(grew < 80 * 1024 * 1024, `peak RSS grew by ${Math.round(grew / 1048576)} MB during a 200 MB upload`)
  } finally {
    origin.streamBodies = false
    p.child.kill('SIGTERM')
    await once(p.child, 'exit')
  }
})
