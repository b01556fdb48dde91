import * as v from 'valibot';
import { isYes } from '../bitrix24/values.js';
import { Bitrix24Error } from '../bitrix24/errors.js';
import { Chat2DeskError } from '../chat2desk/errors.js';
import { RobotFailure, localized, type Activity, type PropertyDefinition, type RobotOutcome, type RobotRun } from './activity.js';
import { DIALOG_TARGET_REQUIRED, dialogTargetEntries, dialogTargetProperties, hasDialogTarget, resolveDialog } from './dialog-target.js';
import { operatorForBitrixUser, parseBitrixUser } from './operators.js';

/** A user property arrives as `user_5`; some documents pass it as a one-item list. */
const firstValue = (value: string | string[]) => (Array.isArray(value) ? (value.find((item) => item.trim() !== '') ?? '') : value).trim();

const schema = v.pipe(
  v.object({
    ...dialogTargetEntries,
    operator: v.optional(
      v.pipe(
        v.union([v.string(), v.array(v.string())], 'operator must be a Bitrix24 user'),
        v.transform(firstValue),
        v.check((user) => user === '' || parseBitrixUser(user) !== undefined, 'operator must be a Bitrix24 user'),
        v.transform(parseBitrixUser),
      ),
    ),
    operator_id: v.optional(
      v.pipe(
        v.string(),
        v.trim(),
        v.check((id) => id === '' || /^\d{1,15}$/.test(id), 'operator_id must be a Chat2Desk operator id'),
      ),
      '',
    ),
    force: v.optional(v.string(), 'N'),
  }),
  v.check((props) => hasDialogTarget(props), DIALOG_TARGET_REQUIRED),
  v.check((props) => props.operator !== undefined || props.operator_id !== '', 'give operator (a Bitrix24 user) or operator_id (a Chat2Desk operator id)'),
);

type Properties = v.InferOutput<typeof schema>;

const returnProperties: Record<string, PropertyDefinition> = {
  status: { name: localized('Status (ok, not_found or failed)', 'Статус (ok, not_found или failed)', 'Estado (ok, not_found o failed)'), type: 'string' },
  error: { name: localized('Error', 'Ошибка', 'Error'), type: 'string' },
  dialog_id: { name: localized('Dialog ID', 'ID диалога', 'ID del diálogo'), type: 'int' },
  operator_id: { name: localized('Chat2Desk operator ID', 'ID оператора Chat2Desk', 'ID del operador en Chat2Desk'), type: 'int' },
};

export const assignOperator: Activity<typeof schema> = {
  code: 'c2d_assign_operator',
  name: localized('Assign operator', 'Назначить оператора', 'Asignar operador'),
  description: localized(
    'Transfers the Chat2Desk dialog to an operator, given as a Bitrix24 user (mapped in the app settings or by the same e-mail) or as a Chat2Desk operator ID.',
    'Передаёт диалог Chat2Desk оператору: пользователю Битрикс24 (по настройкам приложения или по одинаковому e-mail) или оператору по ID Chat2Desk.',
    'Transfiere el diálogo de Chat2Desk a un operador: un usuario de Bitrix24 (según los ajustes de la aplicación o por el mismo e-mail) o un ID de operador de Chat2Desk.',
  ),
  properties: () => ({
    ...dialogTargetProperties,
    operator: {
      name: localized('Operator (Bitrix24 user)', 'Оператор (пользователь Битрикс24)', 'Operador (usuario de Bitrix24)'),
      description: localized(
        'Mapped to a Chat2Desk operator in the app settings or by the same e-mail',
        'Сопоставляется с оператором Chat2Desk в настройках приложения или по одинаковому e-mail',
        'Se asocia a un operador de Chat2Desk en los ajustes de la aplicación o por el mismo e-mail',
      ),
      type: 'user',
    },
    operator_id: {
      name: localized('Chat2Desk operator ID', 'ID оператора Chat2Desk', 'ID del operador en Chat2Desk'),
      description: localized(
        'Used instead of the Bitrix24 user when given',
        'Если указан, используется вместо пользователя Битрикс24',
        'Si se indica, se usa en lugar del usuario de Bitrix24',
      ),
      type: 'string',
    },
    force: {
      name: localized(
        'Assign even if the operator is offline or busy',
        'Назначить, даже если оператор не в сети или занят',
        'Asignar aunque el operador esté desconectado u ocupado',
      ),
      type: 'bool',
      default: 'N',
    },
  }),
  returnProperties,
  schema,
  run: (run, properties) => assign(run, properties),
  failed: (error) => ({
    returnValues: { status: 'failed', error, dialog_id: '', operator_id: '' },
    logMessage: `Chat2Desk operator not assigned: ${error}`,
  }),
};

async function assign(run: RobotRun, props: Properties): Promise<RobotOutcome> {
  // The schema lets no call through without operator_id or a Bitrix24 user that parses.
  const operatorId = props.operator_id ? Number(props.operator_id) : await operatorOfUser(run, props.operator!);
  const target = await resolveDialog(run, props);
  if (!target) {
    return {
      returnValues: { status: 'not_found', error: '', dialog_id: '', operator_id: operatorId },
      logMessage: props.dialog_id ? `Chat2Desk has no dialog ${props.dialog_id}` : 'Chat2Desk has no dialog for this phone',
    };
  }
  const dialogId = target.dialog.id;
  try {
    await run.directory.assignOperator(dialogId, operatorId, isYes(props.force));
  } catch (error) {
    if (error instanceof Chat2DeskError && !error.transient && error.kind !== 'auth') {
      throw new RobotFailure(`Chat2Desk refused to assign operator ${operatorId} to dialog ${dialogId}: ${error.apiMessage}`);
    }
    throw error;
  }
  return {
    returnValues: { status: 'ok', error: '', dialog_id: dialogId, operator_id: operatorId },
    logMessage: `Chat2Desk dialog ${dialogId} assigned to operator ${operatorId}`,
  };
}

async function operatorOfUser(run: RobotRun, userId: number): Promise<number> {
  const operator = await operatorForBitrixUser(run, userId).catch((error: unknown) => {
    if (error instanceof Bitrix24Error && error.accessDenied)
      throw new RobotFailure(`Bitrix24 refused to show user ${userId} (${error.code}), so no Chat2Desk operator could be found for it`);
    throw error;
  });
  if (operator) return operator.id;
  const mappedId = Object.entries(run.settings.operatorMap).find(([, user]) => user === userId)?.[0];
  if (mappedId !== undefined) {
    throw new RobotFailure(`the app settings (operatorMap) map Bitrix24 user ${userId} to Chat2Desk operator ${mappedId}, which this Chat2Desk account does not have`);
  }
  throw new RobotFailure(`Bitrix24 user ${userId} has no Chat2Desk operator: map it in the app settings (operatorMap) or give the operator the same e-mail in both systems`);
}
