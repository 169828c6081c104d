// A `sluice` CLI process held in the middle of its start-up: its Redis is a loopback socket
// that accepts and never answers, so start-up waits (redis.connectTimeoutMs) until the test
// signals it. For the tests of signals that arrive while the gateway starts.
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { createServer, type Socket } from 'node:net'
import type { TestContext } from 'node:test'
import { startOrigin } from './origin.js'
import { tempConfig } from './gateway.js'
import { cliCommand } from './cli.js'
import { until } from './wait.js'

export interface StartingCli {
  child: ChildProcess
  /** Everything the process wrote, stdout and stderr. */
  out: string[]
  exited: Promise<unknown[]>
}

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
  const [cmd, args] = cliCommand(['--config', file])
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  t.after(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
  const out: string[] = []
  child.stdout!.on('data', (d) => out.push(String(d)))
  child.stderr!.on('data', (d) => out.push(String(d)))
  const exited = once(child, 'exit')
  await until('the gateway connects to redis', () => sockets.size > 0, { tries: 400, intervalMs: 25, detail: () => out.join('') })
  return { child, out, exited }
}
