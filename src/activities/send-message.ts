import { createHash } from 'node:crypto';
import * as v from 'valibot';
import { isYes as yes } from '../bitrix24/values.js';
import type { Chat2DeskChannel, Chat2DeskMessage, SentMessage } from '../chat2desk/client.js';
import type { DialogDirectory } from '../chat2desk/directory.js';
import { Chat2DeskError } from '../chat2desk/errors.js';
import { parseChat2DeskTime } from '../chat2desk/times.js';
import type { PortalSettings } from '../portal-settings.js';
import { KNOWN_TRANSPORTS } from '../portal-settings.js';
import type { Claim, EffectCheck, Settled } from '../jobs/ledger.js';
import { RobotFailure, localized, type Activity, type PropertyDefinition, type RobotOutcome, type RobotRun } from './activity.js';
import { phoneOrFail, requiredPhoneEntry, requiredPhoneProperty } from './phone-property.js';

const isHttpUrl = (value: string) => value === '' || /^https?:\/\/\S+$/i.test(value);

const schema = v.pipe(
  v.object({
    phone: requiredPhoneEntry,
    text: v.optional(v.pipe(v.string('text must be text'), v.trim(), v.maxLength(4096, 'text is longer than 4096 characters')), ''),
    attachment: v.optional(
      v.pipe(v.string(), v.trim(), v.maxLength(2048, 'attachment is longer than 2048 characters'), v.check(isHttpUrl, 'attachment must be a direct http(s) link to the file')),
      '',
    ),
    channel_id: v.optional(
      v.pipe(
        v.string(),
        v.trim(),
        v.check((id) => id === '' || /^\d{1,15}$/.test(id), 'channel_id must be a Chat2Desk channel id'),
      ),
      '',
    ),
    transport: v.optional(
      v.pipe(
        v.string(),
        v.trim(),
        v.check((name) => name === '' || /^[a-z0-9_]{2,40}$/.test(name), 'transport must be a Chat2Desk transport name'),
      ),
      '',
    ),
    open_dialog: v.optional(v.string(), 'Y'),
  }),
  v.check((props) => props.text !== '' || props.attachment !== '', 'text is required unless an attachment is given'),
);

type Properties = v.InferOutput<typeof schema>;

/** Who the message goes to; for write first, the client created and the route it was created on. */
interface ClientChoice {
  clientId: number;
  writeFirst: boolean;
  /** Where write first created the client: the first message must go out the same way. */
  route?: { channelId: number; transport: string } | null;
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

const returnProperties: Record<string, PropertyDefinition> = {
  status: { name: localized('Status (sent or failed)', 'Статус (sent или failed)', 'Estado (sent o failed)'), type: 'string' },
  error: { name: localized('Error', 'Ошибка', 'Error'), type: 'string' },
  message_id: { name: localized('Message ID', 'ID сообщения', 'ID del mensaje'), type: 'int' },
  client_id: { name: localized('Chat2Desk client ID', 'ID клиента Chat2Desk', 'ID del cliente en Chat2Desk'), type: 'int' },
  dialog_id: { name: localized('Dialog ID', 'ID диалога', 'ID del diálogo'), type: 'int' },
  channel_id: { name: localized('Channel ID', 'ID канала', 'ID del canal'), type: 'int' },
  transport: { name: localized('Transport', 'Транспорт', 'Transporte'), type: 'string' },
};

export const sendMessage: Activity<typeof schema> = {
  code: 'c2d_send_message',
  name: localized('Send Chat2Desk message', 'Отправить сообщение Chat2Desk', 'Enviar mensaje de Chat2Desk'),
  description: localized(
    'Sends a message to the client through Chat2Desk. Writes first when the client has never written: the client is created in Chat2Desk, then the message is sent.',
    'Отправляет клиенту сообщение через Chat2Desk. Если клиент ещё не писал, создаёт его в Chat2Desk и пишет первым.',
    'Envía un mensaje al cliente por Chat2Desk. Si el cliente nunca escribió, lo crea en Chat2Desk y le escribe primero.',
  ),
  properties: ({ channels }) => ({
    phone: requiredPhoneProperty,
    text: { name: localized('Message text', 'Текст сообщения', 'Texto del mensaje'), type: 'text' },
    attachment: {
      name: localized('Attachment link', 'Ссылка на вложение', 'Enlace al adjunto'),
      description: localized('Direct public link to the file', 'Прямая публичная ссылка на файл', 'Enlace público directo al archivo'),
      type: 'string',
    },
    channel_id: {
      name: localized('Channel', 'Канал', 'Canal'),
      description: localized('Empty: the default channel', 'Пусто: канал по умолчанию', 'Vacío: el canal predeterminado'),
      type: 'select',
      options: channelOptions(channels),
    },
    transport: {
      name: localized('Messenger', 'Мессенджер', 'Mensajero'),
      description: localized("Empty: the client's last one, or the default", 'Пусто: последний у клиента или по умолчанию', 'Vacío: el último del cliente o el predeterminado'),
      type: 'select',
      options: Object.fromEntries(KNOWN_TRANSPORTS.map((name) => [name, name])),
    },
    open_dialog: { name: localized('Open the dialog', 'Открыть диалог', 'Abrir el diálogo'), type: 'bool', default: 'Y' },
  }),
  returnProperties,
  schema,
  run: (run, properties) => send(run, properties),
  settle,
  failed: (error) => ({
    returnValues: { status: 'failed', error, message_id: '', client_id: '', dialog_id: '', channel_id: '', transport: '' },
    logMessage: `Chat2Desk message not sent: ${error}`,
  }),
};

function channelOptions(channels: Chat2DeskChannel[]): Record<string, string> {
  return Object.fromEntries(channels.map((channel) => [String(channel.id), channel.phone ? `${channel.name} (${channel.phone})` : channel.name]));
}

/** The run's effects in the ledger (src/jobs/ledger.ts): both are the run's own, keyed by its id. */
const clientKey = (run: RobotRun) => `run:${run.runId}:client`;
const messageKey = (run: RobotRun) => `run:${run.runId}:message`;

const MESSAGE_IN_DOUBT = 'Chat2Desk shows nothing that tells whether the message went out: it may already have been sent, so it is not sent again';
const MESSAGE_UNREACHABLE = 'could not check with Chat2Desk whether the message went out: it may already have been sent';

async function send(run: RobotRun, props: Properties): Promise<RobotOutcome> {
  const { settings, chat2desk } = run;
  const phone = phoneOrFail(props.phone, settings.defaultCountry);
  const explicitChannel = props.channel_id ? Number(props.channel_id) : undefined;
  const client = await chooseClient(run, phone.digits, explicitChannel, props.transport || undefined);

  // A new client has no "last message" for Chat2Desk to take the route from (docs/protocols.md C2).
  const transport = props.transport || client.route?.transport || (client.writeFirst ? (settings.defaultTransport ?? undefined) : undefined);
  const channelId = explicitChannel ?? client.route?.channelId ?? (client.writeFirst ? (settings.defaultChannelId ?? undefined) : undefined);
  const intent: SendIntent = { clientId: client.clientId, externalId: `b24-${run.runId}`, ...(props.text ? { textDigest: digest(props.text) } : {}) };
  const { value: sent } = await run.ledger.once<SentMessage>({
    ...messageCheck(run),
    intent: { ...intent },
    busy: 'another attempt of this run is sending the message',
    // POST /messages is never repeated blindly (docs/protocols.md C2): an attempt in doubt is settled first.
    // It goes to the claim's client, where settling looked, even if the phone leads elsewhere by now.
    act: async (claim) => {
      try {
        return await chat2desk.sendMessage({
          client_id: claimedClient(claim, client.clientId),
          ...(props.text ? { text: props.text } : {}),
          ...(props.attachment ? { attachment: props.attachment } : {}),
          ...(transport ? { transport } : {}),
          ...(channelId ? { channel_id: channelId } : {}),
          open_dialog: yes(props.open_dialog),
          external_id: intent.externalId,
        });
      } catch (error) {
        if (error instanceof Chat2DeskError && !error.transient) throw new RobotFailure(`Chat2Desk refused the message: ${error.apiMessage}`);
        throw error;
      }
    },
    refused: refusedBeforeActing,
  });
  return sentOutcome(sent, client.clientId, client.writeFirst);
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
function refusedBeforeActing(error: unknown): boolean {
  return error instanceof RobotFailure || (error instanceof Chat2DeskError && (!error.transient || error.kind === 'rate_limit'));
}

/**
 * The client the message goes to: the one Chat2Desk has for the number, else one created for it
 * (write first). Creating is an effect in the ledger: a retry after a lost answer finds the client
 * by phone instead of creating a second one, and sends the way it was created.
 */
async function chooseClient(run: RobotRun, phoneDigits: string, channelId: number | undefined, transport: string | undefined): Promise<ClientChoice> {
  const pinned = await run.ledger.peek<ClientChoice>(clientKey(run));
  if (pinned?.state === 'done') return pinned.value;
  if (!pinned) {
    const [existing] = await run.directory.clientsByPhone(phoneDigits);
    if (existing) return { clientId: existing.id, writeFirst: false };
  }
  const route = pinned ? undefined : await writeFirstRoute(run.directory, run.settings, channelId, transport);
  const routeOf = (claim: Claim) => (claim.intent.route as ClientChoice['route']) ?? route ?? null;
  const { value } = await run.ledger.once<ClientChoice>({
    key: clientKey(run),
    intent: { route },
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

/** How the message of this run is looked for when its send is in doubt. */
function messageCheck(run: RobotRun): EffectCheck<SentMessage> {
  return { key: messageKey(run), inDoubt: MESSAGE_IN_DOUBT, unreachable: MESSAGE_UNREACHABLE, settle: (claim) => findSent(run, claim) };
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
 * At give-up: a send whose answer was lost may have gone out; if so, the run succeeded. When it
 * cannot be told, the run fails saying the message may already have been sent.
 */
async function settle(run: RobotRun): Promise<RobotOutcome | undefined> {
  let sent: SentMessage | undefined;
  try {
    sent = await run.ledger.settle(messageCheck(run));
  } catch (error) {
    if (error instanceof RobotFailure) return sendMessage.failed(error.message);
    throw error;
  }
  if (!sent) return undefined;
  const client = await run.ledger.peek<ClientChoice>(clientKey(run));
  return sentOutcome(sent, sent.client_id, client?.state === 'done' && client.value.writeFirst);
}

function sentOutcome(sent: SentMessage, clientId: number, wroteFirst: boolean): RobotOutcome {
  return {
    returnValues: {
      status: 'sent',
      error: '',
      message_id: sent.message_id,
      client_id: sent.client_id ?? clientId,
      dialog_id: sent.dialog_id ?? '',
      channel_id: sent.channel_id ?? '',
      transport: sent.transport ?? '',
    },
    logMessage: `Chat2Desk message ${sent.message_id} sent to client ${sent.client_id ?? clientId}${wroteFirst ? ' (wrote first)' : ''} via ${sent.transport}, channel ${sent.channel_id}`,
  };
}

/** Where to write first from: the robot's channel, else the portal default, else the first channel that has the transport. */
async function writeFirstRoute(
  directory: DialogDirectory,
  settings: PortalSettings,
  channelId: number | undefined,
  transport: string | undefined,
): Promise<{ channelId: number; transport: string }> {
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
