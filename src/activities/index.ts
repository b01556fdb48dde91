import { ACTIVITY_CODE_SUFFIX, type Activity } from './activity.js';
import { assignOperator } from './assign-operator.js';
import { findDialogs } from './find-dialogs.js';
import { logDialog } from './log-dialog.js';
import { sendMessage } from './send-message.js';
import { tagDialog } from './tag-dialog.js';

/** Every robot the app registers, in the order the designer lists them. One line per robot. */
export const activities: readonly Activity[] = [sendMessage, findDialogs, assignOperator, tagDialog, logDialog];

/** The robots a server knows, passed to whoever needs them (a test can build one with a robot of its own). */
export class RobotRegistry {
  constructor(readonly all: readonly Activity[] = activities) {}

  /** Finds a robot by the code Bitrix24 called it with: the robot's own or its business-process twin's. */
  find(code: string): Activity | undefined {
    const base = code.endsWith(ACTIVITY_CODE_SUFFIX) ? code.slice(0, -ACTIVITY_CODE_SUFFIX.length) : code;
    return this.all.find((activity) => activity.code === base);
  }
}
