import * as v from 'valibot';
import type { Chat2DeskTag } from '../chat2desk/client.js';
import { Chat2DeskError } from '../chat2desk/errors.js';
import { RobotFailure, excerpt, localized, type Activity, type PropertyDefinition, type RobotOutcome, type RobotRun } from './activity.js';
import { DIALOG_TARGET_REQUIRED, dialogTargetEntries, dialogTargetProperties, hasDialogTarget, resolveDialog } from './dialog-target.js';

/** Bitrix24 sends a multiple property as an array; a single text may also list several, comma-separated. */
function tagNames(value: string | string[]): string[] {
  const names = (Array.isArray(value) ? value : [value]).flatMap((item) => item.split(',')).map((item) => item.trim());
  return [...new Set(names.filter((name) => name !== ''))];
}

/** Tags one run may change, and the longest name or id read; beyond them the call is refused unread. */
const MAX_TAGS = 50;
const MAX_TAG_LENGTH = 100;

/** A select; unset, it arrives as an empty string and means the default (the first option). */
const choice = <const T extends readonly [string, ...string[]]>(options: T, message: string) =>
  v.optional(
    v.pipe(
      v.string(message),
      v.trim(),
      v.transform((value) => value || options[0]),
      v.picklist(options, message),
    ),
    options[0],
  );

const schema = v.pipe(
  v.object({
    ...dialogTargetEntries,
    tags: v.pipe(
      v.union([v.string(), v.array(v.string())], 'tags are required'),
      v.transform(tagNames),
      v.minLength(1, 'tags are required'),
      v.maxLength(MAX_TAGS, `at most ${MAX_TAGS} tags at once`),
      v.check((names) => names.every((name) => name.length <= MAX_TAG_LENGTH), `a tag is longer than ${MAX_TAG_LENGTH} characters`),
    ),
    action: choice(['add', 'remove'], 'action must be add or remove'),
    target: choice(['client', 'request'], 'target must be client or request'),
  }),
  v.check((props) => hasDialogTarget(props), DIALOG_TARGET_REQUIRED),
);

type Properties = v.InferOutput<typeof schema>;

const returnProperties: Record<string, PropertyDefinition> = {
  status: { name: localized('Status (ok, not_found or failed)', 'Статус (ok, not_found или failed)', 'Estado (ok, not_found o failed)'), type: 'string' },
  error: { name: localized('Error', 'Ошибка', 'Error'), type: 'string' },
  client_id: { name: localized('Chat2Desk client ID', 'ID клиента Chat2Desk', 'ID del cliente en Chat2Desk'), type: 'int' },
  request_id: { name: localized('Tagged request ID', 'ID отмеченного обращения', 'ID de la solicitud etiquetada'), type: 'int' },
  tags: { name: localized("Client's tags after the change", 'Теги клиента после изменения', 'Etiquetas del cliente después del cambio'), type: 'string' },
};

export const tagDialog: Activity<typeof schema> = {
  code: 'c2d_tag_dialog',
  name: localized('Tag dialog', 'Поставить теги диалогу', 'Etiquetar diálogo'),
  description: localized(
    "Adds or removes Chat2Desk tags on the dialog's client or on its current request.",
    'Добавляет или снимает теги Chat2Desk у клиента диалога или у его текущего обращения.',
    'Agrega o quita etiquetas de Chat2Desk al cliente del diálogo o a su solicitud actual.',
  ),
  properties: () => ({
    ...dialogTargetProperties,
    tags: {
      name: localized('Tags', 'Теги', 'Etiquetas'),
      description: localized(
        'Tag names or IDs; several may be separated by commas',
        'Названия или ID тегов; несколько — через запятую',
        'Nombres o ID de etiquetas; varias separadas por comas',
      ),
      type: 'string',
      multiple: true,
      required: true,
    },
    action: {
      name: localized('Action', 'Действие', 'Acción'),
      type: 'select',
      options: { add: 'Add', remove: 'Remove' },
      default: 'add',
    },
    target: {
      name: localized('Tag', 'Кому ставить', 'Etiquetar'),
      description: localized(
        "Chat2Desk tags belong to clients and requests, not dialogs: the client, or the dialog's current request",
        'Теги Chat2Desk ставятся клиентам и обращениям, не диалогам: клиенту или текущему обращению диалога',
        'En Chat2Desk las etiquetas son de clientes y solicitudes, no de diálogos: el cliente o la solicitud actual del diálogo',
      ),
      type: 'select',
      options: { client: 'Client', request: 'Request' },
      default: 'client',
    },
  }),
  returnProperties,
  schema,
  run: (run, properties) => tag(run, properties),
  failed: (error) => ({
    returnValues: { status: 'failed', error, client_id: '', request_id: '', tags: '' },
    logMessage: `Chat2Desk tags not changed: ${error}`,
  }),
};

async function tag(run: RobotRun, props: Properties): Promise<RobotOutcome> {
  const target = await resolveDialog(run, props);
  if (!target) {
    const error = props.dialog_id ? `Chat2Desk dialog ${props.dialog_id} not found` : 'the client has no Chat2Desk dialog';
    return { returnValues: { status: 'not_found', error, client_id: '', request_id: '', tags: '' }, logMessage: `Chat2Desk tags not changed: ${error}` };
  }
  const { dialog } = target;
  const clientId = dialog.clientId ?? target.client?.id;
  if (clientId === undefined) throw new RobotFailure(`Chat2Desk dialog ${dialog.id} has no messages yet, so its client is unknown`);
  let assignee: { type: 'client' | 'request'; id: number } = { type: 'client', id: clientId };
  if (props.target === 'request') {
    if (dialog.lastRequestId === null) throw new RobotFailure(`Chat2Desk dialog ${dialog.id} has no request to tag`);
    assignee = { type: 'request', id: dialog.lastRequestId };
  }

  const tags = await resolveTags(run, props.tags);
  try {
    await run.directory.tag(
      tags.map((item) => item.id),
      assignee,
      clientId,
      props.action,
    );
  } catch (error) {
    if (error instanceof Chat2DeskError && !error.transient) throw new RobotFailure(`Chat2Desk refused the tags: ${error.apiMessage}`);
    throw error;
  }
  // The directory forgot the client on write, so this reads Chat2Desk's state after the change.
  const client = await run.directory.client(clientId);
  const labels = tags.map((item) => item.label).join(', ');
  return {
    returnValues: {
      status: 'ok',
      error: '',
      client_id: clientId,
      request_id: assignee.type === 'request' ? assignee.id : '',
      tags: client.tags.map((item) => item.label).join(', '),
    },
    logMessage: `Chat2Desk tags ${labels} ${props.action === 'add' ? 'added to' : 'removed from'} ${assignee.type} ${assignee.id} (dialog ${dialog.id})`,
  };
}

/**
 * Each name is a tag id or a label (case-insensitive). The tag list is cached; a name it does not
 * know is looked up once more in Chat2Desk itself, in case the tag was created since.
 */
async function resolveTags(run: RobotRun, names: string[]): Promise<Chat2DeskTag[]> {
  let resolved = match(await run.directory.tags(), names);
  if (resolved.unknown.length > 0) resolved = match(await run.chat2desk.tags(), names);
  if (resolved.unknown.length > 0) throw new RobotFailure(`unknown Chat2Desk tags: ${excerpt(resolved.unknown, 200)}`);
  if (resolved.ambiguous.length > 0) throw new RobotFailure(`ambiguous Chat2Desk tags (give the id): ${excerpt(resolved.ambiguous.join('; '), 200)}`);
  return [...new Map(resolved.tags.map((item) => [item.id, item])).values()];
}

function match(all: Chat2DeskTag[], names: string[]): { tags: Chat2DeskTag[]; unknown: string[]; ambiguous: string[] } {
  const tags: Chat2DeskTag[] = [];
  const unknown: string[] = [];
  const ambiguous: string[] = [];
  for (const name of names) {
    const byId = /^\d+$/.test(name) ? all.find((item) => item.id === Number(name)) : undefined;
    const byLabel = all.filter((item) => item.label.trim().toLowerCase() === name.toLowerCase());
    if (byId) tags.push(byId);
    else if (byLabel.length === 1) tags.push(byLabel[0]!);
    else if (byLabel.length > 1) ambiguous.push(`${name} is ${byLabel.map((item) => `${item.id}${item.group_name ? ` (${item.group_name})` : ''}`).join(' or ')}`);
    else unknown.push(name);
  }
  return { tags, unknown, ambiguous };
}
