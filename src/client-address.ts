import { getConnInfo } from '@hono/node-server/conninfo';
import type { Context } from 'hono';
import { BlockList, isIP } from 'node:net';

/**
 * Who sent a request, for per-address limits (install attempts, src/bitrix24/install.ts). The TCP
 * peer, unless the peer is one of our own reverse proxies (TRUSTED_PROXIES): then the right-most
 * address of X-Forwarded-For that is not a trusted proxy. Every hop appends the address it saw, so
 * the entries left of the first untrusted one were written by the sender and prove nothing.
 */
export class ClientAddresses {
  readonly #trusted = new BlockList();
  readonly #any: boolean;

  /** `proxies`: IP addresses and CIDR ranges (IPv4 or IPv6), as checked by `parseTrustedProxy`. */
  constructor(proxies: string[]) {
    for (const proxy of proxies) {
      const range = parseTrustedProxy(proxy);
      if (!range) throw new Error(`not an IP address or CIDR range: ${proxy}`);
      if (range.prefix === undefined) this.#trusted.addAddress(range.address, range.family);
      else this.#trusted.addSubnet(range.address, range.prefix, range.family);
    }
    this.#any = proxies.length > 0;
  }

  /** The client's address from the TCP peer and the X-Forwarded-For header (all its lines, comma-joined). */
  resolve(peer: string | undefined, forwardedFor: string | undefined): string {
    const direct = peer ? unmapped(peer) : 'unknown';
    if (!this.#any || !forwardedFor || !this.#isTrusted(direct)) return direct;
    let client = direct;
    const hops = forwardedFor.split(',').map((hop) => unmapped(hop.trim()));
    for (let i = hops.length - 1; i >= 0; i--) {
      const hop = hops[i]!;
      // Something that is not an address was not written by a proxy of ours: stop at the last hop we trust.
      if (!isIP(hop)) return client;
      client = hop;
      if (!this.#isTrusted(hop)) return hop;
    }
    return client;
  }

  /** The address of the request `c`: its TCP peer, or as forwarded by a trusted proxy. */
  of(c: Context): string {
    return this.resolve(getConnInfo(c).remote.address, c.req.header('x-forwarded-for'));
  }

  #isTrusted(address: string): boolean {
    const family = isIP(address);
    if (family === 0) return false;
    return this.#trusted.check(address, family === 6 ? 'ipv6' : 'ipv4');
  }
}

/** An IPv4 peer on a dual-stack socket reads `::ffff:10.0.0.1`; ranges are written as `10.0.0.0/8`. */
function unmapped(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return mapped ? mapped[1]! : address;
}

/** `10.0.0.5`, `10.0.0.0/8`, `fd00::/8`: the address, its family and prefix length; undefined when it is neither. */
export function parseTrustedProxy(text: string): { address: string; family: 'ipv4' | 'ipv6'; prefix?: number } | undefined {
  const [address, prefixText, ...rest] = text.trim().split('/');
  if (!address || rest.length > 0) return undefined;
  const version = isIP(address);
  if (version === 0) return undefined;
  const family = version === 6 ? 'ipv6' : 'ipv4';
  if (prefixText === undefined) return { address, family };
  if (!/^\d{1,3}$/.test(prefixText)) return undefined;
  const prefix = Number(prefixText);
  if (prefix > (version === 6 ? 128 : 32)) return undefined;
  return { address, family, prefix };
}
