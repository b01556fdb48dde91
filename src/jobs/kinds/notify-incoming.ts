import * as v from 'valibot';
import type { SharedBatches } from '../../episodes/shared-batches.js';
import { bitrixUserForOperator } from '../../activities/operators.js';
import { Bitrix24Error } from '../../bitrix24/errors.js';
import { dialogUrl } from '../../chat2desk/links.js';
import { episodeRunFor } from '../../episodes/run.js';
import type { Portal } from '../../db/portals.js';
import { appDialogUrl, type IncomingNotice, renderIncomingNotice } from '../../notifications/message.js';
import type { PortalSettings } from '../../portal-settings.js';
import type { PortalLanguages } from '../../notifications/portal-language.js';
import { RobotFailure } from '../../run-failure.js';
import type { JobKind } from '../kinds.js';
import type { RunContextDeps } from '../run-context.js';

export const NOTIFY_INCOMING_KIND = 'notify_incoming';

/** A notification about messages an hour old is noise: given up after that. */
export const NOTIFY_INCOMING_DEADLINE_MS = 3600_000;

/** One pending notification per dialog (dedup while pending): messages arriving meanwhile join it. */
export const notifyDedupKey = (dialogId: number) => `notify:${dialogId}`;

const id = (name: string) => v.pipe(v.number(`${name} must be a number`), v.integer(`${name} must be a whole number`), v.minValue(1, `${name} must be positive`));

const notifyIncomingInput = v.object({
  dialogId: id('dialogId'),
  requestId: v.nullable(id('requestId')),
  /** The client's name from the first message's delivery (plain text). */
  clientName: v.pipe(v.string('clientName must be text'), v.maxLength(200, 'clientName is too long')),
  /** The first message this notification is about: it counts the incoming messages from here on. */
  fromMessageId: id('fromMessageId'),
});

export type NotifyIncomingInput = v.InferOutput<typeof notifyIncomingInput>;

/** Bitrix24's scope for notifications (docs/protocols.md B17). */
const IM_SCOPE = 'im';

/**
 * Tells the Bitrix24 user mapped to the dialog's operator (operatorMap, else the same e-mail) about
 * the client's new messages, once per group: "3 new messages from Anna" with a link to the dialog.
 * The notification is tagged with the job, and Bitrix24 keeps one notification per tag, so a retry
 * after a lost answer replaces it rather than adding a second one (docs/protocols.md B17).
 */
export function notifyIncomingKind(deps: RunContextDeps & { languages: PortalLanguages; batches: SharedBatches }): JobKind<NotifyIncomingInput> {
  return {
    name: NOTIFY_INCOMING_KIND,
    input: notifyIncomingInput,
    needsConfirmation: false,
    dedup: 'while_pending',
    after: 'done',
    async prepare(job, input, log) {
      const run = await episodeRunFor(deps, job, log);
      return {
        async run() {
          const nobody = (why: string) => {
            const summary = `nobody notified: ${why}`;
            return { returnValues: { status: 'skipped', dialogId: input.dialogId, summary }, logMessage: summary };
          };
          // Turned off after the messages came: nothing is sent.
          if (!run.settings.notifyIncoming) return nobody('notifications of incoming messages are turned off');
          const dialog = await run.directory.dialog(input.dialogId);
          if (dialog.operatorId === null) return nobody(`dialog ${input.dialogId} has no operator`);
          const userId = await bitrixUserForOperator(run, dialog.operatorId);
          if (userId === undefined) return nobody(`Chat2Desk operator ${dialog.operatorId} is not mapped to a Bitrix24 user (map them on the Operators settings)`);
          const requestId = input.requestId ?? dialog.lastRequestId;
          const messages = requestId !== null ? await run.chat2desk.requestMessages(requestId) : [];
          // GET /requests/{id}/messages types: in | out | system (docs/protocols.md C2).
          const count = Math.max(1, messages.filter((message) => message.type === 'in' && message.id >= input.fromMessageId).length);
          const text = renderIncomingNotice(
            { count, client: input.clientName || `#${dialog.clientId ?? input.dialogId}`, ...(await linkOf(run.settings, run.portal, input.dialogId)) },
            await deps.languages.of(run.portal.memberId),
          );
          try {
            await run.bitrix24.call('im.notify.system.add', { USER_ID: userId, MESSAGE: text, TAG: `c2d_notify_${job.publicId}` }, { idempotent: true });
          } catch (error) {
            if (error instanceof Bitrix24Error && error.code === 'insufficient_scope') {
              throw new RobotFailure(
                `the app lacks the Bitrix24 scope "${IM_SCOPE}" needed for notifications: add "${IM_SCOPE}" to the app's permissions in Bitrix24 (Developer resources → the app), then update or reinstall it`,
              );
            }
            if (error instanceof Bitrix24Error && !error.refusedForLoad && !error.expiredToken && error.httpStatus < 500) {
              throw new RobotFailure(`Bitrix24 refused the notification: ${error.code || 'error'}${error.description ? ` (${error.description})` : ''}`);
            }
            throw error;
          }
          const summary = `notified Bitrix24 user ${userId} of ${count} new message${count === 1 ? '' : 's'} in dialog ${input.dialogId}`;
          return { returnValues: { status: 'done', dialogId: input.dialogId, userId, messages: count, summary }, logMessage: summary };
        },
      };
    },
    failed: (_job, message) => ({ returnValues: { status: 'failed', error: message }, logMessage: message }),
  };

  /**
   * Where the notification's link goes (settings `openLinksIn`): Chat2Desk's web app, or our app page
   * in the portal with the dialog (docs/protocols.md B19). Without the app's ID it stays Chat2Desk's.
   */
  async function linkOf(settings: PortalSettings, portal: Portal, dialogId: number): Promise<Pick<IncomingNotice, 'dialogUrl' | 'opensIn'>> {
    const appId = settings.openLinksIn === 'app' ? await deps.languages.appIdOf(portal.memberId) : undefined;
    if (appId !== undefined) return { dialogUrl: appDialogUrl(portal.domain, appId, dialogId), opensIn: 'app' };
    return { dialogUrl: dialogUrl(settings.chat2deskApiUrl, dialogId), opensIn: 'chat2desk' };
  }
}
