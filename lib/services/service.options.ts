import { InvalidOptionsError } from '../errors/event-bus.errors';
import { knownKeys } from '../options/rules';

/** `EventBusModule.forRoot({ service })`: run the app's `@Subscribe` handlers as one NATS service. */
export interface EventBusServiceOptions {
  /** The service's name, as `nats micro ls` shows it: letters, digits, `_` and `-` only. */
  name: string;
  /** Its version, a semantic version (`1.4.0`, `2.0.0-rc.1`). */
  version: string;
  /** One line on what it does. Default `''`. */
  description?: string;
  /** Free-form string pairs shown with the service (`$SRV.INFO`, `$SRV.PING`). Default `{}`. */
  metadata?: Record<string, string>;
}

/** The NATS services framework's rule for names (ADR-32): they become subject tokens. */
const SERVICE_NAME = /^[-\w]+$/;
// semver.org's own pattern: the framework refuses a service whose version does not match it.
const SEMVER =
  /^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$/;

/** Checks `service` as `forRoot` gets it; throws `InvalidOptionsError` naming the bad field. */
export function validateServiceOptions(service: unknown): asserts service is EventBusServiceOptions {
  if (!service || typeof service !== 'object' || Array.isArray(service)) {
    throw new InvalidOptionsError('service', 'must be an object like { name: "orders", version: "1.0.0" }');
  }
  knownKeys('service', service, ['name', 'version', 'description', 'metadata']);
  const s = service as Partial<EventBusServiceOptions>;
  if (typeof s.name !== 'string' || !SERVICE_NAME.test(s.name)) {
    throw new InvalidOptionsError(
      'service.name',
      `must be letters, digits, "_" or "-" (a NATS subject token), got ${JSON.stringify(s.name)}`,
    );
  }
  if (typeof s.version !== 'string' || !SEMVER.test(s.version)) {
    throw new InvalidOptionsError('service.version', `must be a semantic version like "1.0.0", got ${JSON.stringify(s.version)}`);
  }
  if (s.description !== undefined && typeof s.description !== 'string')
    throw new InvalidOptionsError('service.description', 'must be a string');
  if (s.metadata !== undefined) {
    const m = s.metadata as unknown;
    if (!m || typeof m !== 'object' || Array.isArray(m) || Object.values(m).some((v) => typeof v !== 'string')) {
      throw new InvalidOptionsError('service.metadata', 'must be an object of strings');
    }
  }
}
