// The gateway as a process, from an operations review:
//  - a SIGTERM while the gateway is still starting (waiting for Redis) ends it cleanly: exit 0
//    and a log line, without waiting for start-up to finish (Docker would wait its stop timeout);
//  - the image's HEALTHCHECK probes the admin port the config sets, not a fixed 9901;
//  - a config file that cannot be read is reported without a made-up line:col position;
//  - a cluster worker too slow to answer a /metrics scrape still counts, with its last values.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, spawnSync, execFileSync } from 'node:child_process'
import { once } from 'node:events'
import { readFileSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { startOrigin } from '../helpers/origin.js'
import { tempConfig } from '../helpers/gateway.js'
import { cliCommand, startedUrls } from '../helpers/cli.js'
import { startTestCluster } from '../helpers/cluster.js'
import { reservePort } from '../helpers/ports.js'
import { until } from '../helpers/wait.js'
import { startingCli } from '../helpers/starting-cli.js'
import { repo } from './ops-helpers.js'

function sluice (args: string[], env: Record<string, string | undefined> = {}): { status: number | null, stdout: string, stderr: string } {
  const [cmd, argv] = cliCommand(args)
  const base = { ...process.env }
  delete base.SLUICE_CONFIG
  delete base.SLUICE_ADMIN_URL
  const r = spawnSync(cmd, argv, { cwd: repo(), env: { ...base, ...env }, encoding: 'utf8', timeout: 60000 })
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}

test('review-proc: a SIGTERM while the gateway waits for Redis at start-up ends it: exit 0 and a log line, no start', { timeout: 60000 }, async (t) => {
  const { child, out, exited } = await startingCli(t, 120000)
  assert.equal(startedUrls(out), null, 'still starting')
  child.kill('SIGTERM')
  // Start-up would wait 120 s for this Redis: the test's 60 s timeout is far shorter.
  const [code, signal] = await exited
  assert.equal(signal, null, 'not killed by the SIGTERM: ' + out.join(''))
  assert.equal(code, 0, out.join(''))
  assert.equal(startedUrls(out), null, 'it did not go on to start: ' + out.join(''))
  const line = out.join('').split('\n').find((l) => l.includes('"signal":"SIGTERM"'))
  assert.ok(line, 'a log line names the signal: ' + out.join(''))
  assert.match(JSON.parse(line).msg, /start/)
})

test('review-proc: a SIGHUP then a SIGINT while starting: the HUP does not kill it, the INT ends it with exit 0', { timeout: 60000 }, async (t) => {
  const { child, out, exited } = await startingCli(t, 120000)
  child.kill('SIGHUP')
  child.kill('SIGINT')
  const [code, signal] = await exited
  assert.equal(signal, null, out.join(''))
  assert.equal(code, 0, out.join(''))
  assert.match(out.join(''), /"signal":"SIGINT"/)
})

/** The exec-form CMD of the Dockerfile's HEALTHCHECK, as an argv. */
function healthcheckArgv (): string[] {
  const lines = readFileSync(repo('Dockerfile'), 'utf8').replace(/\\\n/g, ' ').split('\n')
  const hc = lines.filter((l) => /^HEALTHCHECK\b/.test(l)).at(-1)
  assert.ok(hc, 'the Dockerfile has a HEALTHCHECK')
  const m = /\bCMD\s+(\[.*\])\s*$/.exec(hc)
  assert.ok(m, `HEALTHCHECK uses CMD's exec form: ${hc}`)
  return JSON.parse(m[1]) as string[]
}

/** Runs the HEALTHCHECK's command here: `node` is this node, the image's /app is the compiled tree. */
function runHealthcheck (env: Record<string, string>): { status: number | null, out: string } {
  const argv = healthcheckArgv()
  assert.equal(argv[0], 'node')
  const rest = argv.slice(1)
  // The image runs dist/src/cli.js from /app; here, the CLI this test suite runs.
  const i = rest.indexOf('dist/src/cli.js')
  const [cmd, args] = i >= 0 ? cliCommand(rest.slice(i + 1)) : [process.execPath, rest]
  if (i >= 0) args.unshift(...rest.slice(0, i))
  const base = { ...process.env }
  delete base.SLUICE_CONFIG
  delete base.SLUICE_ADMIN_URL
  const r = spawnSync(cmd, args, { cwd: repo(), env: { ...base, ...env }, encoding: 'utf8', timeout: 30000 })
  return { status: r.status, out: r.stdout + r.stderr }
}

test('review-proc: the image HEALTHCHECK probes the admin port the config sets (not a fixed 9901)', { timeout: 120000 }, async (t) => {
  const origin = await startOrigin()
  t.after(() => origin.close())
  const adminPort = await reservePort()
  const { file } = tempConfig(`listen: { host: 127.0.0.1, port: 0 }
admin: { host: 0.0.0.0, port: ${adminPort}, token: "health-check-test-token-0123456789abcdef" }
upstreams:
  origin: { url: "${origin.url}" }
routes:
  - { name: all, match: { pathPrefix: / }, upstream: origin }
`)
  // Nothing runs yet: the check fails (the image's SLUICE_CONFIG names the config).
  const before = runHealthcheck({ SLUICE_CONFIG: file })
  assert.equal(before.status, 1, before.out)

  const [cmd, args] = cliCommand(['--config', file])
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  const out: string[] = []
  child.stdout!.on('data', (d) => out.push(String(d)))
  child.stderr!.on('data', (d) => out.push(String(d)))
  t.after(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
  await until('the gateway starts', () => { if (child.exitCode !== null) throw new Error('exited'); return startedUrls(out) !== null }, { tries: 400, intervalMs: 50, detail: () => out.join('') })

  const up = runHealthcheck({ SLUICE_CONFIG: file })
  assert.equal(up.status, 0, `the health check passes against admin port ${adminPort}: ${up.out}`)

  // The command itself: an explicit config, and --admin.
  assert.equal(sluice(['health', '--config', file]).status, 0)
  assert.equal(sluice(['health', '--admin', `http://127.0.0.1:${adminPort}`]).status, 0)

  child.kill('SIGTERM')
  await once(child, 'exit')
  const down = runHealthcheck({ SLUICE_CONFIG: file })
  assert.equal(down.status, 1, down.out)
  assert.match(down.out, /unhealthy/)
})

test('review-proc: a config file that does not exist is reported as FILE: cannot read the config file: ENOENT, without a position', { timeout: 120000 }, (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-missing-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const missing = join(dir, 'missing.yaml')
  const esc = missing.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
  const v = sluice(['validate', missing])
  assert.equal(v.status, 1, v.stderr)
  assert.match(v.stderr, new RegExp(`^${esc}: cannot read the config file: ENOENT`, 'm'), v.stderr)
  assert.doesNotMatch(v.stderr, /:0:0|\(file\)/, v.stderr)
  const r = sluice(['run', missing])
  assert.equal(r.status, 1, r.stderr)
  assert.match(r.stderr, new RegExp(`^${esc}: cannot read the config file: ENOENT`, 'm'), r.stderr)
  assert.doesNotMatch(r.stderr, /:0:0|\(file\)/, r.stderr)
  assert.match(r.stderr, /not started/)
})

/** The sum of every sample of a counter in a Prometheus text exposition. */
function total (text: string, name: string): number {
  let sum = 0
  for (const line of text.split('\n')) {
    if (line.startsWith(name + '{') || line.startsWith(name + ' ')) sum += Number(line.split(' ').at(-1))
  }
  return sum
}

/** The primary's worker processes. */
function workerPids (primary: number): number[] {
  let pids: number[] = []
  try { pids = execFileSync('pgrep', ['-P', String(primary)], { encoding: 'utf8' }).trim().split('\n').filter(Boolean).map(Number) } catch { return [] }
  return pids.filter((p) => { try { return /cli\.(js|ts)/.test(readFileSync(`/proc/${p}/cmdline`, 'utf8')) } catch { return false } })
}

test('review-proc: a worker that does not answer a /metrics scrape counts with its last-read values (totals never dip)', { timeout: 120000 }, async (t) => {
  const origin = await startOrigin()
  t.after(() => origin.close())
  const c = await startTestCluster((port, adminPort) => `workers: 2
listen: { host: 127.0.0.1, port: ${port} }
admin: { host: 127.0.0.1, port: ${adminPort} }
log: { level: info, accessLog: false }
upstreams: { origin: { url: "${origin.url}" } }
routes:
  - { name: all, match: { pathPrefix: / }, upstream: origin }
`)
  let frozen: number | undefined
  t.after(async () => { if (frozen !== undefined) process.kill(frozen, 'SIGCONT'); await c.stop() })
  const pids = workerPids(c.child.pid!)
  assert.equal(pids.length, 2)
  // Requests on connections of their own, so both workers serve some.
  const perWorker = async (): Promise<Map<number, number>> => {
    const s = await (await request(c.admin + '/admin/status')).body.json() as { perWorker: { pid: number; requests: number }[] }
    return new Map(s.perWorker.map((w) => [w.pid, w.requests]))
  }
  await until('both workers served requests', async () => {
    const r = await request(c.url + '/', { reset: true })
    await r.body.dump()
    const m = await perWorker()
    return pids.every((p) => (m.get(p) ?? 0) > 0)
  }, { tries: 400, intervalMs: 10, detail: () => c.out.join('') })

  const scrape = async () => (await (await request(c.admin + '/metrics')).body.text())
  const first = total(await scrape(), 'sluice_http_requests_total')
  assert.ok(first > 0)
  // One worker stops answering (it is paused): the next scrape waits for it, then goes on.
  frozen = pids[0]
  process.kill(frozen, 'SIGSTOP')
  const second = total(await scrape(), 'sluice_http_requests_total')
  process.kill(frozen, 'SIGCONT')
  frozen = undefined
  assert.ok(second >= first, `the total went from ${first} to ${second} while a worker was slow to answer`)
  const third = total(await scrape(), 'sluice_http_requests_total')
  assert.ok(third >= second, `${second} then ${third}`)
})
