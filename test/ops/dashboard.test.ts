// The status page as a person sees it: headless Chromium (Debian's `chromium`, driven by
// playwright-core) loads /dashboard from a running Sluice and checks what it shows.
// .ci/run installs chromium; on a machine without it the test says so and is skipped.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { startTestGateway, simpleConfig, type TestGateway } from '../helpers/gateway.js'

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
const skip = existsSync(CHROMIUM) ? false : `no Chromium at ${CHROMIUM} (apt-get install chromium)`

let origin: Origin
let gw: TestGateway
before(async () => {
  origin = await startOrigin()
  gw = await startTestGateway(simpleConfig(origin.url, `  - name: api
    match: { pathPrefix: /api/ }
    upstream: origin
`).replace('admin: { host: 127.0.0.1, port: 0 }', 'admin: { host: 127.0.0.1, port: 0, token: "dash-token" }'))
  for (let i = 0; i < 7; i++) await (await request(gw.url + '/api/item')).body.dump()
})
after(async () => { await gw.close(); await origin.close() })

test('the /dashboard page shows routes, request counts, latency and upstreams after the token is given', { skip, timeout: 60000 }, async () => {
  const { chromium } = await import('playwright-core')
  const profile = mkdtempSync(join(tmpdir(), 'sluice-chromium-'))
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync']
  })
  try {
    const page = await browser.newPage()
    await page.goto(gw.adminUrl + '/dashboard')
    // A token is set: the page asks for it.
    await page.waitForSelector('#login', { state: 'visible' })
    await page.fill('#token', 'dash-token')
    await page.click('#login button')
    await page.waitForFunction(() => document.querySelectorAll('#routes tbody tr').length >= 2)
    const rows = await page.$$eval('#routes tbody tr', (trs) => trs.map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent)))
    const api = rows.find((r) => r[0] === 'api')
    assert.ok(api, JSON.stringify(rows))
    assert.equal(api[5], '7', 'requests counted on the api route')
    assert.match(String(api[6]), /ms$/, 'p50 shown')
    assert.match(await page.textContent('#state') ?? '', /ready/)
    const ups = await page.$$eval('#upstreams tbody tr', (trs) => trs.map((tr) => tr.textContent))
    assert.match(ups[0] ?? '', /origin.*closed/)
    await page.screenshot({ path: join(tmpdir(), 'sluice-dashboard.png'), fullPage: true })
  } finally {
    await browser.close()
    rmSync(profile, { recursive: true, force: true })
  }
})
