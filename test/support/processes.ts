import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { loadConfig } from '../../src/config.js';
import type { LiveTimers } from '../../src/live/stream.js';
import { createLogger } from '../../src/log.js';
import { type RunningServer, startServer } from '../../src/server.js';
import { startFakeBitrix24, type FakeBitrix24 } from '../fakes/bitrix24.js';
import { startFakeChat2Desk, type FakeChat2Desk } from '../fakes/chat2desk.js';
import { emptyDatabase } from './databases.js';
import { freePort, stackEnv } from './stack.js';

/**
 * Several server processes (startServer instances in this test process, each with its own pool,
 * broadcast listener and port) on one new PostgreSQL database, behind one public address: the
 * first process's (the fakes call it, as a load balancer would pick one). Each `servers[i]` is
 * reachable on its own URL, so a test chooses which process a request reaches.
 */
export interface Processes {
  b24: FakeBitrix24;
  c2d: FakeChat2Desk;
  servers: RunningServer[];
  /** What each process logged. */
  logs: string[][];
  /** The set-up helpers' view (test/support/stack.ts install, installAndConfigure) through process `i`. */
  via(i: number): { b24: FakeBitrix24; c2d: FakeChat2Desk; server: RunningServer };
  close(): Promise<void>;
}

export async function startProcesses(count: number, options: { env?: Record<string, string>; liveTimers?: LiveTimers } = {}): Promise<Processes> {
  const b24 = await startFakeBitrix24();
  const c2d = await startFakeChat2Desk();
  const database = await emptyDatabase();
  const dir = mkdtempSync(join(tmpdir(), 'c2d-b24-procs-'));
  const ports = [];
  for (let i = 0; i < count; i++) ports.push(await freePort());
  const publicUrl = `http://127.0.0.1:${ports[0]}`;
  const servers: RunningServer[] = [];
  const logs: string[][] = [];
  for (const port of ports) {
    const config = loadConfig(stackEnv(b24, c2d, port, dir, { DATABASE_URL: database.url, PUBLIC_URL: publicUrl, LOG_LEVEL: 'info', ...options.env }));
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk, _encoding, done) {
        lines.push(String(chunk));
        done();
      },
    });
    logs.push(lines);
    servers.push(await startServer(config, createLogger(config.logLevel, sink), { hostname: '127.0.0.1', reportLingerMs: 50, liveTimers: options.liveTimers }));
  }
  return {
    b24,
    c2d,
    servers,
    logs,
    via: (i) => ({ b24, c2d, server: servers[i]! }),
    async close() {
      for (const server of servers) await server.close().catch(() => undefined);
      await Promise.all([b24.close(), c2d.close()]);
      await database.drop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
