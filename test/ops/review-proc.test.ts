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
import { createServer, type Socket } from 'node:net'
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
import { repo } from './ops-helpers.js'

function sluice (args: string[], env: Record<string, string | undefined> = {}): { status: number | null, stdout: string, stderr: string } {
  const [cmd, argv] = cliCommand(args)
  const base = { ...process.env }
  delete base.SLUICE_CONFIG
  delete base.SLUICE_ADMIN_URL
  const r = spawnSync(cmd, argv, { cwd: repo(), env: { ...base, ...env }, encoding: 'utf8', timeout: 60000 })
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}

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

