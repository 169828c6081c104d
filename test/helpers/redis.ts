// Test helper: a real Redis server for a test file.
// Uses REDIS_URL when it is set; otherwise starts its own `redis-server` on a free
// loopback port (no persistence) and stops it when the test file ends.
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { Redis } from 'ioredis'
import { reservePort } from './ports.js'
import { until } from './wait.js'

export interface RedisHandle {
  url: string
  /** A fresh key prefix per test file so parallel files never see each other's keys. */
  prefix: string
  /** Connect a new ioredis client (the caller closes it, or `stop()` does). */
  client(): Redis
  /** Kill the server with SIGKILL (only for a server this helper started). */
  kill(): Promise<void>
  /** Restart a killed server on the same port (only for a server this helper started). */
  restart(): Promise<void>
  /** true when this helper owns the server process (kill/restart work). */
  owned: boolean
  stop(): Promise<void>
}

async function waitForPing(url: string, tries = 100): Promise<void> {
  await until(`redis at ${url} to answer PING`, async () => {
    const c = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, enableOfflineQueue: false, retryStrategy: () => null })
    c.on('error', () => {})
    try {
      await c.connect()
      await c.ping()
      return true
    } finally { c.disconnect() }
  }, { tries, intervalMs: 50 })
}

function startServer(port: number): ChildProcess {
  const child = spawn('redis-server', [
    '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
    '--protected-mode', 'no', '--loglevel', 'warning'
  ], { stdio: 'ignore' })
  child.on('error', () => {})
  return child
}

/**
 * Start (or reuse) a Redis server. Pass `{ own: true }` when the test must kill the
 * server (a shared REDIS_URL server is never killed).
 */
export async function startRedis(opts: { own?: boolean } = {}): Promise<RedisHandle> {
  const prefix = `sluice-test:${process.pid}:${Math.random().toString(36).slice(2, 8)}:`
  const clients: Redis[] = []
  const makeClient = (url: string) => () => {
    const c = new Redis(url, { maxRetriesPerRequest: 1 })
    c.on('error', () => {})
    clients.push(c)
    return c
  }
  if (process.env.REDIS_URL && !opts.own) {
    const url = process.env.REDIS_URL
    await waitForPing(url)
    return {
      url, prefix, owned: false,
      client: makeClient(url),
      kill: async () => { throw new Error('cannot kill a shared REDIS_URL server; use startRedis({ own: true })') },
      restart: async () => { throw new Error('cannot restart a shared REDIS_URL server') },
      stop: async () => {
        const c = new Redis(url); c.on('error', () => {})
        try {
          const keys = await c.keys(prefix + '*')
          if (keys.length) await c.del(...keys)
        } finally { c.disconnect() }
        for (const cl of clients) cl.disconnect()
      }
    }
  }
  const port = await reservePort() // redis-server needs its port on the command line
  const url = `redis://127.0.0.1:${port}`
  let child = startServer(port)
  await waitForPing(url)
  const handle: RedisHandle = {
    url, prefix, owned: true,
    client: makeClient(url),
    kill: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return
      const exited = once(child, 'exit')
      child.kill('SIGKILL')
      await exited
    },
    restart: async () => {
      child = startServer(port)
      await waitForPing(url)
    },
    stop: async () => {
      for (const cl of clients) cl.disconnect()
      if (child.exitCode === null && child.signalCode === null) {
        const exited = once(child, 'exit')
        child.kill('SIGKILL')
        await exited
      }
    }
  }
  return handle
}
