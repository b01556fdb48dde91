import type { Chat2DeskOperator } from '../chat2desk/client.js';
import type { RobotRun } from './activity.js';

/** Bitrix24 passes a user property as `user_5` (or a bare id from some editors). */
export function parseBitrixUser(value: string): number | undefined {
  const match = /^(?:user_)?(\d+)$/.exec(value.trim());
  return match ? Number(match[1]) : undefined;
}

export function operatorName(operator: Chat2DeskOperator | undefined): string {
  if (!operator) return '';
  return [operator.first_name, operator.last_name].filter(Boolean).join(' ') || operator.email || `#${operator.id}`;
}

/**
 * The Bitrix24 user responsible for a Chat2Desk operator: the explicit `operatorMap` first, then
 * a Bitrix24 user with the operator's e-mail.
 */
export async function bitrixUserForOperator(run: RobotRun, operatorId: number): Promise<number | undefined> {
  const mapped = run.settings.operatorMap[String(operatorId)];
  if (mapped !== undefined) return mapped;
  const operator = (await run.directory.operators()).find((item) => item.id === operatorId);
  const email = operator?.email?.trim();
  if (!email) return undefined;
  const user = await run.users.byEmail(email);
  return user ? Number(user.ID) : undefined;
}

/** The Chat2Desk operator for a Bitrix24 user: the explicit map first, then by e-mail. */
export async function operatorForBitrixUser(run: Pick<RobotRun, 'settings' | 'directory' | 'users'>, userId: number): Promise<Chat2DeskOperator | undefined> {
  const operators = await run.directory.operators();
  const mappedId = Object.entries(run.settings.operatorMap).find(([, user]) => user === userId)?.[0];
  if (mappedId !== undefined) return operators.find((item) => item.id === Number(mappedId));
  const user = await run.users.byId(userId);
  const email = user?.EMAIL?.trim().toLowerCase();
  if (!email) return undefined;
  return operators.find((item) => item.email?.trim().toLowerCase() === email && !isInactive(item));
}

function isInactive(operator: Chat2DeskOperator): boolean {
  return operator.role === 'deleted' || operator.role === 'disabled';
}
