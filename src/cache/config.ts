// The cache's config schema lives beside the cache implementation (src/httpcache/config.ts).
export * from '../httpcache/config.js'
