import type { OpenLineStore } from '../../db/open-lines.js';
import { CONNECTOR_ID, type OpenChannelsConnector } from '../../open-channels/connector.js';
import type { Bitrix24Rest } from '../rest-client.js';
import { phpMap } from '../values.js';
import type { EventAnswer, EventHandler } from './index.js';

export interface ConnectorLineEventDeps {
  store: OpenLineStore;
  connector: Pick<OpenChannelsConnector, 'line'>;
  rest: Pick<Bitrix24Rest, 'call'>;
}

const lineIdOf = (value: unknown): number | undefined => {
  const text = typeof value === 'number' ? String(value) : typeof value === 'string' ? value.trim() : '';
  return /^[1-9]\d{0,9}$/.test(text) ? Number(text) : undefined;
};

const ignored = (reason: string): EventAnswer => ({ status: 200, body: { status: 'ignored', reason } });

/**
 * ONIMCONNECTORLINEDELETE: `data` is the deleted line's id (bitrix24.md §12.8). The application token
 * names the portal but is on every page of the app (docs/protocols.md B0), so the line is forgotten
 * only when the portal confirms it is gone; a repeat finds nothing to forget and answers the same.
 */
export function onConnectorLineDelete(deps: ConnectorLineEventDeps): EventHandler {
  return {
    event: 'ONIMCONNECTORLINEDELETE',
    async handle({ portal, data }) {
      const lineId = lineIdOf(data);
      if (lineId === undefined) return { status: 400, body: { error: 'data must be the deleted line id' } };
      if (!(await deps.store.get(portal.memberId, lineId))) return ignored('line not connected');
      if (await deps.connector.line(portal, lineId)) return ignored('the portal still has this line');
      await deps.store.remove(portal.memberId, lineId);
      return { status: 200, body: { status: 'removed', line: lineId } };
    },
  };
}

/**
 * ONIMCONNECTORSTATUSDELETE: data{connector, line} (bitrix24.md §12.8): an admin disconnected a
 * connector from a line in Bitrix24. Ours is forgotten once imconnector.status confirms it is no
 * longer connected there (CONFIGURED false: the event says the data is already gone, bitrix24.md §12.8);
 * a connector merely in error (STATUS false, CONFIGURED true) stays (the same reason as above).
 */
export function onConnectorStatusDelete(deps: ConnectorLineEventDeps): EventHandler {
  return {
    event: 'ONIMCONNECTORSTATUSDELETE',
    async handle({ portal, data }) {
      const fields = phpMap(data);
      const connector = typeof fields.connector === 'string' ? fields.connector.toLowerCase() : '';
      const lineId = lineIdOf(fields.line);
      if (lineId === undefined) return { status: 400, body: { error: 'data[line] must be a line id' } };
      if (connector !== CONNECTOR_ID) return ignored('another connector');
      if (!(await deps.store.get(portal.memberId, lineId))) return ignored('line not connected');
      const status = phpMap(await deps.rest.call(portal.memberId, 'imconnector.status', { CONNECTOR: CONNECTOR_ID, LINE: lineId }, { idempotent: true }));
      // STATUS is "configured and without an error" (bitrix24.md §12.4): an error alone lowers it. What a
      // status delete really leaves is no connection at all (CONFIGURED false, B23): only that forgets the line.
      if (status.CONFIGURED === true || status.STATUS === true || status.ACTIVE === true) return ignored('the connector is still connected to this line');
      await deps.store.remove(portal.memberId, lineId);
      return { status: 200, body: { status: 'removed', line: lineId } };
    },
  };
}
