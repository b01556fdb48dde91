import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { BlockList, isIP } from 'node:net';
import { Agent, request } from 'undici';

/**
 * Fetching a file at an address someone outside gave us (a Chat2Desk attachment link): the address
 * may point anywhere, and the bytes are then served publicly, so it must not reach our own network
 * (loopback, private, link-local such as the cloud metadata address 169.254.169.254, unique-local,
 * multicast). Every hop is checked (redirects followed by hand, a few at most), the host is checked
 * on the address actually connected to (a name resolved again between a check and the connect cannot
 * slip through), the body is read up to a byte cap and the whole exchange has a time limit.
 */
export interface OutsideFetchOptions {
  maxBytes: number;
  timeoutMs?: number;
  maxRedirects?: number;
  /**
   * Host names (exactly as in the URL, no port) fetched over http and on any address: the test
   * stack's loopback fakes, or a local setup (OUTSIDE_FETCH_ALLOW_HOSTS). Empty in production.
   */
  allowHosts?: readonly string[];
}

export type OutsideFile = { kind: 'file'; bytes: Buffer; contentType: string } | { kind: 'refused'; reason: string } | { kind: 'gone'; status: number };

/** The fetch failed in a way that may pass (network, timeout, 5xx): try again later. */
export class OutsideFetchError extends Error {
  override name = 'OutsideFetchError';
}

const BLOCKED = new BlockList();
for (const [network, prefix] of [
  ['0.0.0.0', 8],
  ['10.0.0.0', 8],
  ['100.64.0.0', 10],
  ['127.0.0.0', 8],
  ['169.254.0.0', 16],
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.0.2.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['198.51.100.0', 24],
  ['203.0.113.0', 24],
  ['224.0.0.0', 4],
  ['240.0.0.0', 4],
] as const)
  BLOCKED.addSubnet(network, prefix, 'ipv4');
for (const [network, prefix] of [
  ['::', 128],
  ['::1', 128],
  // IPv4-compatible (::a.b.c.d, deprecated) and IPv4-translated (::ffff:0:a.b.c.d) forms: whatever
  // a stack makes of them, they name no public IPv6 host.
  ['::', 96],
  ['::ffff:0:0:0', 96],
  // IPv4-mapped forms (::ffff:a.b.c.d) are checked against the IPv4 rules by BlockList itself; the
  // NAT64 prefixes could carry any IPv4 address.
  ['64:ff9b::', 96],
  ['64:ff9b:1::', 48],
  ['100::', 64],
  ['2001:db8::', 32],
  ['2002::', 16],
  ['fc00::', 7],
  ['fe80::', 10],
  ['fec0::', 10],
  ['ff00::', 8],
] as const)
  BLOCKED.addSubnet(network, prefix, 'ipv6');

/** Whether an address is on the public internet (not loopback, private, link-local, unique-local, multicast, reserved). */
export function isPublicAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 0) return false;
  return !BLOCKED.check(address, family === 4 ? 'ipv4' : 'ipv6');
}

const PRIVATE_ADDRESS = 'EOUTSIDE_PRIVATE_ADDRESS';

type LookupCallback = (error: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;

/** The connect-time lookup: every address a name resolves to must be public. */
function publicLookup(hostname: string, options: { all?: boolean; family?: number }, callback: LookupCallback): void {
  dnsLookup(hostname, { family: options.family ?? 0, all: true }, (error, addresses) => {
    if (error) return callback(error, []);
    const inside = addresses.find((item) => !isPublicAddress(item.address));
    if (inside || addresses.length === 0) {
      const refusal: NodeJS.ErrnoException = new Error(`${hostname} resolves to ${inside?.address ?? 'nothing'}, an address outside the public internet`);
      refusal.code = PRIVATE_ADDRESS;
      return callback(refusal, []);
    }
    if (options.all) return callback(null, addresses);
    callback(null, addresses[0]!.address, addresses[0]!.family);
  });
}

const guarded = new Agent({ connect: { lookup: publicLookup as never }, keepAliveTimeout: 5_000 });
const open = new Agent({ keepAliveTimeout: 5_000 });

function refusedByCode(error: unknown): string | undefined {
  for (let cause = error, depth = 0; cause && typeof cause === 'object' && depth < 5; cause = (cause as { cause?: unknown }).cause, depth++) {
    if ((cause as { code?: unknown }).code === PRIVATE_ADDRESS) return (cause as Error).message;
  }
  return undefined;
}

export function outsideFetcher(options: OutsideFetchOptions): (link: string) => Promise<OutsideFile> {
  const allowHosts = new Set((options.allowHosts ?? []).map((host) => host.toLowerCase()));
  const maxRedirects = options.maxRedirects ?? 3;
  const timeoutMs = options.timeoutMs ?? 60_000;

  return async (link) => {
    const signal = AbortSignal.timeout(timeoutMs);
    let url: URL;
    try {
      url = new URL(link);
    } catch {
      return { kind: 'refused', reason: 'not a valid address' };
    }
    for (let hop = 0; ; hop++) {
      const host = url.hostname.replace(/^\[|\]$/g, '').toLowerCase();
      const allowed = allowHosts.has(host);
      if (url.protocol !== 'https:' && !(url.protocol === 'http:' && allowed)) return { kind: 'refused', reason: `${url.protocol} links are not fetched, only https` };
      if (url.username || url.password) return { kind: 'refused', reason: 'links with credentials are not fetched' };
      if (!allowed && isIP(host) !== 0 && !isPublicAddress(host)) return { kind: 'refused', reason: `${host} is outside the public internet` };
      let answer: Awaited<ReturnType<typeof request>>;
      try {
        answer = await request(url, { method: 'GET', dispatcher: allowed ? open : guarded, signal, headers: { 'user-agent': 'chat2desk-bitrix24' } });
      } catch (error) {
        const refused = refusedByCode(error);
        if (refused) return { kind: 'refused', reason: refused };
        throw new OutsideFetchError(error instanceof Error ? error.message : String(error));
      }
      // Destroying the body to stop reading emits an error nobody else listens for.
      answer.body.on('error', () => undefined);
      const { statusCode } = answer;
      if (statusCode >= 300 && statusCode < 400) {
        await answer.body.dump();
        const location = answer.headers.location;
        if (typeof location !== 'string') return { kind: 'gone', status: statusCode };
        if (hop >= maxRedirects) return { kind: 'refused', reason: `more than ${maxRedirects} redirects` };
        url = new URL(location, url);
        continue;
      }
      if (statusCode < 200 || statusCode >= 300) {
        await answer.body.dump();
        if (statusCode === 404 || statusCode === 410) return { kind: 'gone', status: statusCode };
        throw new OutsideFetchError(`HTTP ${statusCode}`);
      }
      const contentType = String(answer.headers['content-type'] ?? '');
      if (Number(answer.headers['content-length'] ?? 0) > options.maxBytes) {
        answer.body.destroy();
        return { kind: 'refused', reason: `larger than ${options.maxBytes} bytes` };
      }
      const chunks: Buffer[] = [];
      let total = 0;
      try {
        for await (const chunk of answer.body) {
          total += (chunk as Buffer).byteLength;
          if (total > options.maxBytes) {
            answer.body.destroy();
            return { kind: 'refused', reason: `larger than ${options.maxBytes} bytes` };
          }
          chunks.push(chunk as Buffer);
        }
      } catch (error) {
        throw new OutsideFetchError(error instanceof Error ? error.message : String(error));
      }
      return { kind: 'file', bytes: Buffer.concat(chunks), contentType };
    }
  };
}
