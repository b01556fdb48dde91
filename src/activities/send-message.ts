import { createHash } from 'node:crypto';
import * as v from 'valibot';
import { isYes as yes } from '../bitrix24/values.js';
import type { Chat2DeskChannel, Chat2DeskMessage, SentMessage } from '../chat2desk/client.js';
import type { DialogDirectory } from '../chat2desk/directory.js';
import { Chat2DeskError } from '../chat2desk/errors.js';
import { parseChat2DeskTime } from '../chat2desk/times.js';
import type { PortalSettings } from '../portal-settings.js';
import { KNOWN_TRANSPORTS } from '../portal-settings.js';
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

interface Checkpoint {
  clientId?: number;
  writeFirst?: boolean;
  /** Where write first created the client: the first message must go out the same way. */
  route?: { channelId: number; transport: string };
  /** Set before POST /messages: from then on a retry must first look for the message by external_id. */
  sendAttempted?: boolean;
  /** When POST /messages was first tried (ms): how far back a retry looks for the message. */
  attemptAt?: number;
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

async function send(run: RobotRun, props: Properties): Promise<RobotOutcome> {
  const { settings, chat2desk } = run;
  const phone = phoneOrFail(props.phone, settings.defaultCountry);
  const checkpoint = run.checkpoint as Checkpoint;
  const externalId = `b24-${run.runId}`;
  const explicitChannel = props.channel_id ? Number(props.channel_id) : undefined;

  if (checkpoint.clientId === undefined) {
    const [existing] = await run.directory.clientsByPhone(phone.digits);
    if (existing) {
      checkpoint.clientId = existing.id;
      checkpoint.writeFirst = false;
    } else {
      const route = await writeFirstRoute(run.directory, settings, explicitChannel, props.transport || undefined);
      const created = await run.directory.createClient({ phone: phone.digits, transport: route.transport, channel_id: route.channelId });
      checkpoint.route = route;
      checkpoint.clientId = created.id;
      checkpoint.writeFirst = true;
    }
    await run.saveCheckpoint({ ...checkpoint });
  }
  const clientId = checkpoint.clientId;

  // An earlier attempt may have reached Chat2Desk before the crash or the lost answer.
  let sent = checkpoint.sendAttempted ? await sentEarlier(run, clientId) : undefined;
  if (!sent) {
    // A new client has no "last message" for Chat2Desk to take the route from (docs/protocols.md C2).
    const transport = props.transport || checkpoint.route?.transport || (checkpoint.writeFirst ? (settings.defaultTransport ?? undefined) : undefined);
    const channelId = explicitChannel ?? checkpoint.route?.channelId ?? (checkpoint.writeFirst ? (settings.defaultChannelId ?? undefined) : undefined);
    checkpoint.sendAttempted = true;
    // The first attempt's time: a later one looks back to it, so it is kept.
    checkpoint.attemptAt ??= Date.now();
    if (props.text) checkpoint.textDigest = digest(props.text);
    await run.saveCheckpoint({ ...checkpoint });
    try {
      sent = await chat2desk.sendMessage({
        client_id: clientId,
        ...(props.text ? { text: props.text } : {}),
        ...(props.attachment ? { attachment: props.attachment } : {}),
        ...(transport ? { transport } : {}),
        ...(channelId ? { channel_id: channelId } : {}),
        open_dialog: yes(props.open_dialog),
        external_id: externalId,
      });
    } catch (error) {
      if (error instanceof Chat2DeskError && !error.transient) throw new RobotFailure(`Chat2Desk refused the message: ${error.apiMessage}`);
      throw error;
    }
  }
  return sentOutcome(sent, clientId, checkpoint.writeFirst === true);
}

/**
 * The message this run sent in an earlier attempt, undefined if there is none. Pages back through
 * the client's outgoing messages to the first attempt's time, however many came since (later runs,
 * operators' replies): by external_id, else (Chat2Desk may not echo it) by the same text within that
 * time, on a message that carries no other external_id.
 */
async function sentEarlier(run: RobotRun, clientId: number): Promise<SentMessage | undefined> {
  const externalId = `b24-${run.runId}`;
  const checkpoint = run.checkpoint as Checkpoint;
  // A checkpoint written before attemptAt existed: the call's acceptance is earlier than any attempt.
  const since = (checkpoint.attemptAt ?? run.acceptedAt) - CLOCK_SKEW_MS;
  let sameText: Chat2DeskMessage | undefined;
  for await (const page of run.chat2desk.messagesToClient(clientId)) {
    for (const message of page) {
      if (carriesExternalId(message, externalId)) return fromListedMessage(message, clientId);
      const at = parseChat2DeskTime(message.created);
      const candidate = !sameText && checkpoint.textDigest !== undefined && !carriesAnyExternalId(message) && (at === undefined || at >= since);
      if (candidate && message.text && digest(message.text.trim()) === checkpoint.textDigest) {
        sameText = message;
      }
    }
    const oldest = parseChat2DeskTime(page.at(-1)?.created);
    if (oldest !== undefined && oldest < since) break;
  }
  if (sameText) run.log.warn({ messageId: sameText.id }, 'earlier send found by its text: Chat2Desk did not show our external_id');
  return sameText ? fromListedMessage(sameText, clientId) : undefined;
}

/**
 * At give-up: a send whose answer was lost may have gone out; if so, the run succeeded. When
 * Chat2Desk cannot be asked, the run fails saying so rather than claiming nothing was sent.
 */
async function settle(run: RobotRun): Promise<RobotOutcome | undefined> {
  const checkpoint = run.checkpoint as Checkpoint;
  if (!checkpoint.sendAttempted || checkpoint.clientId === undefined) return undefined;
  let sent: SentMessage | undefined;
  try {
    sent = await sentEarlier(run, checkpoint.clientId);
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    return sendMessage.failed(`could not check with Chat2Desk whether the message went out: it may already have been sent (${reason})`);
  }
  return sent ? sentOutcome(sent, checkpoint.clientId, checkpoint.writeFirst === true) : undefined;
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
