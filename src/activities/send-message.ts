import * as v from 'valibot';
import { isYes as yes } from '../bitrix24/values.js';
import type { Chat2DeskChannel, SentMessage } from '../chat2desk/client.js';
import { KNOWN_TRANSPORTS } from '../portal-settings.js';
import { RobotFailure, localized, type Activity, type PropertyDefinition, type RobotOutcome, type RobotRun } from './activity.js';
import { phoneOrFail, requiredPhoneEntry, requiredPhoneProperty } from './phone-property.js';
import { clientForPhone, messageCheck, sendOnce, writeFirstRoute, type ClientChoice } from './sending.js';

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

async function send(run: RobotRun, props: Properties): Promise<RobotOutcome> {
  const { settings } = run;
  const phone = phoneOrFail(props.phone, settings.defaultCountry);
  const explicitChannel = props.channel_id ? Number(props.channel_id) : undefined;
  const client = await clientForPhone(run, clientKey(run), phone.digits, () => writeFirstRoute(run.directory, settings, explicitChannel, props.transport || undefined));

  // A new client has no "last message" for Chat2Desk to take the route from (docs/protocols.md C2).
  const transport = props.transport || client.route?.transport || (client.writeFirst ? (settings.defaultTransport ?? undefined) : undefined);
  const channelId = explicitChannel ?? client.route?.channelId ?? (client.writeFirst ? (settings.defaultChannelId ?? undefined) : undefined);
  const sent = await sendOnce(run, messageKey(run), {
    client_id: client.clientId,
    ...(props.text ? { text: props.text } : {}),
    ...(props.attachment ? { attachment: props.attachment } : {}),
    ...(transport ? { transport } : {}),
    ...(channelId ? { channel_id: channelId } : {}),
    open_dialog: yes(props.open_dialog),
    external_id: `b24-${run.runId}`,
  });
  return sentOutcome(sent, client.clientId, client.writeFirst);
}

/**
 * At give-up: a send whose answer was lost may have gone out; if so, the run succeeded. When it
 * cannot be told, the run fails saying the message may already have been sent.
 */
async function settle(run: RobotRun): Promise<RobotOutcome | undefined> {
  let sent: SentMessage | undefined;
  try {
    sent = await run.ledger.settle(messageCheck(run, messageKey(run)));
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
