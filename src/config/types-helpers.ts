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

/** The schema as editors should see it: a key with a default is never required. */
export function jsonSchemaForEditors (schema: unknown): unknown {
  if (Array.isArray(schema)) return schema.map(jsonSchemaForEditors)
  if (schema === null || typeof schema !== 'object') return schema
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(schema)) out[k] = jsonSchemaForEditors(v)
  const props = out.properties as Record<string, { default?: unknown }> | undefined
  if (Array.isArray(out.required) && props) {
    out.required = (out.required as string[]).filter((k) => props[k]?.default === undefined)
    if ((out.required as string[]).length === 0) delete out.required
  }
  return out
}
