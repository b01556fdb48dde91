import * as v from 'valibot';
import { Chat2DeskError } from '../chat2desk/errors.js';
import { latestFirst, type CachedClient, type CachedDialog } from '../chat2desk/directory.js';
import { localized, type PropertyDefinition, type RobotRun } from './activity.js';
import { optionalPhoneEntry, phoneGiven, phoneOrFail, type PhoneValue } from './phone-property.js';

/**
 * The robots that act on a dialog name it by `dialog_id`, or by `phone` (the client's latest
 * dialog). These are the shared property definitions, schema entries and resolution.
 */
export const dialogTargetProperties: Record<string, PropertyDefinition> = {
  dialog_id: {
    name: localized('Dialog ID', 'ID диалога', 'ID del diálogo'),
    description: localized('Or leave empty and give the phone', 'Или оставьте пустым и укажите телефон', 'O déjelo vacío e indique el teléfono'),
    type: 'string',
  },
  phone: {
    name: localized('Client phone', 'Телефон клиента', 'Teléfono del cliente'),
    description: localized(
      "Used when no dialog ID is given: the client's latest dialog",
      'Если ID диалога не указан: последний диалог клиента',
      'Si no hay ID de diálogo: el último diálogo del cliente',
    ),
    type: 'string',
  },
};

export const dialogTargetEntries = {
  dialog_id: v.optional(
    v.pipe(
      v.string(),
      v.trim(),
      v.check((id) => id === '' || /^\d{1,15}$/.test(id), 'dialog_id must be a Chat2Desk dialog id'),
    ),
    '',
  ),
  phone: optionalPhoneEntry,
};

export const hasDialogTarget = (props: { dialog_id: string; phone: PhoneValue }) => props.dialog_id !== '' || phoneGiven(props.phone);

export const DIALOG_TARGET_REQUIRED = 'give dialog_id or phone';

export interface DialogTarget {
  dialog: CachedDialog;
  /** The client, when known (always when named by phone). */
  client: CachedClient | undefined;
}

/** Finds the dialog, or undefined when Chat2Desk has none (the robot then answers `not_found`). */
export async function resolveDialog(run: RobotRun, props: { dialog_id: string; phone: string | string[] }): Promise<DialogTarget | undefined> {
  if (props.dialog_id) {
    try {
      const dialog = await run.directory.dialog(Number(props.dialog_id));
      const client = dialog.clientId !== null ? await run.directory.client(dialog.clientId).catch(notFoundAsUndefined) : undefined;
      return { dialog, client };
    } catch (error) {
      return notFoundAsUndefined(error);
    }
  }
  const phone = phoneOrFail(props.phone, run.settings.defaultCountry);
  const clients = await run.directory.clientsByPhone(phone.digits);
  let latest: DialogTarget | undefined;
  for (const client of clients) {
    const [dialog] = await run.directory.dialogsOfClient(client.id);
    if (dialog && (!latest || latestFirst(dialog, latest.dialog) < 0)) latest = { dialog, client };
  }
  return latest;
}

function notFoundAsUndefined(error: unknown): undefined {
  if (error instanceof Chat2DeskError && error.kind === 'not_found') return undefined;
  throw error;
}
