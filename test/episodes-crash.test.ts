import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { startFakeBitrix24 } from './fakes/bitrix24.js';
import { startFakeChat2Desk } from './fakes/chat2desk.js';
import { eventually, freePort, installAndConfigure, stackEnv } from './support/stack.js';

const root = fileURLToPath(new URL('..', import.meta.url));
// node itself with tsx's loader: one process, so SIGKILL really kills the server (as in test/crash.test.ts).
const tsxLoader = pathToFileURL(join(root, 'node_modules', 'tsx', 'dist', 'loader.mjs')).href;

function startChild(env: Record<string, string>): ChildProcess {
  return spawn(process.execPath, ['--import', tsxLoader, join(root, 'src', 'index.ts')], { cwd: root, env: { PATH: process.env.PATH ?? '', ...env }, stdio: 'ignore' });
}

function killHard(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill('SIGKILL');
  });
}

async function healthy(url: string): Promise<boolean> {
  try {
    return (await fetch(`${url}/healthz`)).status === 200;
  } catch {
    return false;
  }
}

describe('a closed episode and a real server process', () => {
  const cleanup: Array<() => Promise<void> | void> = [];
  afterEach(async () => {
    for (const step of cleanup.splice(0).reverse()) await step();
  });

  it('kill -9 between creating the record and pinning the comment: no second record, the comment is pinned after the restart', async () => {
    const b24 = await startFakeBitrix24();
    const c2d = await startFakeChat2Desk();
    const dir = mkdtempSync(join(tmpdir(), 'c2d-b24-episode-crash-'));
    cleanup.push(async () => {
      await Promise.all([b24.close(), c2d.close()]);
      rmSync(dir, { recursive: true, force: true });
    });
    const port = await freePort();
    const env = stackEnv(b24, c2d, port, dir, { LOG_LEVEL: 'info' });
    const url = `http://127.0.0.1:${port}`;
    let child = startChild(env);
    cleanup.push(() => killHard(child));
    await eventually(() => healthy(url), 20_000, 'server up');
    await installAndConfigure({ b24, c2d, server: { url } }, { episodesEnabled: true, defaultCountry: 'RU' });

    // The comment (in a shared batch) is held before Bitrix24 runs it: the lead exists, the comment does not, when the server dies.
    const comment = b24.hold({ rest: 'batch', command: 'crm.timeline.comment.add' });
    cleanup.push(() => comment.release());
    const { client, dialog } = c2d.seedClient({ phone: '79161234567', name: 'Anna', withDialog: 'open' });
    c2d.receiveMessage({ clientId: client.id as number, text: 'Hello' });
    const closed = c2d.closeDialog(dialog!.id as number);
    expect(await c2d.deliverWebhook(closed.closeRequest)).toEqual([200]);
    await comment.arrived;
    expect(b24.crm.leads.size).toBe(1);
    await killHard(child);

    child = startChild(env);
    await eventually(() => healthy(url), 20_000, 'server back');
    const [leadId] = [...b24.crm.leads.keys()];
    const pinned = await eventually(() => b24.timelineComments.find((item) => item.entityType === 'lead' && item.entityId === leadId), 30_000, 'comment after restart');
    expect(pinned.comment).toContain(`#${closed.requestId}`);
    expect(b24.crm.leads.size).toBe(1);
    expect(b24.calls.filter((call) => call.method === 'crm.lead.add')).toHaveLength(1);
    expect(b24.timelineComments).toHaveLength(1);
  });
});
