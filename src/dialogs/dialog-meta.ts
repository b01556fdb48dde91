import { operatorName } from '../activities/operators.js';
import type { Chat2DeskAccess } from '../chat2desk/access.js';
import { Chat2DeskError } from '../chat2desk/errors.js';
import { DialogReadError } from './dialog-reads.js';
import type { DialogViewer } from './scope.js';

/**
 * What the dialog view's write controls choose from: the account's tags, its active operators, its
 * channels with their transports (messengers), and whether the viewer may write at all (a mapped
 * Chat2Desk operator; src/dialogs/viewer.ts requireMappedOperator refuses the writes otherwise).
 */
export interface DialogMetaView {
  tags: Array<{ id: number; label: string }>;
  operators: Array<{ id: number; name: string }>;
  channels: Array<{ id: number; name: string; transports: string[] }>;
  /** The viewer's Chat2Desk operator; null = may read only (the page shows how to get mapped instead of write controls). */
  operatorId: number | null;
}

/** Operators who no longer work (the same rule as the e-mail lookup in src/dialogs/dialog-reads.ts operatorOf). */
const INACTIVE_ROLES = new Set(['deleted', 'disabled']);

/**
 * GET /api/dialogs/meta: everything comes from the account's cached lists (src/chat2desk/directory.ts
 * operators, channels, tags), so opening a tab costs Chat2Desk nothing once they are cached.
 */
export class DialogMeta {
  constructor(private readonly deps: { chat2desk: Chat2DeskAccess }) {}

  async of(viewer: DialogViewer): Promise<DialogMetaView> {
    const connection = await this.deps.chat2desk.connect(viewer.portal);
    if (!connection.usable) throw new DialogReadError(connection.reason, 503);
    const { directory } = connection;
    try {
      const [tags, operators, channels] = await Promise.all([directory.tags(), directory.operators(), directory.channels()]);
      return {
        tags: tags.map((tag) => ({ id: tag.id, label: tag.label })).sort((a, b) => a.label.localeCompare(b.label)),
        operators: operators
          .filter((operator) => !INACTIVE_ROLES.has(operator.role ?? ''))
          .map((operator) => ({ id: operator.id, name: operatorName(operator) }))
          .sort((a, b) => a.name.localeCompare(b.name)),
        channels: channels.map((channel) => ({ id: channel.id, name: channel.name, transports: [...channel.transports] })),
        operatorId: viewer.operatorId ?? null,
      };
    } catch (error) {
      if (error instanceof Chat2DeskError) throw new DialogReadError(`Chat2Desk could not be read: ${error.message}`, 502);
      throw error;
    }
  }
}
