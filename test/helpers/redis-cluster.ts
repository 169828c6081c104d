// Test helper: a real 3-master Redis Cluster on loopback, for one test file.
// Three `redis-server --cluster-enabled yes` processes on free ports (bus ports chosen free too,
// with --cluster-port), joined by `redis-cli --cluster create ... --cluster-yes`, in a temp dir
// that stop() removes with the processes.
import { spawn, execFile, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { once } from 'node:events'
import { promisify } from 'node:util'
import { Redis, Cluster } from 'ioredis'
import { reservePort } from './ports.js'
import { until } from './wait.js'

const run = promisify(execFile)

export interface RedisClusterHandle {
  /** Seed nodes as host:port. */
  nodes: string[]
  /** A fresh key prefix per test file. */
  prefix: string
  /** A new ioredis Cluster client (closed by stop()). */
  client (): Cluster
  /** A plain client to one node (closed by stop()). */
  node (i: number): Redis
  stop (): Promise<void>
}

export async function startRedisCluster (masters = 3): Promise<RedisClusterHandle> {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-redis-cluster-'))
  const procs: ChildProcess[] = []
  const clients: (Redis | Cluster)[] = []
  const ports: number[] = []
  const stop = async (): Promise<void> => {
    for (const c of clients) c.disconnect()
    await Promise.all(procs.map(async (p) => {
      if (p.exitCode !== null || p.signalCode !== null) return
      p.kill('SIGKILL')
      await once(p, 'exit').catch(() => {})
    }))
    rmSync(dir, { recursive: true, force: true })
  }
  try {
    for (let i = 0; i < masters; i++) {
      const port = await reservePort()
      let bus = await reservePort()
      while (bus === port || ports.includes(bus)) bus = await reservePort()
      ports.push(port)
      const p = spawn('redis-server', [
        '--port', String(port), '--bind', '127.0.0.1', '--cluster-enabled', 'yes',
        '--cluster-port', String(bus), '--cluster-config-file', join(dir, `nodes-${port}.conf`),
        '--cluster-node-timeout', '2000', '--dir', dir, '--save', '', '--appendonly', 'no',
        '--protected-mode', 'no', '--loglevel', 'warning'
      ], { stdio: 'ignore' })
      p.on('error', () => {})
      procs.push(p)
    }
    const nodes = ports.map((p) => `127.0.0.1:${p}`)
    const node = (i: number): Redis => {
      const c = new Redis(ports[i], '127.0.0.1', { maxRetriesPerRequest: 1, lazyConnect: false })
      c.on('error', () => {})
      clients.push(c)
      return c
    }
    const admins = ports.map((_, i) => node(i))
    await until('every node answers', async () => (await Promise.all(admins.map((c) => c.ping()))).every((r) => r === 'PONG'))
    await run('redis-cli', ['--cluster', 'create', ...nodes, '--cluster-replicas', '0', '--cluster-yes'], { timeout: 20_000 })
    await until('cluster_state:ok on every node', async () => {
      const infos = await Promise.all(admins.map((c) => c.cluster('INFO') as Promise<string>))
      return infos.every((s) => s.includes('cluster_state:ok') && s.includes(`cluster_known_nodes:${masters}`))
    })
    return {
      nodes,
      prefix: `sluice-test:${process.pid}:${Math.random().toString(36).slice(2, 8)}:`,
      node,
      client () {
        const c = new Cluster(nodes.map((n) => ({ host: '127.0.0.1', port: Number(n.split(':')[1]) })), { redisOptions: { maxRetriesPerRequest: 1 } })
        c.on('error', () => {})
        clients.push(c)
        return c
      },
      stop
    }
  } catch (err) {
    await stop()
    throw err
  }
}
