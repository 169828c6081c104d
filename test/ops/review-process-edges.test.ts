// The gateway as a process, at its edges:
//  - a SIGTERM at any moment of start-up (while the CLI's own modules still load, between the
//    proxy and the admin port binding) ends it
//    in the orderly way (a log line, exit 0), never by the signal;
//  - `sluice health` probes the admin address the running process listens on, even when the
//    config file on disk is being edited (invalid, or naming another admin port).
import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { once } from 'node:events'
import { existsSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startOrigin } from '../helpers/origin.js'
import { tempConfig } from '../helpers/gateway.js'
import { cliCommand, spawnCli, startedUrls } from '../helpers/cli.js'
import { until } from '../helpers/wait.js'
import { reservePort } from '../helpers/ports.js'
import { repo } from './ops-helpers.js'

/**
 * A `--import` for node that holds the loading of every module whose URL contains `hold` until
 * the file `release` exists, and writes the file `marker` when it starts holding (a module
 * loader hook: the disk is slow, nothing in Sluice is replaced).
 */
function holdImport (hold: string, marker: string, release: string): string {
  const hook = `import { existsSync, writeFileSync } from 'node:fs'
export async function load (url, context, next) {
  if (url.includes(${JSON.stringify(hold)})) {
    writeFileSync(${JSON.stringify(marker)}, url)
    while (!existsSync(${JSON.stringify(release)})) await new Promise((r) => setTimeout(r, 10))
  }
  return next(url, context)
}`
  const preload = `import { register } from 'node:module'; register(${JSON.stringify('data:text/javascript,' + encodeURIComponent(hook))})`
  return 'data:text/javascript,' + encodeURIComponent(preload)
}

async function gatewayConfig (t: TestContext, admin = 'admin: { host: 127.0.0.1, port: 0 }'): Promise<{ file: string; yaml: string }> {
  const origin = await startOrigin()
  t.after(() => origin.close())
  const yaml = `listen: { host: 127.0.0.1, port: 0 }
${admin}
upstreams:
  origin: { url: "${origin.url}" }
routes:
  - { name: all, match: { pathPrefix: / }, upstream: origin }
`
  return { file: tempConfig(yaml).file, yaml }
}

test('review-process-edges: a SIGTERM while the CLI still loads its modules ends start-up (log line, exit 0), not the process by the signal', { timeout: 60000 }, async (t) => {
  const { file } = await gatewayConfig(t)
  const dir = mkdtempSync(join(tmpdir(), 'sluice-hold-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const marker = join(dir, 'held')
  const release = join(dir, 'release')
  const [cmd, args] = cliCommand(['--config', file])
  // The config schema's module is one the gateway cannot start without: its load is held.
  const child = spawn(cmd, ['--import', holdImport('/src/config/schema.', marker, release), ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  t.after(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
  const out: string[] = []
  child.stdout!.on('data', (d) => out.push(String(d)))
  child.stderr!.on('data', (d) => out.push(String(d)))
  const exited = once(child, 'exit')
  await until('the CLI is loading the config modules', () => existsSync(marker), { tries: 800, intervalMs: 25, detail: () => out.join('') })
  child.kill('SIGTERM')
  // Loading goes on (the handler itself needs the config modules for the log level).
  writeFileSync(release, '')
  const [code, signal] = await exited
  assert.equal(signal, null, 'killed by the SIGTERM: ' + out.join(''))
  assert.equal(code, 0, out.join(''))
  const line = out.join('').split('\n').find((l) => l.includes('"signal":"SIGTERM"'))
  assert.ok(line, 'a log line names the signal: ' + out.join(''))
})

/**
 * A `--import` for node that holds the listen() of the server bound to `port` until the file
 * `release` exists (then binds it for real), and writes the file `marker` when it holds it.
 */
function holdListen (port: number, marker: string, release: string): string {
  const code = `import net from 'node:net'
import { existsSync, writeFileSync } from 'node:fs'
const listen = net.Server.prototype.listen
net.Server.prototype.listen = function (...args) {
  if (args[0] === null || typeof args[0] !== 'object' || args[0].port !== ${port}) return listen.apply(this, args)
  writeFileSync(${JSON.stringify(marker)}, '')
  const t = setInterval(() => { if (existsSync(${JSON.stringify(release)})) { clearInterval(t); listen.apply(this, args) } }, 10)
  return this
}`
  return 'data:text/javascript,' + encodeURIComponent(code)
}

test('review-process-edges: a SIGTERM after the proxy port is bound and before the admin port is ends start-up the same way (log line, exit 0)', { timeout: 60000 }, async (t) => {
  const adminPort = await reservePort()
  const { file } = await gatewayConfig(t, `admin: { host: 127.0.0.1, port: ${adminPort} }`)
  const dir = mkdtempSync(join(tmpdir(), 'sluice-hold-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const marker = join(dir, 'held')
  const release = join(dir, 'release')
  const [cmd, args] = cliCommand(['--config', file])
  const child = spawn(cmd, ['--import', holdListen(adminPort, marker, release), ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  t.after(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
  const out: string[] = []
  child.stdout!.on('data', (d) => out.push(String(d)))
  child.stderr!.on('data', (d) => out.push(String(d)))
  const exited = once(child, 'exit')
  await until('the admin port is about to bind (the proxy port is)', () => existsSync(marker), { tries: 800, intervalMs: 25, detail: () => out.join('') })
  child.kill('SIGTERM')
  writeFileSync(release, '')
  const [code, signal] = await exited
  assert.equal(signal, null, 'killed by the SIGTERM: ' + out.join(''))
  assert.equal(code, 0, out.join(''))
  assert.ok(out.join('').split('\n').some((l) => l.includes('"signal":"SIGTERM"')), 'a log line names the signal: ' + out.join(''))
})

/** `sluice ARGS` run to its end, with no SLUICE_CONFIG or SLUICE_ADMIN_URL from the test's environment. */
function sluice (args: string[]): { status: number | null; out: string } {
  const [cmd, argv] = cliCommand(args)
  const env = { ...process.env }
  delete env.SLUICE_CONFIG
  delete env.SLUICE_ADMIN_URL
  const r = spawnSync(cmd, argv, { cwd: repo(), env, encoding: 'utf8', timeout: 60000 })
  return { status: r.status, out: r.stdout + r.stderr }
}

test('review-process-edges: `sluice health` passes for the running gateway while its config file is invalid or names another admin port', { timeout: 120000 }, async (t) => {
  const adminPort = await reservePort()
  const { file, yaml } = await gatewayConfig(t, `admin: { host: 127.0.0.1, port: ${adminPort} }`)
  const { child, out, exited } = spawnCli(t, ['--config', file])
  await until('the gateway starts', () => { if (child.exitCode !== null) throw new Error('exited'); return startedUrls(out) !== null }, { tries: 400, intervalMs: 50, detail: () => out.join('') })

  const up = sluice(['health', '--config', file])
  assert.equal(up.status, 0, up.out)

  // Being edited: not YAML at all. The hot reload fails; the process serves on.
  writeFileSync(file, yaml + 'routes: [ {\n')
  await until('the failed reload is logged', () => /config reload failed/.test(out.join('')), { tries: 400, intervalMs: 25, detail: () => out.join('') })
  const invalid = sluice(['health', '--config', file])
  assert.equal(invalid.status, 0, 'an invalid file on disk fails the check of a healthy process: ' + invalid.out)

  // Valid, with another admin port: that change waits for the next restart.
  const otherPort = await reservePort()
  writeFileSync(file, yaml.replace(`port: ${adminPort}`, `port: ${otherPort}`))
  await until('the reload warns about the admin port', () => /takes effect at the next restart/.test(out.join('')), { tries: 400, intervalMs: 25, detail: () => out.join('') })
  const moved = sluice(['health', '--config', file])
  assert.equal(moved.status, 0, 'an admin port changed on disk fails the check of a healthy process: ' + moved.out)
  assert.match(moved.out, new RegExp(`:${adminPort}/healthz`))

  // Stopped: the check fails again (the process is gone, whatever it noted).
  child.kill('SIGTERM')
  const [code] = await exited
  assert.equal(code, 0, out.join(''))
  const down = sluice(['health', '--config', file])
  assert.equal(down.status, 1, down.out)
  assert.match(down.out, /unhealthy/)
})
