import type { EffectStore } from '../db/effects.js';
import type { OlInboundInput } from './inbound.js';

/** The ledger keys of the outbound side's Chat2Desk sends (src/jobs/kinds/ol-outbound.ts `messageKey`): `ol_out:<im message id>:<n>`. */
const OUTBOUND_SEND_PREFIX = 'ol_out:';

/**
 * How long an outbox message waits for an outbound send to the same client that is still on its way
 * (Chat2Desk may post the outbox webhook before its answer to our POST /messages reaches us). Past it
 * the message is sent to the Open Channel: a possible duplicate is the lesser harm than a lost message.
 */
export const ECHO_WAIT_MS = 2 * 60_000;

/** Echoes are looked for among sends of the last day; an echo comes seconds after its send. */
const ECHO_LOOKBACK_MS = 24 * 3600_000;

/**
 * Whether an `outbox` message is the echo of one an Open Channel operator wrote, which the outbound
 * side sent to Chat2Desk (docs/protocols.md B22 "Echoes"): its Chat2Desk message id is recorded in
 * the ledger with that send. `wait` while a send to this client is claimed and not yet recorded.
 * The `external_id` check at intake (src/open-channels/inbound.ts) stays as a first filter; this
 * one does not depend on Chat2Desk echoing it, which is documented only for `inbox`.
 */
export async function openChannelEcho(effects: EffectStore, memberId: string, input: OlInboundInput, now: number): Promise<'echo' | 'wait' | 'not_echo'> {
  if (input.author === 'client') return 'not_echo';
  const found = await effects.chat2deskSend(memberId, OUTBOUND_SEND_PREFIX, input.messageId, input.clientId, now - ECHO_LOOKBACK_MS);
  if (found === 'sent') return 'echo';
  if (found === 'in_flight' && now < Date.parse(input.sentAt) + ECHO_WAIT_MS) return 'wait';
  return 'not_echo';
}
