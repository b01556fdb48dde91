import { randomUUID } from 'node:crypto';
import pg from 'pg';
import type { Logger } from '../log.js';

/**
 * What one server process tells every process sharing its database: a job was stored, a portal's
 * row changed, a dialog got a message an open page should show (docs/multi-process.md). A topic is
 * a short name of ours; a payload is a short string (PostgreSQL caps a notification at 8000 bytes).
 * Delivery is best effort and at most once per process: a listener must treat a message as a hint
 * to look again (the database is the truth), never as the only record of a change.
 */
export interface Broadcast {
  /** Runs this process's handlers at once, then tells the other processes. */
  publish(topic: string, payload: string): Promise<void>;
  /** Calls `handler` for each message of `topic`, from this process or another; returns the unsubscribe. */
  subscribe(topic: string, handler: (payload: string) => void): () => void;
  close(): Promise<void>;
}

type Handlers = Map<string, Set<(payload: string) => void>>;

function subscribeTo(handlers: Handlers, topic: string, handler: (payload: string) => void): () => void {
  const set = handlers.get(topic) ?? new Set();
  set.add(handler);
  handlers.set(topic, set);
  return () => {
    set.delete(handler);
    if (set.size === 0) handlers.delete(topic);
  };
}

function deliver(handlers: Handlers, topic: string, payload: string, log?: Logger): void {
  for (const handler of handlers.get(topic) ?? []) {
    try {
      handler(payload);
    } catch (error) {
      log?.error({ err: error instanceof Error ? error.message : String(error), topic }, 'a broadcast handler failed');
    }
  }
}

/** One process per SQLite file (its exclusive lock): a broadcast reaches this process only. */
export function localBroadcast(log?: Logger): Broadcast {
  const handlers: Handlers = new Map();
  return {
    async publish(topic, payload) {
      deliver(handlers, topic, payload, log);
    },
    subscribe: (topic, handler) => subscribeTo(handlers, topic, handler),
    async close() {
      handlers.clear();
    },
  };
}

/** One PostgreSQL channel carries every topic: `<sender>|<topic>|<payload>`. */
const CHANNEL = 'c2d_b24_broadcast';
const RECONNECT_MS = 1_000;

/**
 * LISTEN on one connection of its own (a pooled one would be handed to other queries), NOTIFY
 * through the pool. A process skips its own notifications: its handlers already ran at publish.
 * A lost listening connection is opened again after a second; what was published meanwhile is
 * missed, which listeners tolerate (see Broadcast).
 */
export async function postgresBroadcast(url: string, pool: pg.Pool, log: Logger): Promise<Broadcast> {
  const sender = randomUUID();
  const handlers: Handlers = new Map();
  let listener: pg.Client | undefined;
  let closed = false;
  let retry: NodeJS.Timeout | undefined;

  const onNotification = (message: pg.Notification) => {
    if (message.channel !== CHANNEL || !message.payload) return;
    const first = message.payload.indexOf('|');
    const second = message.payload.indexOf('|', first + 1);
    if (first < 0 || second < 0 || message.payload.slice(0, first) === sender) return;
    deliver(handlers, message.payload.slice(first + 1, second), message.payload.slice(second + 1), log);
  };

  const connect = async (): Promise<void> => {
    // keepAlive: a connection dropped without a word (a NAT's idle timeout) ends in an error, and so in a reconnect.
    const client = new pg.Client({ connectionString: url, keepAlive: true });
    client.on('notification', onNotification);
    client.on('error', (error) => {
      log.warn({ err: error.message }, 'the broadcast connection to PostgreSQL was lost; opening another');
      client.removeAllListeners('notification');
      client.end().catch(() => undefined);
      if (listener === client) listener = undefined;
      scheduleReconnect();
    });
    await client.connect();
    await client.query(`listen ${CHANNEL}`);
    if (closed) {
      await client.end();
      return;
    }
    listener = client;
  };

  const scheduleReconnect = () => {
    if (closed || retry) return;
    retry = setTimeout(() => {
      retry = undefined;
      connect().catch((error: Error) => {
        log.warn({ err: error.message }, 'could not listen for broadcasts on PostgreSQL; trying again');
        scheduleReconnect();
      });
    }, RECONNECT_MS);
    retry.unref();
  };

  await connect();
  return {
    async publish(topic, payload) {
      deliver(handlers, topic, payload, log);
      try {
        await pool.query('select pg_notify($1, $2)', [CHANNEL, `${sender}|${topic}|${payload}`]);
      } catch (error) {
        log.warn({ err: error instanceof Error ? error.message : String(error), topic }, 'could not broadcast to the other processes');
      }
    },
    subscribe: (topic, handler) => subscribeTo(handlers, topic, handler),
    async close() {
      closed = true;
      if (retry) clearTimeout(retry);
      handlers.clear();
      const client = listener;
      listener = undefined;
      await client?.end().catch(() => undefined);
    },
  };
}
