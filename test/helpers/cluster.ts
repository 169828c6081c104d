// Test helper: a real `sluice` cluster (`workers: N`) started through the CLI on reserved
// ports (the primary and its workers report no bound port), ready once /readyz counts every
// worker. A cluster that does not come up is killed, so its pipes never keep a test file alive.
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import { request } from 'undici'
import { tempConfig } from './gateway.js'
import { reservePort } from './ports.js'
import { cliCommand } from './cli.js'

export interface TestCluster {
  child: ChildProcess
  /** Everything the processes printed (for failure messages). */
  out: string[]
  url: string
  admin: string
  /** SIGTERM, then wait for the exit (a no-op once it has exited). */
  stop (): Promise<void>
}

/** `yaml(port, adminPort)` is the whole config file, `workers: N` included. */
export async function startTestCluster (yaml: (port: number, adminPort: number) => string, workers = 2): Promise<TestCluster> {
  const [port, adminPort] = [await reservePort(), await reservePort()]
  const { file } = tempConfig(yaml(port, adminPort))
  const [cmd, args] = cliCommand(['--config', file])
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  const out: string[] = []
  child.stdout!.on('data', (d) => out.push(String(d)))
  child.stderr!.on('data', (d) => out.push(String(d)))
  const c: TestCluster = {
    child,
    out,
    url: `http://127.0.0.1:${port}`,
    admin: `http://127.0.0.1:${adminPort}`,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return
      child.kill('SIGTERM')
      await once(child, 'exit')
    }
  }
  for (let i = 0; i < 300; i++) {
    try {
      const r = await (await request(c.admin + '/readyz')).body.json() as { workers?: { ready: number } }
      if (r.workers?.ready === workers) return c
    } catch { /* not listening yet */ }
    if (child.exitCode !== null) break
    await sleep(50)
  }
  child.kill('SIGKILL')
  throw new Error(`workers not ready: ${out.join('')}`)
}
