#!/usr/bin/env node
// Anchor: a minimal @fastify/http-proxy server (undici pool, keep-alive), no
// other plugins. Sluice's pass-through must reach >= 0.9x its req/s.
//   node bench/anchors/fastify-proxy.mjs --port 8081 --upstream http://127.0.0.1:3000
import Fastify from 'fastify'
import proxy from '@fastify/http-proxy'
import { arg } from '../lib/args.mjs'

const port = Number(arg('port', 'PORT', 8081))
const upstream = arg('upstream', 'UPSTREAM', 'http://127.0.0.1:3000')

const app = Fastify({ logger: false })
await app.register(proxy, { upstream, undici: { connections: 128, pipelining: 1, keepAliveTimeout: 60_000 } })
await app.listen({ port, host: '127.0.0.1' })
console.log(`fastify-proxy listening on ${port} -> ${upstream}`)
// A benchmark process has nothing to drain: exit at once.
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(0))
