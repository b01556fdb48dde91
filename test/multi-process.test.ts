import { afterEach, describe, expect, it } from 'vitest';
import { PortalStore, PORTAL_LOOKUP_TTL_MS } from '../src/db/portals.js';
import { SecretBox } from '../src/secrets.js';
import { startProcesses, type Processes } from './support/processes.js';
import { APP_SECRET, eventually, installAndConfigure, putSettings } from './support/stack.js';

/** Several server processes on one PostgreSQL database (docs/multi-process.md). */
describe('two server processes on one PostgreSQL database', () => {
  let processes: Processes;
  afterEach(() => processes.close());

  it('settings saved through one process are seen by the other at once (the lookup it keeps is dropped)', async () => {
    processes = await startProcesses(2);
    const [a, b] = processes.servers as [(typeof processes.servers)[0], (typeof processes.servers)[0]];
    const { b24 } = processes;
    await installAndConfigure(processes.via(0));
    // Process B looks the portal up (and keeps it) before A changes it.
    expect((await b.portals.authenticate(b24.memberId, b24.applicationToken))?.settings.episodesEnabled).toBeUndefined();

    const started = Date.now();
    expect((await putSettings(processes.via(0), { episodesEnabled: true })).status).toBe(200);
    await eventually(async () => (await b.portals.authenticate(b24.memberId, b24.applicationToken))?.settings.episodesEnabled === true, 2_000, 'B to see the new setting');
    // The notification did it, not the entry's expiry.
    expect(Date.now() - started).toBeLessThan(PORTAL_LOOKUP_TTL_MS);
    expect((await a.portals.authenticate(b24.memberId, b24.applicationToken))?.settings.episodesEnabled).toBe(true);
  });

  it('a change no notification announced is seen once the entry expires', async () => {
    processes = await startProcesses(2);
    const [a, b] = processes.servers as [(typeof processes.servers)[0], (typeof processes.servers)[0]];
    const { b24 } = processes;
    await installAndConfigure(processes.via(0));
    expect(await b.portals.authenticate(b24.memberId, b24.applicationToken)).toBeDefined();
    // A writer that broadcasts nothing (as if B's listening connection had been down meanwhile).
    const silent = new PortalStore(a.database, new SecretBox(APP_SECRET), { now: () => Date.now() });
    await silent.saveSettings(b24.memberId, { episodesEnabled: true });
    expect((await b.portals.authenticate(b24.memberId, b24.applicationToken))?.settings.episodesEnabled).toBeUndefined();
    await eventually(
      async () => (await b.portals.authenticate(b24.memberId, b24.applicationToken))?.settings.episodesEnabled === true,
      PORTAL_LOOKUP_TTL_MS + 2_000,
      'the entry to expire',
    );
  });
});
