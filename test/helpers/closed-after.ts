// Origins and gateways a test file starts as it goes, all closed (last first) when the file
// ends: `const { origin, gateway } = closedAfter()` at the top of the file.
import { after } from 'node:test'
import { startOrigin, type Origin } from './origin.js'
import { startTestGateway, type TestGateway } from './gateway.js'

export function closedAfter (gatewayOpts: Parameters<typeof startTestGateway>[1] = {}): {
  origin: (fn: (o: Origin) => void) => Promise<Origin>
  gateway: (yaml: string) => Promise<TestGateway>
} {
  const closers: (() => Promise<unknown>)[] = []
  after(async () => { for (const c of closers.reverse()) await c().catch(() => {}) })
  return {
    async origin (fn) {
      const o = await startOrigin()
      closers.push(() => o.close())
      fn(o)
      return o
    },
    async gateway (yaml) {
      const g = await startTestGateway(yaml, gatewayOpts)
      closers.push(() => g.close())
      return g
    }
  }
}
