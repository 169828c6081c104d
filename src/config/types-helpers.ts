// Small TypeBox helpers shared by every config schema file.
import { Type, type TSchema, type ObjectOptions, type TProperties } from '@sinclair/typebox'
export { Type }

/** A strict object: unknown keys are errors. */
export const Strict = <T extends TProperties>(props: T, opts: ObjectOptions = {}) =>
  Type.Object(props, { additionalProperties: false, ...opts })

/**
 * The longest duration a millisecond setting may hold: 2^31 - 1 ms (about 24.8 days). Node runs
 * a longer timer after 1 ms (TimeoutOverflowWarning), so `timeoutMs: 3000000000` would have
 * timed every request out at once.
 */
export const MAX_MS = 2_147_483_647

export const Ms = (def: number, description: string, min = 0) =>
  Type.Integer({ minimum: min, maximum: MAX_MS, default: def, description: `${description} (milliseconds)` })

export const Seconds = (def: number, description: string) =>
  Type.Integer({ minimum: 0, default: def, description: `${description} (seconds)` })

export const Bytes = (def: number, description: string, min = 0) =>
  Type.Integer({ minimum: min, default: def, description: `${description} (bytes)` })

export const Bool = (def: boolean, description: string) => Type.Boolean({ default: def, description })

/**
 * An object whose own defaults are applied when it is absent. It is required in the
 * validated (defaulted) config, so the TypeScript type has it; the JSON Schema printed for
 * editors drops keys with a default from `required` (see jsonSchemaForEditors).
 */
export const WithDefault = <T extends TSchema>(schema: T) => Type.Unsafe<T['static']>({ ...schema, default: {} })

/**
 * The schema as editors should see it: a key with a default is never required, and a value the
 * schema constrains (a number, a boolean, a string with a pattern or a fixed set) may instead
 * be a string holding a ${VAR} or ${VAR:-default} reference, which the loader replaces before
 * it validates. Without that, an editor marked `port: ${PORT:-8080}` as an error in every
 * shipped example config, although Sluice loads it.
 */
export function jsonSchemaForEditors (schema: unknown): unknown {
  return allowEnvRefs(optionalDefaults(schema))
}

function optionalDefaults (schema: unknown): unknown {
  if (Array.isArray(schema)) return schema.map(optionalDefaults)
  if (schema === null || typeof schema !== 'object') return schema
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(schema)) out[k] = optionalDefaults(v)
  const props = out.properties as Record<string, { default?: unknown }> | undefined
  if (Array.isArray(out.required) && props) {
    out.required = (out.required as string[]).filter((k) => props[k]?.default === undefined)
    if ((out.required as string[]).length === 0) delete out.required
  }
  return out
}

/** A string that holds at least one reference, as the loader's interpolation reads them. */
const ENV_REF_SCHEMA = Object.freeze({ type: 'string', pattern: '\\$\\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\\}', description: '${VAR} or ${VAR:-default}: replaced from the environment when the file is loaded' })
/** Annotations an editor shows on hover: kept on the outer schema of a wrapped value. */
const ANNOTATIONS = ['title', 'description', 'default', 'examples', 'deprecated']

/** A schema for one scalar value that a string with a reference would fail. */
function constrainedScalar (s: Record<string, unknown>): boolean {
  if (s.type === 'integer' || s.type === 'number' || s.type === 'boolean') return true
  if (s.type === 'string') return typeof s.pattern === 'string' || Array.isArray(s.enum) || 'const' in s || typeof s.format === 'string' || typeof s.maxLength === 'number'
  return s.type === undefined && 'const' in s && (s.const === null || typeof s.const !== 'object')
}

function allowEnvRefs (schema: unknown): unknown {
  if (Array.isArray(schema)) return schema.map(allowEnvRefs)
  if (schema === null || typeof schema !== 'object') return schema
  const s = schema as Record<string, unknown>
  if (Array.isArray(s.anyOf) && (s.anyOf as Record<string, unknown>[]).some((b) => b !== null && typeof b === 'object' && constrainedScalar(b))) {
    // A union of scalars (`auto` or a number, a fixed set of words): one more branch.
    const out: Record<string, unknown> = {}
    for (const [k, v] of Object.entries(s)) out[k] = k === 'anyOf' ? [...(v as Record<string, unknown>[]).map((b) => constrainedScalar(b) ? b : allowEnvRefs(b)), { ...ENV_REF_SCHEMA }] : allowEnvRefs(v)
    return out
  }
  if (constrainedScalar(s)) {
    const inner: Record<string, unknown> = {}
    const outer: Record<string, unknown> = {}
    for (const [k, v] of Object.entries(s)) (ANNOTATIONS.includes(k) ? outer : inner)[k] = v
    if ('description' in outer) inner.description = outer.description
    return { ...outer, anyOf: [inner, { ...ENV_REF_SCHEMA }] }
  }
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(s)) out[k] = allowEnvRefs(v)
  return out
}
