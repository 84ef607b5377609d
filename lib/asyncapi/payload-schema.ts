/** A class, as `design:paramtypes` records a parameter's declared type. */
export type DtoClass = abstract new (...args: any[]) => unknown;

/** A JSON Schema object (draft-07, which AsyncAPI 3.0's default schema format extends). */
export type JsonSchema = Record<string, unknown>;

interface StandardJsonSchemaProps {
  jsonSchema?: { input?: (options: { target: string }) => JsonSchema };
  vendor?: string;
}

/**
 * A Standard Schema's JSON Schema, through `~standard.jsonSchema` (Standard JSON Schema v1: Zod 4,
 * ArkType, Valibot through its adapter). Undefined when the library offers none or cannot convert it.
 */
export function standardJsonSchema(schema: unknown): JsonSchema | undefined {
  const props = (schema as { '~standard'?: StandardJsonSchemaProps } | null | undefined)?.['~standard'];
  const input = props?.jsonSchema?.input;
  if (typeof input !== 'function') return undefined;
  try {
    const { $schema: _dialect, ...json } = input({ target: 'draft-07' });
    return json;
  } catch {
    // "May throw if conversion is not supported" (the spec): a transform, a custom check.
    return undefined;
  }
}

interface ValidationMetadata {
  type: string;
  name?: string;
  propertyName: string;
  constraints?: unknown[];
  each?: boolean;
}

/**
 * A class-validator DTO's JSON Schema, from the decorators class-validator records: types, formats,
 * enums, bounds, optional and nested properties. A decorator it does not map adds nothing (the
 * property is still listed). Undefined without class-validator or without decorators.
 */
export function classValidatorJsonSchema(dto: DtoClass, seen = new Set<DtoClass>()): JsonSchema | undefined {
  let storage: { getTargetValidationMetadatas(t: DtoClass, s: string, a: boolean, b: boolean): ValidationMetadata[] };
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- optional: only an app that validates with class-validator has it
    storage = (require('class-validator') as { getMetadataStorage(): typeof storage }).getMetadataStorage();
  } catch {
    return undefined;
  }
  const metas = storage.getTargetValidationMetadatas(dto, '', true, false);
  if (!metas.length) return undefined;
  seen.add(dto);
  const properties: Record<string, JsonSchema> = {};
  const optional = new Set<string>();
  for (const m of metas) {
    const p = (properties[m.propertyName] ??= {});
    if (m.type === 'conditionalValidation' && m.name === 'isOptional') optional.add(m.propertyName);
    else if (m.type === 'nestedValidation') {
      const nested = Reflect.getMetadata('design:type', dto.prototype, m.propertyName) as DtoClass | undefined;
      const inner = nested && nested !== Array && !seen.has(nested) ? classValidatorJsonSchema(nested, seen) : undefined;
      if (inner) Object.assign(p.type === 'array' ? ((p.items as JsonSchema | undefined) ?? (p.items = {})) : p, inner);
    } else if (m.type === 'customValidation' && m.name) {
      const rule = ruleOf(m.name, m.constraints ?? []);
      if (!rule) continue;
      if (m.each) {
        p.type = 'array';
        Object.assign((p.items ??= {}) as JsonSchema, rule);
      } else Object.assign(p, rule);
    }
  }
  const required = Object.keys(properties).filter((k) => !optional.has(k));
  return { type: 'object', title: dto.name, properties, ...(required.length ? { required } : {}) };
}

/** One class-validator decorator as JSON Schema keywords. */
function ruleOf(name: string, c: unknown[]): JsonSchema | undefined {
  switch (name) {
    case 'isString':
      return { type: 'string' };
    case 'isNumber':
      return { type: 'number' };
    case 'isInt':
      return { type: 'integer' };
    case 'isBoolean':
      return { type: 'boolean' };
    case 'isArray':
      return { type: 'array' };
    case 'isObject':
      return { type: 'object' };
    case 'isEmail':
      return { type: 'string', format: 'email' };
    case 'isUuid':
      return { type: 'string', format: 'uuid' };
    case 'isUrl':
      return { type: 'string', format: 'uri' };
    case 'isDateString':
    case 'isIso8601':
      return { type: 'string', format: 'date-time' };
    case 'isIn':
      return Array.isArray(c[0]) ? { enum: c[0] } : undefined;
    case 'isEnum':
      return Array.isArray(c[1]) ? { enum: c[1] } : undefined;
    case 'min':
      return { minimum: c[0] };
    case 'max':
      return { maximum: c[0] };
    case 'minLength':
      return { minLength: c[0] };
    case 'maxLength':
      return { maxLength: c[0] };
    case 'isPositive':
      return { exclusiveMinimum: 0 };
    case 'isNotEmpty':
      // Not '', null or undefined: for a string, at least one character.
      return { minLength: 1 };
    case 'arrayNotEmpty':
      return { minItems: 1 };
    case 'arrayMinSize':
      return { minItems: c[0] };
    case 'arrayMaxSize':
      return { maxItems: c[0] };
    default:
      return undefined;
  }
}
