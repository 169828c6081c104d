// The YAML of a gateway whose one route caches everything from `originUrl`, with Redis as L2
// (the replicas' shared cache, the purge bus, the fill leases): what the cache's Redis tests
// start, one or several replicas at a time.
export function redisCacheYaml (originUrl: string, redisUrl: string, prefix: string, o: { commandTimeoutMs?: number, upstreamTimeoutMs?: number, port?: number, admin?: number, route?: string } = {}): string {
  return `
listen: { host: 127.0.0.1, port: ${o.port ?? 0} }
admin: { host: 127.0.0.1, port: ${o.admin ?? 0} }
redis: { url: "${redisUrl}", keyPrefix: "${prefix}", commandTimeoutMs: ${o.commandTimeoutMs ?? 500} }
log: { level: info, accessLog: false }
upstreams:
  origin: { url: "${originUrl}", timeoutMs: ${o.upstreamTimeoutMs ?? 5000} }
routes:
  - name: cached
    match: { pathPrefix: / }
    upstream: origin
    cache: { enabled: true }
${o.route ?? ''}`
}
