// The CLI's side of the admin API: `sluice status`, `sluice health`, `sluice purge`,
// `sluice config diff`. The admin address comes from --admin / SLUICE_ADMIN_URL, else from the
// state file the running gateway of that config file wrote (its admin address as it listens),
// else from the config file (admin.host, admin.port); the token from SLUICE_ADMIN_TOKEN, else
// the config file (admin.token).
import { createHash } from 'node:crypto'
import { readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import type { AddressInfo } from 'node:net'
import { request } from 'undici'
import { loadConfigFile } from './config/load.js'
import { compile } from './config/compile.js'
import { diffSnapshots } from './config/diff.js'
import { redactConfig } from './config/redact.js'
import type { Config } from './config/schema.js'

export interface AdminTarget { url: string; token: string }

/**
 * The state file of the gateway that runs `configFile`: `sluice-admin-<hash of the file's
 * absolute path>.json` in the OS temporary directory. The process that listens on the admin
 * port (a single process, or a cluster's primary) writes it once it listens; the admin
 * commands read it first, so they reach the running process even while the file on disk is
 * being edited (invalid, or naming another admin port: a change that waits for a restart).
 */
export function adminStateFile (configFile: string): string {
  const id = createHash('sha256').update(resolve(configFile)).digest('hex').slice(0, 16)
  return join(tmpdir(), `sluice-admin-${id}.json`)
}

/** The URL a local client reaches a listening address on (0.0.0.0 and :: on loopback). */
export function localUrl (a: AddressInfo): string {
  const host = a.address === '0.0.0.0' ? '127.0.0.1' : a.address === '::' ? '::1' : a.address
  return `http://${host.includes(':') ? `[${host}]` : host}:${a.port}`
}

/**
 * Note this process's admin address for `configFile` (see adminStateFile); removed when the
 * process exits. Best effort: a temporary directory that cannot be written (a read-only root
 * file system) leaves the admin commands with the config file, as before. Returns the error.
 */
export function writeAdminState (configFile: string, admin: AddressInfo): Error | null {
  const file = adminStateFile(configFile)
  try {
    const tmp = `${file}.${process.pid}`
    writeFileSync(tmp, JSON.stringify({ pid: process.pid, admin: localUrl(admin), config: resolve(configFile) }) + '\n')
    renameSync(tmp, file)
  } catch (err) {
    return err as Error
  }
  process.once('exit', () => {
    // Only our own: a gateway started since with the same file has written its own.
    try { if ((JSON.parse(readFileSync(file, 'utf8')) as { pid?: number }).pid === process.pid) unlinkSync(file) } catch { /* gone */ }
  })
  return null
}

/** The admin URL the running gateway of `configFile` noted, or null (none, or its process is gone). */
export function runningAdminUrl (configFile: string): string | null {
  let state: { pid?: unknown; admin?: unknown }
  try { state = JSON.parse(readFileSync(adminStateFile(configFile), 'utf8')) } catch { return null }
  if (typeof state.pid !== 'number' || typeof state.admin !== 'string') return null
  try {
    process.kill(state.pid, 0)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return null // ESRCH: that process is gone
  }
  return state.admin
}

export function adminTarget (opts: { admin?: string; config: string }): AdminTarget {
  const envUrl = opts.admin ?? process.env.SLUICE_ADMIN_URL
  let token = process.env.SLUICE_ADMIN_TOKEN ?? ''
  if (envUrl) return { url: envUrl.replace(/\/$/, ''), token }
  const running = runningAdminUrl(opts.config)
  if (running !== null) {
    // The token may still come from the file; one being edited gives none (`health` needs none).
    if (!token) { try { token = loadConfigFile(opts.config).config.admin.token } catch { /* none */ } }
    return { url: running, token }
  }
  const { config } = loadConfigFile(opts.config)
  const host = config.admin.host === '0.0.0.0' ? '127.0.0.1' : config.admin.host === '::' ? '[::1]' : config.admin.host
  if (!token) token = config.admin.token
  return { url: `http://${host.includes(':') && !host.startsWith('[') ? `[${host}]` : host}:${config.admin.port}`, token }
}

export async function adminCall (t: AdminTarget, method: 'GET' | 'POST', path: string, body?: unknown): Promise<{ status: number; json: unknown }> {
  const res = await request(t.url + path, {
    method,
    headers: { ...(t.token ? { authorization: `Bearer ${t.token}` } : {}), ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    body: body !== undefined ? JSON.stringify(body) : undefined
  })
  const text = await res.body.text()
  let json: unknown = text
  try { json = JSON.parse(text) } catch { /* keep text */ }
  return { status: res.statusCode, json }
}

/** What a reload of `file` would change against the running gateway. */
export async function configDiff (t: AdminTarget, file: string): Promise<string[]> {
  const loaded = loadConfigFile(file)
  // The running config comes back with its secrets redacted: redact this one alike (a changed
  // secret value alone is then not reported).
  const local = redactConfig(loaded.config) as Config
  const next = compile(local, local as unknown as Record<string, unknown>, file)
  const { status, json } = await adminCall(t, 'GET', '/admin/config')
  if (status !== 200) throw new Error(`GET /admin/config answered ${status}: ${JSON.stringify(json)}`)
  const running = (json as { config: Config }).config
  const prev = compile(running, running as unknown as Record<string, unknown>, 'running')
  return diffSnapshots(prev, next)
}

export function formatStatus (s: Record<string, any>): string { // eslint-disable-line @typescript-eslint/no-explicit-any
  const ms = (v: number | null) => v == null ? '-' : `${(v * 1000).toFixed(v < 0.01 ? 2 : 0)}ms`
  const lines = [`sluice ${s.version}  config ${s.configVersion}  ${s.status}${s.degraded?.length ? ` (${s.degraded.join(', ')})` : ''}  up ${s.uptimeSeconds}s  rss ${Math.round(s.memory.rssBytes / 1048576)}MB`, '', 'ROUTE                MATCH                          UPSTREAM      CACHE  HIT%    REQS      P50      P99']
  for (const r of s.routes) {
    const match = `${r.host === '*' ? '' : r.host}${r.pathPrefix}${r.methods ? ` [${r.methods.join(',')}]` : ''}`
    lines.push(`${r.name.padEnd(20)} ${match.padEnd(30)} ${r.upstream.padEnd(13)} ${(r.cache ? 'on' : 'off').padEnd(6)} ${(r.cacheHitRatio == null ? '-' : (r.cacheHitRatio * 100).toFixed(1)).padEnd(7)} ${String(r.latency.count).padStart(6)} ${ms(r.latency.p50).padStart(8)} ${ms(r.latency.p99).padStart(8)}`)
  }
  lines.push('', 'UPSTREAM      BREAKER     POOL (connected/running/pending)  URL')
  for (const [name, u] of Object.entries<any>(s.upstreams)) { // eslint-disable-line @typescript-eslint/no-explicit-any
    const p = u.pool ?? {}
    const ts: any[] = Array.isArray(u.targets) ? u.targets : [] // eslint-disable-line @typescript-eslint/no-explicit-any
    lines.push(`${name.padEnd(13)} ${(u.breaker?.state ?? 'closed').padEnd(11)} ${`${p.connected ?? 0}/${p.running ?? 0}/${p.pending ?? 0}`.padEnd(33)} ${ts.length > 1 ? `${ts.length} targets, ${u.balance}` : u.url}`)
    // Several targets: one line each, with its state.
    if (ts.length > 1) {
      for (const t of ts) {
        const state = !t.healthy ? 'UNHEALTHY' : t.ejected ? `EJECTED ${Math.ceil(t.ejectedForMs / 1000)}s` : 'up'
        lines.push(`  ${String(t.target).padEnd(24)} ${state.padEnd(14)} w${t.weight}  in-flight ${t.inFlight}${t.lastCheck && !t.lastCheck.ok ? `  last check: ${t.lastCheck.detail}` : ''}`)
      }
    }
  }
  return lines.join('\n')
}
