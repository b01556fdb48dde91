import { str } from './form-body.js';
import { phpList, phpMap } from './values.js';

/** A robot or business-process activity call as Bitrix24 posts it (docs/protocols.md B7). */
export interface RobotCall {
  code: string;
  eventToken: string;
  workflowId: string;
  documentId: string[];
  documentType: string[];
  properties: Record<string, unknown>;
  useSubscription: boolean;
  /** Seconds the workflow waits for our answer; 0 means no limit. */
  timeoutSeconds: number;
  memberId: string;
  applicationToken: string;
  domain: string;
}

export class MalformedCall extends Error {
  override name = 'MalformedCall';
}

export function readRobotCall(fields: Record<string, unknown>): RobotCall {
  const auth = phpMap(fields.auth);
  const call: RobotCall = {
    code: str(fields.code),
    eventToken: str(fields.event_token),
    workflowId: str(fields.workflow_id),
    documentId: phpList(fields.document_id).map(String),
    documentType: phpList(fields.document_type).map(String),
    properties: normalizeProperties(phpMap(fields.properties)),
    useSubscription: str(fields.use_subscription) !== 'N',
    timeoutSeconds: Number(str(fields.timeout_duration)) || 0,
    memberId: str(auth.member_id),
    applicationToken: str(auth.application_token),
    domain: str(auth.domain),
  };
  const missing = (['code', 'eventToken'] as const).filter((key) => !call[key]);
  if (missing.length > 0) throw new MalformedCall(`The robot call lacks ${missing.map((key) => (key === 'eventToken' ? 'event_token' : key)).join(', ')}`);
  if (call.eventToken.length > 512) throw new MalformedCall('event_token is too long');
  // Never in a genuine token; PostgreSQL refuses a NUL in text, which would fail the calls stored with this one.
  if (/[\u0000-\u001f\u007f]/.test(call.eventToken)) throw new MalformedCall('event_token holds control characters');
  if (call.documentId.length !== 3) throw new MalformedCall('document_id must have three parts');
  return call;
}

/**
 * Bounds on every property of every robot, checked before a robot's schema reads them: one value
 * could otherwise fill the whole body. Each robot's schema sets tighter bounds of its own (phone,
 * text, tags); these are the floor for any property, known to the robot or not.
 */
export const MAX_PROPERTY_VALUES = 50;
export const MAX_PROPERTY_LENGTH = 8192;
const MAX_PROPERTY_NAME_LENGTH = 64;

/** Why the call's properties are out of bounds, in words for the workflow's `error`; undefined when they are within. */
export function propertiesOutOfBounds(properties: Record<string, unknown>): string | undefined {
  for (const [name, value] of Object.entries(properties)) {
    if (name.length > MAX_PROPERTY_NAME_LENGTH) return `a property name is longer than ${MAX_PROPERTY_NAME_LENGTH} characters`;
    const values = Array.isArray(value) ? value : [value];
    if (values.length > MAX_PROPERTY_VALUES) return `${name} has ${values.length} values; at most ${MAX_PROPERTY_VALUES} are accepted`;
    if (values.some((item) => typeof item === 'string' && item.length > MAX_PROPERTY_LENGTH)) return `${name} is longer than ${MAX_PROPERTY_LENGTH} characters`;
  }
  return undefined;
}

/** Multiple values arrive as properties[k][0..n]; qs turns sparse ones into objects, so make them arrays. */
function normalizeProperties(properties: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(
    Object.entries(properties).map(([key, value]) => [
      key,
      value && typeof value === 'object' ? phpList(value).map((item) => (typeof item === 'string' ? item : JSON.stringify(item))) : value,
    ]),
  );
}
