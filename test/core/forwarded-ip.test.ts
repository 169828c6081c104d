// The client address behind trusted proxies (src/forwarding.ts): an X-Forwarded-For entry with
// the client's port appended (some load balancers write `ip:port`) names the address, so one
// client keeps one rate-limit bucket and one hash target whatever port it came from.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { compileTrust, resolveClientIp } from '../../src/forwarding.js'

const trust = compileTrust(['10.0.0.0/8'])

test('an X-Forwarded-For entry with a port names the address; plain and IPv6 entries are unchanged', () => {
  const ip = (xff: string) => resolveClientIp({ 'x-forwarded-for': xff }, '10.0.0.1', trust)
  assert.equal(ip('203.0.113.7:51234'), '203.0.113.7')
  assert.equal(ip('203.0.113.7:51234, 10.0.0.9:443'), '203.0.113.7')
  assert.equal(ip('[2001:db8::1]:51234'), '2001:db8::1')
  assert.equal(ip('[2001:db8::1]'), '2001:db8::1')
  assert.equal(ip('203.0.113.7'), '203.0.113.7')
  assert.equal(ip('2001:db8::1'), '2001:db8::1')
  assert.equal(ip('::ffff:203.0.113.7'), '203.0.113.7')
  // A trusted hop with a port is still recognised as trusted, and skipped.
  assert.equal(ip('198.51.100.2, 10.0.0.5:8080'), '198.51.100.2')
  // From an untrusted peer the header is ignored.
  assert.equal(resolveClientIp({ 'x-forwarded-for': '203.0.113.7:1' }, '192.0.2.1', trust), '192.0.2.1')
})
