import { createHash } from 'node:crypto';
import type { Chat2DeskMessage, SendMessageInput, SentMessage } from '../chat2desk/client.js';
import type { DialogDirectory } from '../chat2desk/directory.js';
import { Chat2DeskError } from '../chat2desk/errors.js';
import { parseChat2DeskTime } from '../chat2desk/times.js';
import type { Claim, EffectCheck, Settled } from '../jobs/ledger.js';
import type { PortalSettings } from '../portal-settings.js';
import { RobotFailure, type RobotRun } from './activity.js';

/**
 * Sending a Chat2Desk message exactly once, and creating the client for "write first": the ledger
 * effects (src/jobs/ledger.ts) the Send message robot and the dialog actions of the CRM tab and the
 * Chat workspace share.
 */

/** Who the message goes to; for write first, the client created and the route it was created on. */
export interface ClientChoice {
  clientId: number;
  writeFirst: boolean;
  /** Where write first created the client: the first message must go out the same way. */
  route?: WriteFirstRoute | null;
}

export interface WriteFirstRoute {
  channelId: number;
  transport: string;
}

/** What looking for the message later needs, stored with the claim before POST /messages. */
interface SendIntent {
  clientId: number;
  externalId: string;
  /** SHA-256 of the text sent, to recognise the message when Chat2Desk does not show our external_id. */
  textDigest?: string;
}

/**
 * How much earlier than our attempt time a message may be stamped by Chat2Desk (clock skew, its
 * whole-second "… UTC" times): the look back goes this much further. Kept short because a message
 * with the same text in it is taken for ours when Chat2Desk does not show the external_id.
 */
const CLOCK_SKEW_MS = 60_000;

const digest = (text: string) => createHash('sha256').update(text).digest('hex');

export const MESSAGE_IN_DOUBT = 'Chat2Desk shows nothing that tells whether the message went out: it may already have been sent, so it is not sent again';
const MESSAGE_UNREACHABLE = 'could not check with Chat2Desk whether the message went out: it may already have been sent';

/**
 * Sends the message under the ledger key `key`, once: POST /messages is never repeated blindly
 * (docs/protocols.md C2); an attempt in doubt is settled first, and goes to the claim's client,
 * where settling looked, even if the phone leads elsewhere by now. `refusal` words Chat2Desk's
 * refusal for whoever reads the failure.
 */
export async function sendOnce(
  run: RobotRun,
  key: string,
  message: SendMessageInput,
  refusal: (error: Chat2DeskError) => string = (error) => `Chat2Desk refused the message: ${error.apiMessage}`,
): Promise<SentMessage> {
  const intent: SendIntent = { clientId: message.client_id, externalId: message.external_id, ...(message.text ? { textDigest: digest(message.text) } : {}) };
  const { value } = await run.ledger.once<SentMessage>({
    ...messageCheck(run, key),
    intent: { ...intent },
    busy: 'another attempt of this run is sending the message',
    act: async (claim) => {
      try {
        return await run.chat2desk.sendMessage({ ...message, client_id: claimedClient(claim, message.client_id) });
      } catch (error) {
        if (error instanceof Chat2DeskError && !error.transient) throw new RobotFailure(refusal(error));
        throw error;
      }
    },
    refused: refusedBeforeActing,
  });
  return value;
}

/** How the message sent under `key` is looked for when its send is in doubt. */
export function messageCheck(run: RobotRun, key: string): EffectCheck<SentMessage> {
  return { key, inDoubt: MESSAGE_IN_DOUBT, unreachable: MESSAGE_UNREACHABLE, settle: (claim) => findSent(run, claim) };
}

/** The client a claim's first attempt sent to (stored JSON: `fallback` when it names none). */
function claimedClient(claim: Claim, fallback: number): number {
  const { clientId } = claim.intent;
  return typeof clientId === 'number' ? clientId : fallback;
}

/**
 * Chat2Desk refused the request (validation, token, a request we could not build) or refused it for
 * load, which we take to mean it did nothing (assumption, docs/protocols.md C1). Anything else (a
 * network failure, a 5xx, a timeout) may have happened.
 */
export function refusedBeforeActing(error: unknown): boolean {
  return error instanceof RobotFailure || (error instanceof Chat2DeskError && (!error.transient || error.kind === 'rate_limit'));
}

/**
 * The client the message goes to: the one Chat2Desk has for the number, else one created for it
 * (write first) on `route()`. Creating is an effect in the ledger under `key`: a retry after a lost
 * answer finds the client by phone instead of creating a second one, and sends the way it was created.
 */
export async function clientForPhone(run: RobotRun, key: string, phoneDigits: string, route: () => Promise<WriteFirstRoute>): Promise<ClientChoice> {
  const pinned = await run.ledger.peek<ClientChoice>(key);
  if (pinned?.state === 'done') return pinned.value;
  if (!pinned) {
    const [existing] = await run.directory.clientsByPhone(phoneDigits);
    if (existing) return { clientId: existing.id, writeFirst: false };
  }
  const chosen = pinned ? undefined : await route();
  const routeOf = (claim: Claim) => (claim.intent.route as ClientChoice['route']) ?? chosen ?? null;
  const { value } = await run.ledger.once<ClientChoice>({
    key,
    intent: { route: chosen },
    busy: 'another attempt of this run is creating the Chat2Desk client',
    inDoubt: `the Chat2Desk client for ${phoneDigits} may already have been created`,
    unreachable: `could not check with Chat2Desk whether the client for ${phoneDigits} was created`,
    act: async (claim) => {
      const created = await run.directory.createClient({ phone: phoneDigits, ...routeFields(routeOf(claim)) });
      return { clientId: created.id, writeFirst: true, route: routeOf(claim) };
    },
    refused: refusedBeforeActing,
    // Asked of Chat2Desk itself: the cache may still hold "no such client" from before the attempt.
    settle: async (claim) => {
      const [found] = await run.chat2desk.clientsByPhone(phoneDigits);
      return found ? { found: { clientId: found.id, writeFirst: true, route: routeOf(claim) } } : 'absent';
    },
  });
  return value;
}

function routeFields(route: ClientChoice['route']): { transport: string; channel_id?: number } {
  if (!route) throw new RobotFailure('the route the Chat2Desk client was to be created on is not known any more; run the robot again');
  return { transport: route.transport, channel_id: route.channelId };
}

/** Where to write first from: the given channel, else the portal default, else the first channel that has the transport. */
export async function writeFirstRoute(
  directory: DialogDirectory,
  settings: PortalSettings,
  channelId: number | undefined,
  transport: string | undefined,
): Promise<WriteFirstRoute> {
  const wantedChannel = channelId ?? settings.defaultChannelId ?? undefined;
  const wantedTransport = transport ?? settings.defaultTransport ?? undefined;
  const channels = await directory.channels();
  const channel =
    wantedChannel !== undefined
      ? channels.find((item) => item.id === wantedChannel)
      : channels.find((item) => (wantedTransport ? item.transports.includes(wantedTransport) : item.transports.length > 0));
  if (!channel) {
    throw new RobotFailure(
      wantedChannel !== undefined
        ? `Chat2Desk channel ${wantedChannel} does not exist in this account`
        : `no Chat2Desk channel ${wantedTransport ? `supports ${wantedTransport}` : 'is available'} to write first from; pick a channel in the robot or set a default channel in the app settings`,
    );
  }
  const chosenTransport = wantedTransport ?? channel.transports[0];
  if (!chosenTransport || !channel.transports.includes(chosenTransport)) {
    throw new RobotFailure(`Chat2Desk channel ${channel.id} (${channel.name}) does not support ${chosenTransport ?? 'any transport'}`);
  }
  return { channelId: channel.id, transport: chosenTransport };
}

/**
 * The message an earlier attempt sent. Pages back through the client's outgoing messages to the
 * first attempt's time, however many came since (later runs, operators' replies): by external_id,
 * else (Chat2Desk may not echo it) by the same text within that time, on a message that carries no
 * other external_id. Not found is certain when the text could have matched, or when Chat2Desk was
 * seen echoing external ids; an attachment alone without that is unknown.
 */
async function findSent(run: RobotRun, claim: Claim): Promise<Settled<SentMessage>> {
  try {
    return await lookForSent(run, claim);
  } catch (error) {
    // Refused for good (the token revoked, the client gone): waiting will not tell either.
    if (error instanceof Chat2DeskError && !error.transient) return 'unknown';
    throw error;
  }
}

async function lookForSent(run: RobotRun, claim: Claim): Promise<Settled<SentMessage>> {
  const intent = claim.intent as unknown as SendIntent;
  // The intent is stored JSON (migration 0007 wrote some): a missing external id or digest matches no message.
  const externalId = typeof intent.externalId === 'string' && intent.externalId !== '' ? intent.externalId : undefined;
  const textDigest = typeof intent.textDigest === 'string' ? intent.textDigest : undefined;
  const since = claim.attemptAt - CLOCK_SKEW_MS;
  let sameText: Chat2DeskMessage | undefined;
  let echoSeen = false;
  for await (const page of run.chat2desk.messagesToClient(intent.clientId)) {
    for (const message of page) {
      if (externalId !== undefined && carriesExternalId(message, externalId)) return { found: fromListedMessage(message, intent.clientId) };
      echoSeen ||= carriesAnyExternalId(message);
      const at = parseChat2DeskTime(message.created);
      const candidate = !sameText && textDigest !== undefined && !carriesAnyExternalId(message) && (at === undefined || at >= since);
      if (candidate && message.text && digest(message.text.trim()) === textDigest) sameText = message;
    }
    const oldest = parseChat2DeskTime(page.at(-1)?.created);
    if (oldest !== undefined && oldest < since) break;
  }
  if (sameText) {
    run.log.warn({ messageId: sameText.id }, 'earlier send found by its text: Chat2Desk did not show our external_id');
    return { found: fromListedMessage(sameText, intent.clientId) };
  }
  return textDigest !== undefined || echoSeen ? 'absent' : 'unknown';
}

/**
 * Protocol assumption (docs/protocols.md C2): the external_id sent with POST /messages comes
 * back on the message in GET /messages, as documented for messages/inbox; extra_data is checked too.
 */
function carriesExternalId(message: Chat2DeskMessage, externalId: string): boolean {
  return message.external_id === externalId || message.extra_data?.external_id === externalId;
}

/** Another send's message (ours from another run, or another integration's) is never taken for this one's. */
function carriesAnyExternalId(message: Chat2DeskMessage): boolean {
  return Boolean(message.external_id) || Boolean(message.extra_data?.external_id);
}

function fromListedMessage(message: Chat2DeskMessage, clientId: number): SentMessage {
  return {
    message_id: message.id,
    client_id: message.client_id ?? clientId,
    dialog_id: message.dialog_id ?? null,
    channel_id: message.channel_id ?? 0,
    transport: message.transport ?? '',
    operator_id: message.operator_id ?? null,
  };
}
