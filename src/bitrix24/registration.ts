import { ACTIVITY_CODE_SUFFIX, type Activity, type Localized, type PropertyDefinition } from '../activities/activity.js';
import type { Chat2DeskChannel } from '../chat2desk/client.js';
import type { Portal } from '../db/portals.js';
import { PLACEMENT_LISTING, placementCommands } from '../dialogs/placements.js';
import type { Logger } from '../log.js';
import { CONNECTOR_EVENTS, CONNECTOR_ID, connectorRegistrationCommands, connectorRegistrationRefusal } from '../open-channels/connector.js';
import { readIntegrationType } from '../portal-settings.js';
import { TRIGGERS, portalLanguage, triggerCommands } from '../triggers/triggers.js';
import { commandErrorKind, describeCommandError } from './batch-errors.js';
import type { Bitrix24Rest, BatchCommand } from './rest-client.js';
import { phpList, yesNo } from './values.js';

export const LIFECYCLE_EVENTS = ['ONAPPUNINSTALL', 'ONAPPUPDATE'] as const;

export interface RegistrationResult {
  robots: string[];
  activities: string[];
  events: string[];
  triggers: string[];
  /** The CRM card tabs this run bound or re-bound (none when the portal did not grant `placement`). */
  placements: string[];
  /** The Open Channels connector registered by this run (Open Channels mode only, README "Open Channels mode"). */
  connector: string | null;
}

export class RegistrationError extends Error {
  override name = 'RegistrationError';
}

export interface RegistrationDeps {
  rest: Bitrix24Rest;
  publicUrl: string;
  activities: readonly Activity[];
  /** The portal's Chat2Desk channels, for the robots' channel lists; [] when not configured. */
  channelsOf(portal: Portal): Promise<Chat2DeskChannel[]>;
  log: Logger;
}

/**
 * Registers every robot and its business-process twin and the app triggers, and binds the lifecycle events
 * (in Open Channels mode also our connector and its events). Bitrix24
 * drops an app's handlers on update (docs/protocols.md B1), so this runs on every install,
 * update and settings save, with ensure semantics: list, then add what is missing and update the rest.
 */
export class AppRegistration {
  constructor(private readonly deps: RegistrationDeps) {}

  get robotHandlerUrl(): string {
    return `${this.deps.publicUrl}/bitrix24/robot`;
  }

  get eventHandlerUrl(): string {
    return `${this.deps.publicUrl}/bitrix24/events`;
  }

  /** Where Bitrix24 posts a CRM card tab's opening (src/routes/tab.ts). */
  get tabHandlerUrl(): string {
    return `${this.deps.publicUrl}/tab`;
  }

  async register(portal: Portal): Promise<RegistrationResult> {
    const { rest, log } = this.deps;
    const channels = await this.deps.channelsOf(portal).catch((error: unknown) => {
      log.warn({ memberId: portal.memberId, err: String(error) }, 'could not list Chat2Desk channels; robots get no channel list');
      return [] as Chat2DeskChannel[];
    });
    const listed = await rest.batch(
      portal.memberId,
      [
        { key: 'robots', method: 'bizproc.robot.list' },
        { key: 'activities', method: 'bizproc.activity.list' },
        { key: 'events', method: 'event.get' },
        // The app triggers (src/triggers/triggers.ts), and app.info for the portal's language their names are in.
        { key: 'triggers', method: 'crm.automation.trigger.list' },
        { key: 'app', method: 'app.info' },
        ...PLACEMENT_LISTING,
      ],
      { idempotent: true },
    );
    // The card tabs need the `placement` scope: a portal that did not grant it still gets its robots.
    const placementsListed = !listed.errors.placements;
    if (!placementsListed) log.warn({ memberId: portal.memberId, error: listed.errors.placements }, 'placements not listed (no placement scope?); the CRM tab is not bound');
    const listError = Object.entries(listed.errors).filter(([key]) => !PLACEMENT_LISTING.some((command) => command.key === key))[0];
    if (listError) throw new RegistrationError(`Bitrix24 refused ${listError[0]} listing: ${listError[1].error} ${listError[1].error_description}`);
    const robots = new Set(asStrings(listed.results.robots));
    const twins = new Set(asStrings(listed.results.activities));
    const bound = asBindings(listed.results.events);

    const commands: BatchCommand[] = [];
    for (const activity of this.deps.activities) {
      const fields = this.#fields(activity, portal, channels);
      const twinCode = `${activity.code}${ACTIVITY_CODE_SUFFIX}`;
      commands.push(
        robots.has(activity.code)
          ? { key: `robot_${activity.code}`, method: 'bizproc.robot.update', params: { CODE: activity.code, FIELDS: fields } }
          : { key: `robot_${activity.code}`, method: 'bizproc.robot.add', params: { CODE: activity.code, ...fields } },
        twins.has(twinCode)
          ? { key: `activity_${twinCode}`, method: 'bizproc.activity.update', params: { CODE: twinCode, FIELDS: fields } }
          : { key: `activity_${twinCode}`, method: 'bizproc.activity.add', params: { CODE: twinCode, ...fields } },
      );
    }
    for (const event of LIFECYCLE_EVENTS) {
      if (!bound.some((binding) => binding.event.toUpperCase() === event && binding.handler === this.eventHandlerUrl)) {
        commands.push({ key: `event_${event}`, method: 'event.bind', params: { event, handler: this.eventHandlerUrl } });
      }
    }
    const app = listed.results.app && typeof listed.results.app === 'object' ? (listed.results.app as Record<string, unknown>) : {};
    commands.push(...triggerCommands(listed.results.triggers, portalLanguage(app.LANGUAGE_ID)));
    // Open Channels mode: the connector and its events, in the same batch (src/open-channels/connector.ts).
    const openChannels = readIntegrationType(portal.settings) === 'open_channels';
    if (openChannels) commands.push(...connectorRegistrationCommands(this.deps.publicUrl, bound));
    const tabCommands = placementsListed ? placementCommands(listed.results, this.tabHandlerUrl, portalLanguage(app.LANGUAGE_ID)) : [];
    commands.push(...tabCommands);
    const outcome = await rest.batch(portal.memberId, commands, { idempotent: true });
    const tabKeys = new Set(tabCommands.map((command) => command.key));
    // A card tab the portal refuses for good (too many placements, a smart process it will not take)
    // must not hold the robots' registration back: it is logged; a transient refusal is retried with the rest.
    const tabRefusals = Object.entries(outcome.errors).filter(([key, error]) => tabKeys.has(key) && !['already_done', 'transient'].includes(commandErrorKind(error)));
    if (tabRefusals.length > 0)
      log.warn({ memberId: portal.memberId, refused: tabRefusals.map(([key, error]) => `${key}: ${describeCommandError(error)}`) }, 'CRM card tab not bound');
    const failures = Object.entries(outcome.errors).filter(([key, error]) => commandErrorKind(error) !== 'already_done' && !tabRefusals.some(([refused]) => refused === key));
    if (failures.length > 0) {
      const listedFailures = failures.map(([key, error]) => `${key}: ${describeCommandError(error)}`).join('; ');
      throw new RegistrationError(`Bitrix24 refused the registration: ${listedFailures}`);
    }
    const connectorRefusal = openChannels ? connectorRegistrationRefusal(outcome) : undefined;
    if (connectorRefusal) throw new RegistrationError(connectorRefusal);
    log.info({ memberId: portal.memberId, robots: this.deps.activities.length, openChannels }, 'robots registered');
    return {
      robots: this.deps.activities.map((activity) => activity.code),
      activities: this.deps.activities.map((activity) => `${activity.code}${ACTIVITY_CODE_SUFFIX}`),
      events: [...LIFECYCLE_EVENTS, ...(openChannels ? CONNECTOR_EVENTS : [])],
      triggers: TRIGGERS.map((trigger) => trigger.code),
      placements: placementsListed ? [...new Set(tabCommands.map((command) => String(command.params?.PLACEMENT)))] : [],
      connector: openChannels ? CONNECTOR_ID : null,
    };
  }

  #fields(activity: Activity, portal: Portal, channels: Chat2DeskChannel[]): Record<string, unknown> {
    return {
      HANDLER: this.robotHandlerUrl,
      AUTH_USER_ID: portal.installerUserId ?? 1,
      // Empty means "wait" too, but an explicit Y keeps the intent readable (docs/protocols.md B5).
      USE_SUBSCRIPTION: 'Y',
      NAME: langMap(activity.name),
      DESCRIPTION: langMap(activity.description),
      PROPERTIES: propertyMap(activity.properties({ channels })),
      RETURN_PROPERTIES: propertyMap(activity.returnProperties),
    };
  }
}

/** Bitrix24's language ids: Spanish is `la`. */
function langMap(text: Localized): Record<string, string> {
  return { en: text.en, ru: text.ru, la: text.es };
}

function propertyMap(properties: Record<string, PropertyDefinition>): Record<string, Record<string, unknown>> {
  return Object.fromEntries(
    Object.entries(properties).map(([key, property]) => [
      key,
      {
        Name: langMap(property.name),
        ...(property.description ? { Description: langMap(property.description) } : {}),
        Type: property.type,
        ...(property.options ? { Options: property.options } : {}),
        Required: yesNo(property.required),
        Multiple: yesNo(property.multiple),
        ...(property.default !== undefined ? { Default: property.default } : {}),
      },
    ]),
  );
}

function asStrings(value: unknown): string[] {
  return phpList(value).map(String);
}

function asBindings(value: unknown): Array<{ event: string; handler: string }> {
  return phpList(value)
    .filter((item): item is { event: unknown; handler: unknown } => Boolean(item) && typeof item === 'object')
    .map((item) => ({ event: String(item.event), handler: String(item.handler) }));
}
