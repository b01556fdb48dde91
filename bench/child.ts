/**
 * Our server (or the bare baseline route) in a child process of its own (bench/server-child.ts), as
 * in production where it shares no event loop with Bitrix24, Chat2Desk or the callers: the fakes and
 * the load generator stay in the bench process. The child is driven over its IPC channel.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startFakeBitrix24, type FakeBitrix24, type FakeBitrix24Options } from '../test/fakes/bitrix24.js';
import { startFakeChat2Desk, type FakeChat2Desk, type FakeChat2DeskOptions } from '../test/fakes/chat2desk.js';
import { freePort, installAndConfigure, stackEnv } from '../test/support/stack.js';
import type { ChildCommand, ChildReport, ChildReply } from './server-child.js';

export interface ServerChild {
  url: string;
  /** The child's process id (its CPU time is also in /proc/<pid>/stat). */
  pid: number;
  /** `kill -9`: the child dies mid-work, as a crashed machine would, leaving its leases behind. */
  kill(): void;
  command(type: Exclude<ChildCommand['type'], 'report'>): Promise<void>;
  /** What the child measured since its last `measure`: its CPU time, heap, Bitrix24 requests, stored jobs. */
  report(): Promise<ChildReport>;
}

/** BENCH_CPU_PROF=<dir>: our server child writes a V8 CPU profile of each measured window there, named after `label`. */
export async function startChild(mode: 'ours' | 'bare', env: Record<string, string>, label: string = mode): Promise<ServerChild> {
  const child: ChildProcess = fork(new URL('./server-child.ts', import.meta.url).pathname, [mode, label], {
    env: { ...process.env, ...env },
    // --expose-gc: the heap figure starts from a collected heap.
    execArgv: ['--import', 'tsx', '--expose-gc'],
    // Logs go where production sends them (a pipe or file), here /dev/null: writing them is part of the cost.
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
  });
  const next = () =>
    new Promise<ChildReply>((resolve, reject) => {
      const onExit = (code: number | null) => reject(new Error(`the ${mode} server child exited (${code})`));
      child.once('exit', onExit);
      child.once('message', (reply: ChildReply) => {
        child.off('exit', onExit);
        resolve(reply);
      });
    });
  const ready = await next();
  if (ready.type !== 'ready') throw new Error(`the ${mode} server child did not start`);
  return {
    url: ready.url,
    pid: child.pid ?? 0,
    kill() {
      child.kill('SIGKILL');
    },
    async command(type) {
      const answered = type === 'close' ? new Promise((resolve) => child.once('exit', resolve)) : next();
      child.send({ type });
      await answered;
    },
    async report() {
      const reply = next();
      child.send({ type: 'report' });
      const answer = await reply;
      if (answer.type !== 'report') throw new Error(`the ${mode} server child answered ${answer.type}`);
      return answer;
    },
  };
}

/** Both fakes in this process, our server in a child, the portal installed and Chat2Desk connected. */
export interface ChildStack {
  b24: FakeBitrix24;
  c2d: FakeChat2Desk;
  server: ServerChild;
  /** The server's SQLite file, for reading what it stored once it has stopped. */
  databaseFile: string;
  /** Stops the server child (if still running) and the fakes, and removes the data directory. */
  close(): Promise<void>;
}

export async function startChildStack(options: { b24?: FakeBitrix24Options; c2d?: FakeChat2DeskOptions; env: Record<string, string>; label: string }): Promise<ChildStack> {
  const dir = mkdtempSync(join(tmpdir(), 'c2d-b24-bench-'));
  const b24 = await startFakeBitrix24(options.b24);
  const c2d = await startFakeChat2Desk(options.c2d);
  const env = stackEnv(b24, c2d, await freePort(), dir, options.env);
  const server = await startChild('ours', env, options.label);
  let running = true;
  const stack: ChildStack = {
    b24,
    c2d,
    server: {
      ...server,
      kill() {
        running = false;
        server.kill();
      },
      async command(type) {
        if (type === 'close') running = false;
        await server.command(type);
      },
    },
    databaseFile: join(dir, 'app.db'),
    async close() {
      if (running) await stack.server.command('close');
      await Promise.all([b24.close(), c2d.close()]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
  try {
    await installAndConfigure({ b24, c2d, server: { url: server.url, idle: () => server.command('idle') } });
  } catch (error) {
    await stack.close();
    throw error;
  }
  return stack;
}

/** The fakes' limits of the pipeline benchmarks: Chat2Desk's assumed account limit and Bitrix24's standard plan (docs/protocols.md B4). */
export const STANDARD_LIMITS = { c2d: { requests: 100, perMs: 1_000 }, b24: { drainPerSecond: 2, burst: 50 } } as const;

/**
 * The options of a stack behind fakes at STANDARD_LIMITS, the server told Bitrix24's plan and 94% of
 * Chat2Desk's limit as its known rate.
 */
export function limitedStackOptions(): { b24: FakeBitrix24Options; c2d: FakeChat2DeskOptions; env: Record<string, string> } {
  const { c2d, b24 } = STANDARD_LIMITS;
  const knownRatePerMinute = Math.floor((c2d.requests * 60_000 * 0.94) / c2d.perMs);
  return {
    b24: { rateLimit: b24 },
    c2d: { rateLimit: c2d },
    env: {
      LOG_LEVEL: 'silent',
      B24_RATE_PER_SECOND: String(b24.drainPerSecond),
      B24_RATE_BURST: String(b24.burst),
      CHAT2DESK_REQUESTS_PER_MINUTE: String(knownRatePerMinute),
      CHAT2DESK_MAX_REQUESTS_PER_MINUTE: String(knownRatePerMinute),
      CHAT2DESK_CONCURRENCY: '8',
    },
  };
}

/** A child stack behind fakes at STANDARD_LIMITS (the episodes and Open Channels benchmarks). */
export function startLimitedChildStack(label: string): Promise<ChildStack> {
  return startChildStack({ label, ...limitedStackOptions() });
}

/**
 * Several server children on one database, as behind a load balancer (the load generator spreads
 * requests over `urls` itself), both fakes in this process, the portal installed and Chat2Desk
 * connected through the first. Without `databaseUrl`, one child on a SQLite file.
 */
export interface ClusterStack {
  b24: FakeBitrix24;
  c2d: FakeChat2Desk;
  servers: ServerChild[];
  urls: string[];
  /** Stops the children still running (not those killed) and the fakes, and removes the data directory. */
  close(): Promise<void>;
}

export async function startClusterStack(options: {
  processes: number;
  databaseUrl?: string;
  b24?: FakeBitrix24Options;
  c2d?: FakeChat2DeskOptions;
  env: Record<string, string>;
  label: string;
}): Promise<ClusterStack> {
  if (options.databaseUrl === undefined && options.processes !== 1) throw new Error('a SQLite file is held by one process');
  const dir = mkdtempSync(join(tmpdir(), 'c2d-b24-bench-'));
  const b24 = await startFakeBitrix24(options.b24);
  const c2d = await startFakeChat2Desk(options.c2d);
  const ports = await Promise.all(Array.from({ length: options.processes }, () => freePort()));
  const servers: ServerChild[] = [];
  const alive = new Set<ServerChild>();
  const stack: ClusterStack = {
    b24,
    c2d,
    servers,
    urls: [],
    async close() {
      await Promise.all([...alive].map((server) => server.command('close')));
      await Promise.all([b24.close(), c2d.close()]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
  try {
    for (const [i, port] of ports.entries()) {
      const env = stackEnv(b24, c2d, port, dir, {
        ...options.env,
        // Every process answers for the one public address (the load balancer's).
        PUBLIC_URL: `http://127.0.0.1:${ports[0]}`,
        ...(options.databaseUrl ? { DATABASE_URL: options.databaseUrl } : {}),
      });
      const server = await startChild('ours', env, `${options.label}-${i + 1}`);
      alive.add(server);
      servers.push({
        ...server,
        kill() {
          alive.delete(server);
          server.kill();
        },
      });
      stack.urls.push(server.url);
    }
    const idle = () => Promise.all(servers.map((server) => server.command('idle'))).then(() => undefined);
    await installAndConfigure({ b24, c2d, server: { url: stack.urls[0]!, idle } });
  } catch (error) {
    await stack.close();
    throw error;
  }
  return stack;
}
