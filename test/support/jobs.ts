import type { NewJob } from '../../src/db/jobs.js';

/** A robot job as a store-level test enqueues it: no portal behind it, so no confirmation. */
export function robotJob(memberId: string, eventToken: string, deadlineAt: number): NewJob {
  return {
    kind: 'robot',
    memberId,
    input: {},
    dedupKey: eventToken,
    robot: { eventToken, robotCode: 'c2d_send_message', documentId: ['crm', 'CCrmDocumentDeal', 'DEAL_1'] },
    deadlineAt,
    awaitsConfirmation: false, // the queue itself is under test here; confirmation is covered in forgery.test.ts
  };
}
