import { describe, expect, it } from 'vitest';
import { installAndConfigure, startStack } from './support/stack.js';

/** Log lines at warn or above (pino's level 40+). */
const complaints = (logs: string[]) =>
  logs
    .map((line) => JSON.parse(line) as { level: number; msg: string; err?: string })
    .filter((entry) => entry.level >= 40)
    .map((entry) => `${entry.msg}${entry.err ? `: ${entry.err}` : ''}`);

describe('shutting the server down', () => {
  it('lets the periodic passes it started at boot finish before it closes the database', async () => {
    const stack = await startStack();
    try {
      await installAndConfigure(stack);
      // At start every pass runs once at once (maintenance, the uninstall checks): close while they may still run.
      await stack.restart();
      await stack.server.close();
      expect(complaints(stack.logs)).toEqual([]);
    } finally {
      await stack.close();
    }
  });
});
