import type { Clock } from '../../clock.js';
import type { Logger } from '../../log.js';
import { type ConnectorAction, OL_OUTBOUND_KIND, outboundOrderingKey, outboundDedupKey, readConnectorMessages } from '../../open-channels/outbound.js';
import { InvalidJobInput, type Pipeline } from '../../jobs/pipeline.js';
import type { EventHandler } from './index.js';

/** How long an operator's message may wait for Chat2Desk before the job gives up (and says so in the chat). */
export const OL_OUTBOUND_DEADLINE_MS = 24 * 3600_000;

export interface ConnectorMessageDeps {
  pipeline: Pick<Pipeline, 'enqueue'>;
  clock: Clock;
  log: Logger;
}

const EVENTS: Record<string, ConnectorAction> = {
  ONIMCONNECTORMESSAGEADD: 'add',
  ONIMCONNECTORMESSAGEUPDATE: 'update',
  ONIMCONNECTORMESSAGEDELETE: 'delete',
};

/**
 * OnImConnectorMessageAdd / Update / Delete (docs/protocols.md B23): an operator wrote, edited or
 * deleted a message in an Open Channel chat of our connector. The route let the event in on the
 * portal's application token (a wrong one is refused there and changes nothing); each message of
 * ours becomes one `ol_outbound` job, stored before we answer, once per Bitrix24 message (a repeated
 * event stores nothing), in the conversation's order.
 */
export function connectorMessageHandlers(deps: ConnectorMessageDeps): EventHandler[] {
  return Object.entries(EVENTS).map(([event, action]) => ({
    event,
    async handle({ portal, data, ts }) {
      const { ours, messages } = readConnectorMessages(action, data);
      if (!ours) return { status: 200, body: { status: 'ignored', detail: 'not a message of the Chat2Desk connector' } };
      let queued = 0;
      let duplicates = 0;
      const skipped: string[] = [];
      for (const message of messages) {
        if (!message.ok) {
          skipped.push(message.reason);
          continue;
        }
        let stored: { duplicate: boolean };
        try {
          stored = await deps.pipeline.enqueue(OL_OUTBOUND_KIND, portal.memberId, message.input, {
            dedupKey: outboundDedupKey(portal.memberId, message.input, ts ?? ''),
            orderingKey: outboundOrderingKey(portal.memberId, message.conversation),
            deadlineAt: deps.clock.now() + OL_OUTBOUND_DEADLINE_MS,
          });
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
