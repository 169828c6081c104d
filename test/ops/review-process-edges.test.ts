// The gateway as a process, at its edges:
//  - a SIGTERM at any moment of start-up, even while the CLI's own modules still load, ends it
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
import { cliCommand, startedUrls } from '../helpers/cli.js'
import { until } from '../helpers/wait.js'
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
