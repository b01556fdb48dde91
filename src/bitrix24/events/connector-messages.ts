import type { Clock } from '../../clock.js';
import type { OpenLineStore } from '../../db/open-lines.js';
import type { Logger } from '../../log.js';
import {
  type ConnectorAction,
  MAX_MESSAGES_PER_EVENT,
  OL_OUTBOUND_KIND,
  outboundDedupKey,
  outboundOrderingKey,
  readConnectorMessage,
  readConnectorMessages,
} from '../../open-channels/outbound.js';
import { InvalidJobInput, type Pipeline } from '../../jobs/pipeline.js';
import { readIntegrationType } from '../../portal-settings.js';
import type { SecretBox } from '../../secrets.js';
import { str } from '../form-body.js';
import type { EventAnswer, EventHandler } from './index.js';

/** How long an operator's message may wait for Chat2Desk before the job gives up (and says so in the chat). */
export const OL_OUTBOUND_DEADLINE_MS = 24 * 3600_000;

export interface ConnectorMessageDeps {
  pipeline: Pick<Pipeline, 'enqueue'>;
  lines: Pick<OpenLineStore, 'get'>;
  /** Seals the event's access token into the job; keys the dedup digest. */
  secrets: Pick<SecretBox, 'seal' | 'digest'>;
  clock: Clock;
  log: Logger;
}

const ignored = (detail: string): EventAnswer => ({ status: 200, body: { status: 'ignored', detail } });

const EVENTS: Record<string, ConnectorAction> = {
  ONIMCONNECTORMESSAGEADD: 'add',
  ONIMCONNECTORMESSAGEUPDATE: 'update',
  ONIMCONNECTORMESSAGEDELETE: 'delete',
};

/**
 * OnImConnectorMessageAdd / Update / Delete (docs/protocols.md B23, B27): an operator wrote, edited or
 * deleted a message in an Open Channel chat of our connector. The route let the event in on the
 * portal's application token, which any employee can read (B0), so the event is only a claim: it is
 * refused with nothing stored unless the portal is in Open Channels mode, the connector is ours and
 * the line is one we connected, and it carries at most MAX_MESSAGES_PER_EVENT messages and the
 * writer's access token. Each message then becomes one `ol_outbound` job, stored before we answer,
 * which has the portal confirm it before any effect (src/open-channels/confirmation.ts). A repeated
 * event stores nothing; the conversation's order is kept.
 */
export function connectorMessageHandlers(deps: ConnectorMessageDeps): EventHandler[] {
  return Object.entries(EVENTS).map(([event, action]) => ({
    event,
    async handle({ portal, auth, data, ts }) {
      if (readIntegrationType(portal.settings) !== 'open_channels') return ignored('the portal is not in Open Channels mode');
      const { ours, line, entries } = readConnectorMessages(data);
      if (!ours) return ignored('not a message of the Chat2Desk connector');
      if (line === undefined || !(await deps.lines.get(portal.memberId, line))) return ignored('not a line connected to Chat2Desk');
      if (entries.length > MAX_MESSAGES_PER_EVENT) {
        return { status: 400, body: { error: `an event carries at most ${MAX_MESSAGES_PER_EVENT} messages; this one has ${entries.length}` } };
      }
      const accessToken = str(auth.access_token);
      if (!accessToken || accessToken.length > 1000) return { status: 400, body: { error: 'the event carries no usable auth[access_token] to confirm it with' } };
      const sealedAuth = deps.secrets.seal(accessToken);
      let queued = 0;
      let duplicates = 0;
      const skipped: string[] = [];
      for (const entry of entries) {
        const message = readConnectorMessage(action, line, entry);
        if (!message.ok) {
          skipped.push(message.reason);
          continue;
        }
        const digest = deps.secrets.digest(JSON.stringify([message.input, accessToken])).slice(0, 22);
        let stored: { duplicate: boolean };
        try {
          stored = await deps.pipeline.enqueue(
            OL_OUTBOUND_KIND,
            portal.memberId,
            { ...message.input, sealedAuth },
            {
              dedupKey: outboundDedupKey(portal.memberId, message.input, ts ?? '', digest),
              orderingKey: outboundOrderingKey(portal.memberId, message.conversation),
              deadlineAt: deps.clock.now() + OL_OUTBOUND_DEADLINE_MS,
            },
          );
        } catch (error) {
          // Beyond what we send (a text over 100,000 characters, a link over 4,000): said, and the others still go.
          if (!(error instanceof InvalidJobInput)) throw error;
          skipped.push(`message ${message.input.imMessageId}: ${error.message}`);
          continue;
        }
        if (stored.duplicate) duplicates += 1;
        else queued += 1;
      }
      if (skipped.length > 0) deps.log.info({ memberId: portal.memberId, event, skipped }, 'open channel messages not sent to Chat2Desk');
      return { status: 200, body: { status: 'accepted', queued, duplicates, skipped } };
    },
  }));
}
