// The CLI as a process: a SIGHUP that arrives while the gateway is still starting.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { createServer, type Socket } from 'node:net'
import { startOrigin } from '../helpers/origin.js'
import { tempConfig } from '../helpers/gateway.js'
import { cliCommand, startedUrls } from '../helpers/cli.js'
import { until } from '../helpers/wait.js'

test('a SIGHUP while the gateway is starting (waiting for Redis) does not kill it: it starts, then reloads', async (t) => {
  const origin = await startOrigin()
  // A "Redis" that accepts and never answers: startup waits for it (redis.connectTimeoutMs).
  const sockets = new Set<Socket>()
  const silent = createServer((s) => { sockets.add(s); s.on('error', () => {}) }).listen(0, '127.0.0.1')
  await once(silent, 'listening')
  const port = (silent.address() as { port: number }).port
  t.after(async () => { for (const s of sockets) s.destroy(); silent.close(); await origin.close() })
  const { file } = tempConfig(`listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0 }
redis: { url: "redis://127.0.0.1:${port}", connectTimeoutMs: 1500 }
upstreams:
  origin: { url: "${origin.url}" }
routes:
  - { name: all, match: { pathPrefix: / }, upstream: origin }
`)
  const [cmd, args] = cliCommand(['--config', file])
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  t.after(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
  const out: string[] = []
  child.stdout!.on('data', (d) => out.push(String(d)))
  child.stderr!.on('data', (d) => out.push(String(d)))
  const exited = once(child, 'exit')
  // The gateway has connected to "Redis" and waits for it to answer: it is mid-start.
  await until('the gateway connects to redis', () => sockets.size > 0, { tries: 400, intervalMs: 25 })
  assert.equal(startedUrls(out), null, 'still starting')
  child.kill('SIGHUP')
  await until('the gateway starts', () => startedUrls(out) !== null || child.exitCode !== null || child.signalCode !== null, { tries: 400, intervalMs: 25 })
  assert.equal(child.signalCode, null, 'killed by the SIGHUP: ' + out.join(''))
  assert.notEqual(startedUrls(out), null, out.join(''))
  await until('the SIGHUP is served as a reload', () => /"trigger":"SIGHUP"/.test(out.join('')), { tries: 400, intervalMs: 25 })
  child.kill('SIGTERM')
  await exited
})
