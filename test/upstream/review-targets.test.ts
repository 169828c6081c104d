// Review of upstreams with several targets: reloads that replace a target's pool while a
// request is still on its way (an Expect: 100-continue upload, a late failure on the old
// pool), and targets that share a host:port. Real loopback origins and gateways; waits poll
// conditions, never durations.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { connect } from 'node:net'
import { once } from 'node:events'
import type { TestGateway } from '../helpers/gateway.js'
import { closedAfter } from '../helpers/closed-after.js'
import { until } from '../helpers/wait.js'
import { parseConfig, ConfigError, formatIssue } from '../../src/config/load.js'

const { origin, gateway } = closedAfter({ level: 'debug' })

async function reload (g: TestGateway, yaml: string): Promise<void> {
  g.write(yaml)
  const r = await fetch(g.adminUrl + '/admin/reload', { method: 'POST' })
  assert.equal(r.status, 200, await r.text())
}

test('two targets with the same host:port (the target label) are refused at load, naming the key path', () => {
  const yaml = `upstreams:
  api:
    targets: ["http://127.0.0.1:8080/a", "http://127.0.0.1:8080/b"]
routes:
  - name: r
    upstream: api
`
  assert.throws(() => parseConfig(yaml, 'test.yaml', {}), (err: unknown) => {
    assert.ok(err instanceof ConfigError)
    const msgs = err.issues.map(formatIssue).join('\n')
    assert.match(msgs, /upstreams\.api\.targets\[1\].*127\.0\.0\.1:8080/, msgs)
    return true
  })
})
