// Test helpers: Redis topologies beyond one plain server, all real processes on loopback ports
// chosen free, in a temp dir that stop() removes with the processes.
// - startSentinelSet(): a master, one replica and three sentinels monitoring them as `mymaster`.
// - startTlsRedis(): a redis-server that speaks only TLS, with a CA and a server certificate made
//   by the machine's openssl (SAN IP:127.0.0.1).
import { spawn, execFileSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { once } from 'node:events'
import { Redis, type RedisOptions } from 'ioredis'
import { reservePort } from './ports.js'
import { until } from './wait.js'

class Procs {
  readonly dir = mkdtempSync(join(tmpdir(), 'sluice-redis-'))
  readonly procs: ChildProcess[] = []
  readonly clients: Redis[] = []
  spawn (args: string[]): ChildProcess {
    const p = spawn('redis-server', args, { stdio: 'ignore' })
    p.on('error', () => {})
    this.procs.push(p)
    return p
  }
  client (port: number, opts: RedisOptions = {}): Redis {
    const c = new Redis(port, '127.0.0.1', { maxRetriesPerRequest: 1, ...opts })
    c.on('error', () => {})
    this.clients.push(c)
    return c
  }
  async stop (): Promise<void> {
    for (const c of this.clients) c.disconnect()
    await Promise.all(this.procs.map(async (p) => {
      if (p.exitCode !== null || p.signalCode !== null) return
      p.kill('SIGKILL')
      await once(p, 'exit').catch(() => {})
    }))
    rmSync(this.dir, { recursive: true, force: true })
  }
}

const BASE = ['--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--protected-mode', 'no', '--loglevel', 'warning']

export interface SentinelSet {
  /** The sentinels as host:port (what redis.sentinels takes). */
  sentinels: string[]
  masterPort: number
  replicaPort: number
  /** A plain client to a data node, by port (closed by stop()). */
  node (port: number): Redis
  /** A client to the first sentinel (closed by stop()). */
  sentinel (): Redis
  /** The port the sentinels name as master now. */
  currentMaster (): Promise<number>
  stop (): Promise<void>
}

export async function startSentinelSet (): Promise<SentinelSet> {
  const p = new Procs()
  try {
    const masterPort = await reservePort()
    const replicaPort = await reservePort()
    p.spawn(['--port', String(masterPort), '--dir', p.dir, ...BASE])
    p.spawn(['--port', String(replicaPort), '--dir', p.dir, '--replicaof', '127.0.0.1', String(masterPort), ...BASE])
    const replica = p.client(replicaPort)
    await until('the replica syncs', async () => /master_link_status:up/.test(await replica.info('replication')), { tries: 300 })
    const sentinelPorts: number[] = []
    for (let i = 0; i < 3; i++) {
      const port = await reservePort()
      sentinelPorts.push(port)
      const conf = join(p.dir, `sentinel-${port}.conf`)
      writeFileSync(conf, [
        `port ${port}`, 'bind 127.0.0.1', 'protected-mode no', `dir ${p.dir}`,
        `sentinel monitor mymaster 127.0.0.1 ${masterPort} 2`,
        'sentinel down-after-milliseconds mymaster 1000',
        'sentinel failover-timeout mymaster 3000',
        'sentinel parallel-syncs mymaster 1', ''
      ].join('\n'))
      const s = spawn('redis-server', [conf, '--sentinel', '--loglevel', 'warning'], { stdio: 'ignore' })
      s.on('error', () => {})
      p.procs.push(s)
    }
    const s0 = p.client(sentinelPorts[0])
    await until('the sentinels know the replica and each other', async () => {
      const replicas = await s0.call('SENTINEL', 'REPLICAS', 'mymaster') as unknown[]
      const others = await s0.call('SENTINEL', 'SENTINELS', 'mymaster') as unknown[]
      return replicas.length === 1 && others.length === 2
    }, { tries: 300 })
    return {
      sentinels: sentinelPorts.map((x) => `127.0.0.1:${x}`),
      masterPort,
      replicaPort,
      node: (port) => p.client(port),
      sentinel: () => s0,
      currentMaster: async () => Number(((await s0.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', 'mymaster')) as string[])[1]),
      stop: () => p.stop()
    }
  } catch (err) {
    await p.stop()
    throw err
  }
}

export interface TlsRedis {
  port: number
  /** PEM file of the CA that signed the server certificate. */
  caFile: string
  /** A TLS client that trusts the CA (closed by stop()). */
  client (): Redis
  stop (): Promise<void>
}

export async function startTlsRedis (): Promise<TlsRedis> {
  const p = new Procs()
  try {
    const d = p.dir
    const ossl = (...args: string[]) => execFileSync('openssl', args, { cwd: d, stdio: 'ignore' })
    ossl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=sluice-test-ca')
    ossl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=127.0.0.1')
    writeFileSync(join(d, 'san.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n')
    ossl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.pem', '-days', '2', '-extfile', 'san.ext')
    const port = await reservePort()
    p.spawn(['--port', '0', '--tls-port', String(port), '--tls-cert-file', join(d, 'server.pem'), '--tls-key-file', join(d, 'server.key'),
      '--tls-ca-cert-file', join(d, 'ca.pem'), '--tls-auth-clients', 'no', '--dir', d, ...BASE])
    const caFile = join(d, 'ca.pem')
    const ca = readFileSync(caFile)
    const client = () => p.client(port, { tls: { ca } })
    const probe = client()
    await until('the TLS server answers', async () => (await probe.ping()) === 'PONG', { tries: 300 })
    return { port, caFile, client, stop: () => p.stop() }
  } catch (err) {
    await p.stop()
    throw err
  }
}
