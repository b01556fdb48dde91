import type * as v from 'valibot';
import type { BatchCommand, BatchOutcome, CallOptions } from '../bitrix24/rest-client.js';
import type { BitrixUser } from '../bitrix24/users.js';
import type { Chat2DeskApi, Chat2DeskChannel } from '../chat2desk/client.js';
import type { DialogDirectory } from '../chat2desk/directory.js';
import type { Clock } from '../clock.js';
import type { Portal } from '../db/portals.js';
import type { Ledger } from '../jobs/ledger.js';
import type { Logger } from '../log.js';
import type { PortalSettings } from '../portal-settings.js';

/** Names in the portal's language. Bitrix24 calls Spanish `la`; `es` is sent too for portals that use it. */
export interface Localized {
  en: string;
  ru: string;
  es: string;
}

export type PropertyType = 'bool' | 'date' | 'datetime' | 'double' | 'file' | 'int' | 'select' | 'string' | 'text' | 'user';

/** A robot property or return value as Bitrix24 declares it (docs/protocols.md B5 PROPERTY). */
export interface PropertyDefinition {
  name: Localized;
  description?: Localized;
  type: PropertyType;
  options?: Record<string, string>;
  required?: boolean;
  multiple?: boolean;
  default?: string;
}

export type ReturnValues = Record<string, string | number | boolean | null>;

/** Bitrix24 REST of the portal the robot runs for, with the installer's tokens. */
export interface PortalRest {
  call<T = unknown>(method: string, params?: Record<string, unknown>, options?: CallOptions): Promise<T>;
  batch(commands: BatchCommand[], options?: CallOptions): Promise<BatchOutcome>;
}

/** Bitrix24 users of the portal, looked up with a short-lived cache. */
export interface PortalUsers {
  byEmail(email: string): Promise<BitrixUser | undefined>;
  byId(id: number): Promise<BitrixUser | undefined>;
}

/** What a robot run can see and do. */
export interface RobotRun {
  portal: Portal;
  settings: PortalSettings;
  chat2desk: Chat2DeskApi;
  /** Cached Chat2Desk reads for lookups (clients, dialogs, operators, channels, tags). */
  directory: DialogDirectory;
  bitrix24: PortalRest;
  users: PortalUsers;
  documentId: string[];
  /** Unique per run; sent to Chat2Desk as external_id. */
  runId: string;
  /** When Bitrix24's call was accepted (not when this attempt started). */
  acceptedAt: number;
  attempt: number;
  /** Effects that must happen at most once (a message, a comment), bound to this portal and run. */
  ledger: Ledger;
  /** Where the run reads the time (an open dialog's duration so far). */
  clock: Clock;
  log: Logger;
  /** The portal's language (app.info LANGUAGE_ID, asked at most hourly): what we write into the portal is in it. */
  language(): Promise<keyof Localized>;
}

export interface RegistrationContext {
  channels: Chat2DeskChannel[];
}

export { RobotFailure } from '../run-failure.js';

export interface RobotOutcome {
  returnValues: ReturnValues;
  logMessage: string;
}

/**
 * One robot: its Bitrix24 definition, the valibot schema of its properties and its run function.
 * The same definition is registered twice: as an automation robot under `code` and as a
 * business-process activity under `${code}_bp` (the two share one code namespace in Bitrix24).
 */
export interface Activity<TSchema extends v.GenericSchema = v.GenericSchema> {
  code: string;
  name: Localized;
  description: Localized;
  properties(context: RegistrationContext): Record<string, PropertyDefinition>;
  returnProperties: Record<string, PropertyDefinition>;
  schema: TSchema;
  run(run: RobotRun, properties: v.InferOutput<TSchema>): Promise<RobotOutcome>;
  /** The return values of a run that failed with `error`. */
  failed(error: string): RobotOutcome;
  /**
   * Called when a run is given up (deadline, retries spent) after an attempt whose effect is in
   * doubt: answers the outcome if the effect happened after all, so a sent message is not reported
   * as failed. Undefined when the run has nothing in doubt.
   */
  settle?(run: RobotRun): Promise<RobotOutcome | undefined>;
}

/** How much of a caller's value an error or LOG_MESSAGE repeats: enough to recognise it, never a page. */
export const EXCERPT_LENGTH = 80;

/** A caller's value as an error or LOG_MESSAGE shows it, cut to a readable length. */
export function excerpt(value: string | string[], max = EXCERPT_LENGTH): string {
  const text = Array.isArray(value) ? value.join(', ') : value;
  if (text.length <= max) return text;
  // Never end on half a surrogate pair.
  return `${text.slice(0, max).replace(/[\ud800-\udbff]$/, '')}… (${text.length} characters)`;
}

export function localized(en: string, ru: string, es: string): Localized {
  return { en, ru, es };
}

export const ACTIVITY_CODE_SUFFIX = '_bp';
