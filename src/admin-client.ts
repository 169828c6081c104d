// The CLI's side of the admin API: `sluice status`, `sluice purge`, `sluice config diff`.
// The admin address and token come from --admin / SLUICE_ADMIN_URL and SLUICE_ADMIN_TOKEN,
// or else from the config file (admin.host, admin.port, admin.token).
import { request } from 'undici'
import { loadConfigFile } from './config/load.js'
import { compile } from './config/compile.js'
import { diffSnapshots } from './config/diff.js'
import { redactConfig } from './config/redact.js'
import type { Config } from './config/schema.js'

export interface AdminTarget { url: string; token: string }

export function adminTarget (opts: { admin?: string; config: string }): AdminTarget {
  const envUrl = opts.admin ?? process.env.SLUICE_ADMIN_URL
  let token = process.env.SLUICE_ADMIN_TOKEN ?? ''
  if (envUrl) return { url: envUrl.replace(/\/$/, ''), token }
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
