import * as v from 'valibot';
import { Bitrix24Error } from '../bitrix24/errors.js';
import { dialogUrl } from '../chat2desk/links.js';
import { toBitrixDateTime } from '../chat2desk/times.js';
import { latestFirst, type CachedClient, type CachedDialog } from '../chat2desk/directory.js';
import { localized, type Activity, type PropertyDefinition, type RobotOutcome, type RobotRun } from './activity.js';
import { bitrixUserForOperator, operatorName } from './operators.js';
import { phoneOrFail, requiredPhoneEntry, requiredPhoneProperty } from './phone-property.js';

const STATES = ['any', 'open', 'closed'] as const;

const schema = v.object({
  phone: requiredPhoneEntry,
  state: v.optional(
    v.pipe(
      v.string('state must be any, open or closed'),
      v.trim(),
      // An unset select arrives as an empty string.
      v.transform((state) => state || 'any'),
      v.picklist(STATES, 'state must be any, open or closed'),
    ),
    'any',
  ),
});

type Properties = v.InferOutput<typeof schema>;

const returnProperties: Record<string, PropertyDefinition> = {
  status: { name: localized('Status (ok, not_found or failed)', 'Статус (ok, not_found или failed)', 'Estado (ok, not_found o failed)'), type: 'string' },
  error: { name: localized('Error', 'Ошибка', 'Error'), type: 'string' },
  found: { name: localized('Dialog found', 'Диалог найден', 'Diálogo encontrado'), type: 'bool' },
  dialogs_count: { name: localized('Matching dialogs', 'Подходящих диалогов', 'Diálogos que coinciden'), type: 'int' },
  client_id: { name: localized('Chat2Desk client ID', 'ID клиента Chat2Desk', 'ID del cliente en Chat2Desk'), type: 'int' },
  client_name: { name: localized('Client name', 'Имя клиента', 'Nombre del cliente'), type: 'string' },
  dialog_id: { name: localized('Dialog ID', 'ID диалога', 'ID del diálogo'), type: 'int' },
  dialog_state: { name: localized('Dialog state (open or closed)', 'Состояние диалога (open или closed)', 'Estado del diálogo (open o closed)'), type: 'string' },
  operator_id: { name: localized('Chat2Desk operator ID', 'ID оператора Chat2Desk', 'ID del operador en Chat2Desk'), type: 'int' },
  operator_name: { name: localized('Operator name', 'Имя оператора', 'Nombre del operador'), type: 'string' },
  responsible: {
    name: localized('Responsible (Bitrix24 user of the operator)', 'Ответственный (пользователь Битрикс24 оператора)', 'Responsable (usuario de Bitrix24 del operador)'),
    type: 'user',
  },
  channel_id: { name: localized('Channel ID', 'ID канала', 'ID del canal'), type: 'int' },
  transport: { name: localized('Transport', 'Транспорт', 'Transporte'), type: 'string' },
  tags: { name: localized('Client tags', 'Теги клиента', 'Etiquetas del cliente'), type: 'string' },
  last_message_text: { name: localized('Last message text', 'Текст последнего сообщения', 'Texto del último mensaje'), type: 'text' },
  last_message_at: { name: localized('Last message time', 'Время последнего сообщения', 'Hora del último mensaje'), type: 'datetime' },
  dialog_url: { name: localized('Link to the dialog in Chat2Desk', 'Ссылка на диалог в Chat2Desk', 'Enlace al diálogo en Chat2Desk'), type: 'string' },
};

const EMPTY_FOUND = {
  client_id: '',
  client_name: '',
  dialog_id: '',
  dialog_state: '',
  operator_id: '',
  operator_name: '',
  responsible: '',
  channel_id: '',
  transport: '',
  tags: '',
  last_message_text: '',
  last_message_at: '',
  dialog_url: '',
};

export const findDialogs: Activity<typeof schema> = {
  code: 'c2d_find_dialogs',
  name: localized('Find dialogs by phone', 'Найти диалоги по телефону', 'Buscar diálogos por teléfono'),
  description: localized(
    "Looks the client up in Chat2Desk by phone and returns the latest dialog: its state, operator, the operator's Bitrix24 user, channel, last message and a link.",
    'Ищет клиента в Chat2Desk по телефону и возвращает его последний диалог: состояние, оператора, его пользователя Битрикс24, канал, последнее сообщение и ссылку.',
    'Busca al cliente en Chat2Desk por teléfono y devuelve su último diálogo: estado, operador, su usuario de Bitrix24, canal, último mensaje y un enlace.',
  ),
  properties: () => ({
    phone: requiredPhoneProperty,
    state: {
      name: localized('Dialog state', 'Состояние диалога', 'Estado del diálogo'),
      type: 'select',
      options: { any: 'any', open: 'open', closed: 'closed' },
      default: 'any',
    },
  }),
  returnProperties,
  schema,
  run: (run, properties) => find(run, properties),
  failed: (error) => ({
    returnValues: { status: 'failed', error, found: 'N', dialogs_count: '', ...EMPTY_FOUND },
    logMessage: `Chat2Desk dialogs not looked up: ${error}`,
  }),
};

async function find(run: RobotRun, props: Properties): Promise<RobotOutcome> {
  const phone = phoneOrFail(props.phone, run.settings.defaultCountry);
  const clients = await run.directory.clientsByPhone(phone.digits);
  const matching: Array<{ dialog: CachedDialog; client: CachedClient }> = [];
  for (const client of clients) {
    for (const dialog of await run.directory.dialogsOfClient(client.id)) {
      if (props.state === 'any' || dialog.state === props.state) matching.push({ dialog, client });
    }
  }
  const latest = matching.reduce<(typeof matching)[number] | undefined>((best, item) => (!best || latestFirst(item.dialog, best.dialog) < 0 ? item : best), undefined);
  if (!latest) {
    const what = props.state === 'any' ? 'dialogs' : `${props.state} dialogs`;
    return {
      returnValues: { status: 'not_found', error: '', found: 'N', dialogs_count: 0, ...EMPTY_FOUND },
      logMessage: clients.length === 0 ? `No Chat2Desk client with phone ${phone.e164}` : `The Chat2Desk client with phone ${phone.e164} has no ${what}`,
    };
  }
  const { dialog, client } = latest;
  const operator = dialog.operatorId !== null ? (await run.directory.operators()).find((item) => item.id === dialog.operatorId) : undefined;
  const responsible = dialog.operatorId !== null ? await responsibleUser(run, dialog.operatorId) : undefined;
  return {
    returnValues: {
      status: 'ok',
      error: '',
      found: 'Y',
      dialogs_count: matching.length,
      client_id: client.id,
      // assigned_name is the name operators gave the client; name is what the messenger reported.
      client_name: client.assignedName || client.name || '',
      dialog_id: dialog.id,
      dialog_state: dialog.state,
      operator_id: dialog.operatorId ?? '',
      operator_name: dialog.operatorId !== null ? operatorName(operator) || `#${dialog.operatorId}` : '',
      responsible: responsible !== undefined ? `user_${responsible}` : '',
      channel_id: dialog.channelId ?? '',
      transport: dialog.transport ?? '',
      tags: client.tags.map((tag) => tag.label).join(', '),
      last_message_text: dialog.lastMessageText ?? '',
      last_message_at: dialog.lastMessageAt ? toBitrixDateTime(dialog.lastMessageAt) : '',
      dialog_url: dialogUrl(run.settings.chat2deskApiUrl, dialog.id),
    },
    logMessage: `Chat2Desk dialog ${dialog.id} (${dialog.state}) of client ${client.id} found; ${matching.length} matching dialog(s)`,
  };
}

/** The operator's Bitrix24 user; an operator nobody can be mapped to leaves it empty, as does a portal that refuses user.get. */
async function responsibleUser(run: RobotRun, operatorId: number): Promise<number | undefined> {
  try {
    return await bitrixUserForOperator(run, operatorId);
  } catch (error) {
    if (error instanceof Bitrix24Error && error.accessDenied) {
      run.log.warn({ operatorId, err: error.message }, 'Bitrix24 refused user.get; responsible left empty');
      return undefined;
    }
    throw error;
  }
}
