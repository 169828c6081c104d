// A `sluice` CLI process held in the middle of its start-up: its Redis is a loopback socket
// that accepts and never answers, so start-up waits (redis.connectTimeoutMs) until the test
// signals it. For the tests of signals that arrive while the gateway starts.
import { once } from 'node:events'
import { createServer, type Socket } from 'node:net'
import type { TestContext } from 'node:test'
import { startOrigin } from './origin.js'
import { tempConfig } from './gateway.js'
import { spawnCli, type CliChild } from './cli.js'
import { until } from './wait.js'

export type StartingCli = CliChild

/** Spawn the CLI and return once it has connected to its silent Redis (it is mid-start). Cleaned up by `t.after`. */
export async function startingCli (t: TestContext, connectTimeoutMs: number): Promise<StartingCli> {
  const origin = await startOrigin()
  const sockets = new Set<Socket>()
  const silent = createServer((s) => { sockets.add(s); s.on('error', () => {}) }).listen(0, '127.0.0.1')
  await once(silent, 'listening')
  const port = (silent.address() as { port: number }).port
  t.after(async () => { for (const s of sockets) s.destroy(); silent.close(); await origin.close() })
  const { file } = tempConfig(`listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0 }
redis: { url: "redis://127.0.0.1:${port}", connectTimeoutMs: ${connectTimeoutMs} }
upstreams:
  origin: { url: "${origin.url}" }
routes:
  - { name: all, match: { pathPrefix: / }, upstream: origin }
`)
  const { child, out, exited } = spawnCli(t, ['--config', file])
  await until('the gateway connects to redis', () => sockets.size > 0, { tries: 400, intervalMs: 25, detail: () => out.join('') })
  return { child, out, exited }
}
