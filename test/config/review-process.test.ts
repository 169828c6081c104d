// The CLI as a process: a SIGHUP that arrives while the gateway is still starting.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { startedUrls } from '../helpers/cli.js'
import { until } from '../helpers/wait.js'
import { startingCli } from '../helpers/starting-cli.js'

test('a SIGHUP while the gateway is starting (waiting for Redis) does not kill it: it starts, then reloads', async (t) => {
  const { child, out, exited } = await startingCli(t, 1500)
  assert.equal(startedUrls(out), null, 'still starting')
  child.kill('SIGHUP')
  await until('the gateway starts', () => startedUrls(out) !== null || child.exitCode !== null || child.signalCode !== null, { tries: 400, intervalMs: 25 })
  assert.equal(child.signalCode, null, 'killed by the SIGHUP: ' + out.join(''))
  assert.notEqual(startedUrls(out), null, out.join(''))
  await until('the SIGHUP is served as a reload', () => /"trigger":"SIGHUP"/.test(out.join('')), { tries: 400, intervalMs: 25 })
  child.kill('SIGTERM')
  await exited
})
