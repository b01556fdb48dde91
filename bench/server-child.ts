/**
 * A server for the benchmarks, in its own process so that its CPU time and heap are its own and it
 * shares no event loop with the fakes or the load (bench/child.ts starts it):
 * `ours` is the real server (startServer, configured from the environment like src/index.ts),
 * `bare` a Hono route that only parses the same body. The parent drives it over the IPC channel:
 * it measures process.cpuUsage(), the heap and the Bitrix24 requests sent between `measure` and
 * `report`. With BENCH_CPU_PROF=<dir>, our server also writes a V8 CPU profile of each measured
 * window there, named `<label>-<n>.cpuprofile` (what `node --cpu-prof` writes, without the start-up
 * and the other rounds).
 */
import { serve } from '@hono/node-server';
import { Hono } from 'hono';
import { mkdirSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { getHeapStatistics } from 'node:v8';
import { parseFormBody } from '../src/bitrix24/form-body.js';
import { loadConfig } from '../src/config.js';
import { createLogger } from '../src/log.js';
import { startServer } from '../src/server.js';

export type ChildCommand = { type: 'idle' } | { type: 'stop-worker' } | { type: 'measure' } | { type: 'report' } | { type: 'close' };
/** What the child measured between `measure` and `report`. */
export interface ChildReport {
  type: 'report';
  cpuMicros: number;
  /** Robot jobs stored and not finished. */
  storedJobs: number;
  /** Requests our server sent to Bitrix24 (a batch counts once). */
  bitrix24Requests: number;
  /** Heap after a collection at `measure`, and the largest heap seen since (V8's used heap, sampled every 50 ms). */
  heapBefore: number;
  heapPeak: number;
}
export type ChildReply = { type: 'ready'; url: string } | { type: 'done'; command: ChildCommand['type'] } | ChildReport;

const mode = process.argv[2];
const label = process.argv[3] ?? mode;
const send = (reply: ChildReply) => process.send?.(reply);

async function startBare(): Promise<{ url: string; close(): Promise<void> }> {
  const bare = new Hono().post('/bitrix24/robot', async (c) => {
    parseFormBody(await c.req.text());
    return c.json({ status: 'accepted', job: 0 });
  });
  const server = await new Promise<ReturnType<typeof serve>>((resolve) => {
    const started = serve({ fetch: bare.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(started));
  });
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

const config = loadConfig();
const ours = mode === 'ours' ? await startServer(config, createLogger(config.logLevel), { hostname: '127.0.0.1' }) : undefined;
const server = ours ?? (await startBare());
let cpuAtStart = process.cpuUsage();
const profileDir = mode === 'ours' ? process.env.BENCH_CPU_PROF : undefined;
const profiler = profileDir ? new Session() : undefined;
profiler?.connect();
let window = 0;
let measuring = false;
let heapBefore = 0;
let heapPeak = 0;
const heapSampler = setInterval(() => {
  heapPeak = Math.max(heapPeak, getHeapStatistics().used_heap_size);
}, 50);
heapSampler.unref();
const bitrix24Requests = () => [...(ours?.rest.requestsSent.values() ?? [])].reduce((sum, count) => sum + count, 0);
let bitrix24RequestsAtStart = 0;

process.on('message', (command: ChildCommand) => {
  const run = async () => {
    switch (command.type) {
      case 'idle':
        await ours?.idle();
        break;
      case 'stop-worker':
        await ours?.worker.stop();
        break;
      case 'measure':
        if (profiler) {
          await profiler.post('Profiler.enable');
          await profiler.post('Profiler.start');
          measuring = true;
        }
        (globalThis as { gc?: () => void }).gc?.();
        heapBefore = heapPeak = getHeapStatistics().used_heap_size;
        bitrix24RequestsAtStart = bitrix24Requests();
        cpuAtStart = process.cpuUsage();
        break;
      case 'report': {
        const cpu = process.cpuUsage(cpuAtStart);
        if (profiler && profileDir && measuring) {
          measuring = false;
          const { profile } = await profiler.post('Profiler.stop');
          mkdirSync(profileDir, { recursive: true });
          writeFileSync(join(profileDir, `${label}-${++window}.cpuprofile`), JSON.stringify(profile));
        }
        const depth = await ours?.jobs.countByState();
        send({
          type: 'report',
          cpuMicros: cpu.user + cpu.system,
          storedJobs: (depth?.confirming ?? 0) + (depth?.queued ?? 0) + (depth?.reporting ?? 0),
          bitrix24Requests: bitrix24Requests() - bitrix24RequestsAtStart,
          heapBefore,
          heapPeak,
        });
        return;
      }
      case 'close':
        await server.close();
        // process.exit still writes a --cpu-prof profile.
        process.exit(0);
    }
    send({ type: 'done', command: command.type });
  };
  run().catch((error: unknown) => {
    console.error(error);
    process.exit(1);
  });
});
// A bench that stopped without closing us (an error, Ctrl-C) must not leave a server running.
process.on('disconnect', () => process.exit(0));
send({ type: 'ready', url: server.url });
