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

test('an Expect: 100-continue upload that spans a reload replacing the pools goes out on the new pool (not 502 on the closed one)', async () => {
  const a = await origin((o) => o.on('*', (_q, res, body) => { res.writeHead(200); res.end('a:' + body.toString()) }))
  const b = await origin((o) => o.on('*', (_q, res, body) => { res.writeHead(200); res.end('b:' + body.toString()) }))
  const yaml = (timeoutMs: number) => `upstreams:
  api:
    targets: ["${a.url}", "${b.url}"]
    timeoutMs: ${timeoutMs}
routes:
  - name: r
    upstream: api
`
  const g = await gateway(yaml(10000))
  const port = Number(new URL(g.url).port)
  const s = connect(port, '127.0.0.1')
  await once(s, 'connect')
  let got = ''
  s.setEncoding('latin1')
  s.on('data', (d: string) => { got += d })
  s.write('POST /x HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n')
  await until('the 100 Continue', () => got.startsWith('HTTP/1.1 100'))
  // A reload that changes the pool settings: every target gets a new pool, the old ones close.
  await reload(g, yaml(9000))
  s.write('hello')
  await once(s, 'end')
  const head = got.slice(got.indexOf('\r\n\r\n') + 4)
  assert.match(head, /^HTTP\/1\.1 200/, got)
  assert.match(got, /\r\n[ab]:hello\r\n/, got)
})

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
