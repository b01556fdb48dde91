import { Bitrix24Error } from '../bitrix24/errors.js';
import type { BatchCommand, BatchOutcome, Bitrix24Rest } from '../bitrix24/rest-client.js';
import type { OpenLineStore } from '../db/open-lines.js';
import type { Portal } from '../db/portals.js';
import type { Logger } from '../log.js';
import { readSettings } from '../portal-settings.js';
import { OL_INBOUND_KIND } from './inbound.js';
import { type LineOptions, readLineOptions } from './lines.js';

/** Our Open Channels connector's id in Bitrix24 (imconnector.register ID: [a-z0-9_], bitrix24.md §12). */
export const CONNECTOR_ID = 'chat2desk';

/** The connector's events (docs/protocols.md B21): bound in Open Channels mode only, unbound when the portal switches back. */
export const CONNECTOR_EVENTS = [
  'ONIMCONNECTORMESSAGEADD',
  'ONIMCONNECTORMESSAGEUPDATE',
  'ONIMCONNECTORMESSAGEDELETE',
  'ONIMCONNECTORLINEDELETE',
  'ONIMCONNECTORSTATUSDELETE',
] as const;

/** Our own simple mark (a speech bubble with two dots), drawn here, not the vendor's logo. */
const ICON_SVG =
  '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64"><rect width="64" height="64" rx="14" fill="#1f86e0"/>' +
  '<path d="M14 18h36a4 4 0 0 1 4 4v18a4 4 0 0 1-4 4H30l-10 8v-8h-6a4 4 0 0 1-4-4V22a4 4 0 0 1 4-4z" fill="#fff"/>' +
  '<circle cx="26" cy="31" r="3.5" fill="#1f86e0"/><circle cx="38" cy="31" r="3.5" fill="#1f86e0"/></svg>';
/** imconnector.register wants `data:image/svg+xml,…` (bitrix24.md §12.1): the SVG URI-encoded, not base64. */
export const CONNECTOR_ICON = `data:image/svg+xml,${encodeURIComponent(ICON_SVG)}`;

export class ConnectorError extends Error {
  override name = 'ConnectorError';
}

/**
 * Whether Bitrix24 signs operators' messages (`NEED_SIGNATURE`, bitrix24.md §12.1): we register with
 * false, so an operator's text never starts with Bitrix24's signature, and a bold heading of their
 * own is theirs (src/open-channels/bbcode.ts).
 */
export const BITRIX24_SIGNS = false;

/** What a line write outside Open Channels mode answers (the connector page shows it). */
export const NOT_OPEN_CHANNELS = 'The portal is not in Open Channels mode (any more): switch it to Open Channels on the app page, then connect the line again';

/** A line write refused because the portal is not (or no longer) in Open Channels mode. */
export class NotOpenChannelsError extends Error {
  override name = 'NotOpenChannelsError';
  constructor() {
    super(NOT_OPEN_CHANNELS);
  }
}

/** The register and bind commands of Open Channels mode, for the registration batch (src/bitrix24/registration.ts). */
export function connectorRegistrationCommands(publicUrl: string, bound: ReadonlyArray<{ event: string; handler: string }>): BatchCommand[] {
  const eventHandler = `${publicUrl}/bitrix24/events`;
  const commands: BatchCommand[] = [
    // Registering the same ID again replaces it (bitrix24.md §12.1): safe on every install, update and save.
    {
      key: 'connector_register',
      method: 'imconnector.register',
      params: {
        ID: CONNECTOR_ID,
        NAME: 'Chat2Desk',
        ICON: { DATA_IMAGE: CONNECTOR_ICON, COLOR: '#1f86e0', SIZE: '100%', POSITION: 'center' },
        PLACEMENT_HANDLER: `${publicUrl}/connector`,
        // The signature is a per-line option (LineOptions.signature): Bitrix24's own would sign every
        // line alike and put BBCode into the text, so the outbound side adds the name itself (docs/protocols.md B21).
        NEED_SIGNATURE: BITRIX24_SIGNS,
        // One chat per client (or request), as the CRM tracker needs (bitrix24.md §12.1).
        CHAT_GROUP: false,
      },
    },
  ];
  for (const event of CONNECTOR_EVENTS) {
    if (!bound.some((binding) => binding.event.toUpperCase() === event && binding.handler === eventHandler)) {
      commands.push({ key: `event_${event}`, method: 'event.bind', params: { event, handler: eventHandler } });
    }
  }
  return commands;
}

/** imconnector.register refuses with HTTP 200 and `result.result=false` (bitrix24.md §12.1): the refusal, or undefined. */
export function connectorRegistrationRefusal(outcome: BatchOutcome): string | undefined {
  const answer = outcome.results.connector_register;
  if (answer === undefined) return undefined;
  const record = typeof answer === 'object' && answer !== null ? (answer as Record<string, unknown>) : {};
  if (record.result === true) return undefined;
  const code = typeof record.error === 'string' ? record.error : 'no result';
  const description = typeof record.error_description === 'string' ? record.error_description : '';
  return `Bitrix24 refused to register the Chat2Desk connector: ${code} ${description}`.trim();
}

export interface OpenLine {
  id: number;
  name: string;
  active: boolean;
}

/** A line connected to our connector, as the app page lists it: the name when Bitrix24 could tell it. */
export interface ConnectedLine {
  lineId: number;
  name: string | null;
  route: LineOptions['route'];
}

export interface ConnectorDeps {
  rest: Pick<Bitrix24Rest, 'call' | 'batch'>;
  store: OpenLineStore;
  publicUrl: string;
  /** For the Chat2Desk web app's address we give Bitrix24 as the connection's URL. */
  defaultApiUrl: string;
  /** Held inbound messages were made due when a line was connected: the worker looks for them. */
  jobsWoken?(): void;
  log: Logger;
}

/** Connecting lines to our connector and taking the connector away (with the app's tokens). */
export class OpenChannelsConnector {
  /** Per portal: the tail of its mode changes and line writes, run one at a time (see `exclusive`). */
  readonly #turns = new Map<string, Promise<unknown>>();

  constructor(private readonly deps: ConnectorDeps) {}

  /**
   * Runs `work` after the portal's earlier mode changes and line writes of this process, so a switch
   * back never interleaves with a line being connected or with a save re-registering the connector.
   * The database guards the same (OpenLineStore.save, PortalStore.saveSettings) across processes;
   * this spares the Bitrix24 calls a refused write would have made and keeps the registration, which
   * no transaction covers, in order.
   */
  async exclusive<T>(memberId: string, work: () => Promise<T>): Promise<T> {
    const before = this.#turns.get(memberId) ?? Promise.resolve();
    const turn = before.catch(() => undefined).then(work);
    const tail = turn.catch(() => undefined);
    this.#turns.set(memberId, tail);
    try {
      return await turn;
    } finally {
      // The last in line leaves no entry behind.
      if (this.#turns.get(memberId) === tail) this.#turns.delete(memberId);
    }
  }

  /** The line as Bitrix24 knows it (imopenlines.config.get), or undefined when it does not exist. */
  async line(portal: Portal, lineId: number): Promise<OpenLine | undefined> {
    try {
      const found = await this.deps.rest.call<Record<string, unknown>>(portal.memberId, 'imopenlines.config.get', { CONFIG_ID: lineId }, { idempotent: true });
      if (!found || typeof found !== 'object') return undefined;
      return { id: lineId, name: typeof found.LINE_NAME === 'string' ? found.LINE_NAME : `#${lineId}`, active: found.ACTIVE !== 'N' };
    } catch (error) {
      // A line that does not exist answers 400 (the code is a guess of the fake; any 400 means "no such line" here).
      if (error instanceof Bitrix24Error && error.httpStatus === 400) return undefined;
      throw error;
    }
  }

  /**
   * The portal's connected lines in routing order, named by Bitrix24 (imopenlines.config.get, one batch).
   * A name Bitrix24 could not give now is null: the list itself is ours and is shown all the same.
   */
  async connectedLines(portal: Portal): Promise<ConnectedLine[]> {
    const rows = await this.deps.store.list(portal.memberId);
    if (rows.length === 0) return [];
    let names: Record<string, unknown> = {};
    try {
      const outcome = await this.deps.rest.batch(
        portal.memberId,
        rows.map((row) => ({ key: `line${row.lineId}`, method: 'imopenlines.config.get', params: { CONFIG_ID: row.lineId } })),
        { idempotent: true },
      );
      names = outcome.results;
    } catch (error) {
      this.deps.log.warn({ memberId: portal.memberId, err: error instanceof Error ? error.message : String(error) }, 'open channel line names not read');
    }
    return rows.map((row) => {
      const config = names[`line${row.lineId}`];
      const name = typeof config === 'object' && config !== null ? (config as Record<string, unknown>).LINE_NAME : undefined;
      return { lineId: row.lineId, name: typeof name === 'string' && name !== '' ? name : null, route: readLineOptions(row.options).route };
    });
  }

  /**
   * Connects the line (or saves its options again): activate, the connection's data, then our row.
   * Each Bitrix24 call is idempotent, so a failure half way is repaired by connecting again.
   */
  async connect(portal: Portal, lineId: number, options: LineOptions): Promise<void> {
    return this.exclusive(portal.memberId, () => this.#connect(portal, lineId, options));
  }

  async #connect(portal: Portal, lineId: number, options: LineOptions): Promise<void> {
    const { rest, store } = this.deps;
    // The mode as stored now, in this portal's turn: a switch back that ran while this request waited is seen.
    if (!(await store.inOpenChannelsMode(portal.memberId))) throw new NotOpenChannelsError();
    await rest.call(portal.memberId, 'imconnector.activate', { CONNECTOR: CONNECTOR_ID, LINE: lineId, ACTIVE: 1 }, { idempotent: true });
    const web = webAppUrl(readSettings(portal.settings, this.deps.defaultApiUrl).chat2deskApiUrl);
    await rest.call(
      portal.memberId,
      'imconnector.connector.data.set',
      // docs/protocols.md B21: what the connection shows in Bitrix24's contact center.
      { CONNECTOR: CONNECTOR_ID, LINE: lineId, DATA: { ID: `${CONNECTOR_ID}_${lineId}`, URL: web, URL_IM: web, NAME: 'Chat2Desk' } },
      { idempotent: true },
    );
    // Messages held because no line took them (or their line was refused) are routed again at once.
    const woken = await store.save(portal.memberId, lineId, options, [{ kind: OL_INBOUND_KIND }]);
    if (woken === 'not_open_channels') {
      // The portal switched back meanwhile (its switch took the connector away): the line activated
      // above is deactivated again, as the switch did for the others.
      await this.#deactivateLine(portal, lineId).catch((error: unknown) =>
        this.deps.log.warn({ memberId: portal.memberId, line: lineId, err: String(error) }, 'line connected during a switch back not deactivated'),
      );
      throw new NotOpenChannelsError();
    }
    if (woken > 0) this.deps.jobsWoken?.();
    this.deps.log.info({ memberId: portal.memberId, line: lineId, woken }, 'open channel line connected');
  }

  /** Disconnects the line: deactivated in Bitrix24, then forgotten (a line Bitrix24 no longer has is forgotten all the same). */
  async disconnect(portal: Portal, lineId: number): Promise<void> {
    return this.exclusive(portal.memberId, () => this.#disconnect(portal, lineId));
  }

  async #disconnect(portal: Portal, lineId: number): Promise<void> {
    await this.#deactivateLine(portal, lineId);
    await this.deps.store.remove(portal.memberId, lineId);
    this.deps.log.info({ memberId: portal.memberId, line: lineId }, 'open channel line disconnected');
  }

  /**
   * The portal left Open Channels mode: every connected line deactivated and forgotten, the connector
   * unregistered, its events unbound. Run inside `exclusive` by the caller (the settings save that
   * switches back); the inbound jobs still waiting are finished when the mode is saved.
   */
  async deactivate(portal: Portal): Promise<void> {
    const { rest, store } = this.deps;
    for (const line of await store.list(portal.memberId)) await this.#disconnect(portal, line.lineId);
    const unregistered = await rest.call<unknown>(portal.memberId, 'imconnector.unregister', { ID: CONNECTOR_ID }, { idempotent: true });
    const answer = typeof unregistered === 'object' && unregistered !== null ? (unregistered as Record<string, unknown>) : {};
    // Not registered (any more) is what we want; other refusals are reported.
    if (answer.result !== true && answer.error !== 'CONNECTOR_NOT_FOUND') {
      throw new ConnectorError(`Bitrix24 refused to unregister the connector: ${String(answer.error ?? '')} ${String(answer.error_description ?? '')}`.trim());
    }
    const handler = `${this.deps.publicUrl}/bitrix24/events`;
    for (const event of CONNECTOR_EVENTS) {
      try {
        await rest.call(portal.memberId, 'event.unbind', { event, handler }, { idempotent: true });
      } catch (error) {
        // An event that was not bound is already where we want it.
        if (!(error instanceof Bitrix24Error && error.httpStatus === 400)) throw error;
      }
    }
    this.deps.log.info({ memberId: portal.memberId }, 'open channels connector deactivated');
  }

  async #deactivateLine(portal: Portal, lineId: number): Promise<void> {
    try {
      await this.deps.rest.call(portal.memberId, 'imconnector.activate', { CONNECTOR: CONNECTOR_ID, LINE: lineId, ACTIVE: 0 }, { idempotent: true });
    } catch (error) {
      // The line or the connector is gone in Bitrix24 (NOT_ACTIVE_LINE, IMCONNECTOR_NO_CORRECT_PROVIDER): nothing to deactivate.
      if (!(error instanceof Bitrix24Error && error.httpStatus === 400)) throw error;
    }
  }
}

/** Chat2Desk's web app for an API host (the same assumption as src/chat2desk/links.ts). */
function webAppUrl(apiUrl: string): string {
  const api = new URL(apiUrl);
  return `${api.protocol}//${api.host.replace(/^api\./, 'web.')}/`;
}
