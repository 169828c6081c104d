#!/usr/bin/env node
// Anchor for the compression miss path: @fastify/http-proxy with plain
// @fastify/compress (its defaults: br quality 4, gzip level 6, threshold 1 KB)
// compressing every response on the fly. Sluice's miss path is compared to it.
//   node bench/anchors/fastify-compress.mjs --port 8083 --upstream http://127.0.0.1:3000
import Fastify from 'fastify'
import compress from '@fastify/compress'
import proxy from '@fastify/http-proxy'
import { arg } from '../lib/args.mjs'

const port = Number(arg('port', 'PORT', 8083))
const upstream = arg('upstream', 'UPSTREAM', 'http://127.0.0.1:3000')

const app = Fastify({ logger: false })
await app.register(compress, { global: true, encodings: ['br', 'gzip'] })
await app.register(proxy, { upstream, undici: { connections: 128, pipelining: 1, keepAliveTimeout: 60_000 } })
await app.listen({ port, host: '127.0.0.1' })
console.log(`fastify-compress listening on ${port} -> ${upstream}`)
// A benchmark process has nothing to drain: exit at once.
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(0))
