// Test helper: a real Sluice gateway on loopback ports chosen by the OS, configured from a
// YAML string written to a temp directory; logs are captured for assertions.
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import type { IncomingHttpHeaders } from 'node:http'
import pino from 'pino'
import { request } from 'undici'
import { startGateway, type Gateway } from '../../src/main.js'

export interface TestGateway {
  gw: Gateway
  url: string
  adminUrl: string
  file: string
  dir: string
  logs: Record<string, unknown>[]
  /** Replace the config file's contents (does not reload by itself unless watching). */
  write (yaml: string): void
  close (): Promise<void>
}

const tempDirs: string[] = []
// Temp config directories live until the test file's process exits.
process.once('exit', () => { for (const d of tempDirs) rmSync(d, { recursive: true, force: true }) })

export function tempConfig (yaml: string): { dir: string; file: string } {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-test-'))
  tempDirs.push(dir)
  const file = join(dir, 'sluice.yaml')
  writeFileSync(file, yaml)
  return { dir, file }
}

export async function startTestGateway (yaml: string, opts: { watch?: boolean; level?: string; now?: () => number } = {}): Promise<TestGateway> {
  const { dir, file } = tempConfig(yaml)
  const logs: Record<string, unknown>[] = []
  const sink = new Writable({
    write (chunk, _enc, cb) {
      for (const line of String(chunk).split('\n')) if (line) logs.push(JSON.parse(line))
      cb()
    }
  })
  const log = pino({ level: opts.level ?? 'info' }, sink)
  const gw = await startGateway({ configFile: file, log, watch: opts.watch ?? false, proxyPort: 0, adminPort: 0, now: opts.now })
  const url = gw.proxyUrl.replace('0.0.0.0', '127.0.0.1')
  return {
    gw,
    url,
    adminUrl: gw.adminUrl,
    file,
    dir,
    logs,
    write: (y: string) => writeFileSync(file, y),
    close: async () => {
      await gw.close(2000)
      rmSync(dir, { recursive: true, force: true })
    }
  }
}

/** A minimal config in front of one origin. */
/** simpleConfig with its one route (named `cached`) caching: `cache: { enabled: true }`. */
export function cachedConfig (originUrl: string): string {
  return simpleConfig(originUrl).replace(`  - name: all
    match: { pathPrefix: / }
    upstream: origin`, `  - name: cached
    match: { pathPrefix: / }
    upstream: origin
    cache: { enabled: true }`)
}

/** A GET through a gateway: status, headers, and the body as text. */
export async function getText (base: string, path: string, headers: Record<string, string> = {}): Promise<{ status: number, headers: IncomingHttpHeaders, body: string }> {
  const r = await request(base + path, { headers })
  return { status: r.statusCode, headers: r.headers, body: await r.body.text() }
}

export function simpleConfig (originUrl: string, extra = ''): string {
  return `
listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0 }
log: { level: info, accessLog: true }
upstreams:
  origin:
    url: ${originUrl}
    timeoutMs: 2000
    connectTimeoutMs: 1000
routes:
  - name: all
    match: { pathPrefix: / }
    upstream: origin
${extra}`
}
