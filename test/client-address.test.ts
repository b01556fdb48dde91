import { request } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { ClientAddresses } from '../src/client-address.js';
import { ConfigError, loadConfig } from '../src/config.js';
import { startStack, type Stack } from './support/stack.js';

/** A form POST from a loopback address of our choosing, with an X-Forwarded-For of our choosing. */
function postFrom(localAddress: string, url: string, body: string, forwardedFor?: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded' };
    if (forwardedFor) headers['x-forwarded-for'] = forwardedFor;
    const outgoing = request(url, { method: 'POST', localAddress, headers }, (response) => {
      response.resume();
      response.on('end', () => resolve(response.statusCode ?? 0));
    });
    outgoing.on('error', reject);
    outgoing.end(body);
  });
}

describe('the client address behind reverse proxies (TRUSTED_PROXIES)', () => {
  it('is the TCP peer unless the peer is a trusted proxy, then the right-most untrusted forwarded address', () => {
    const none = new ClientAddresses([]);
    expect(none.resolve('198.51.100.1', '203.0.113.9')).toBe('198.51.100.1');
    const proxies = new ClientAddresses(['10.0.0.0/8', '192.0.2.1', 'fd00::/8']);
    // An untrusted peer's header is its own writing.
    expect(proxies.resolve('198.51.100.1', '203.0.113.9')).toBe('198.51.100.1');
    expect(proxies.resolve('10.1.2.3', '203.0.113.9')).toBe('203.0.113.9');
    expect(proxies.resolve('::ffff:10.1.2.3', '203.0.113.9')).toBe('203.0.113.9');
    // The sender wrote the left-most entries: only the hop our proxy appended counts.
    expect(proxies.resolve('10.1.2.3', '1.1.1.1, 203.0.113.9')).toBe('203.0.113.9');
    // Through two of our proxies.
    expect(proxies.resolve('10.1.2.3', '1.1.1.1, 203.0.113.9, 192.0.2.1')).toBe('203.0.113.9');
    expect(proxies.resolve('fd00::5', '2001:db8::7')).toBe('2001:db8::7');
    // Garbage stops the walk at the last hop we trust.
    expect(proxies.resolve('10.1.2.3', 'evil, 192.0.2.1')).toBe('192.0.2.1');
    expect(proxies.resolve('10.1.2.3', undefined)).toBe('10.1.2.3');
  });

  it('is configured as IPs and CIDR ranges, and anything else stops the start naming the variable', () => {
    expect(loadConfig({ TRUSTED_PROXIES: ' 10.0.0.0/8, 192.0.2.1 ,fd00::/8' }).trustedProxies).toEqual(['10.0.0.0/8', '192.0.2.1', 'fd00::/8']);
    expect(loadConfig({}).trustedProxies).toEqual([]);
    for (const bad of ['10.0.0.0/33', 'proxy.local', '10.0.0.0/8/1', '10.0.0.0/x']) {
      expect(() => loadConfig({ TRUSTED_PROXIES: bad })).toThrow(ConfigError);
      expect(() => loadConfig({ TRUSTED_PROXIES: bad })).toThrow('TRUSTED_PROXIES');
    }
  });

  describe('install attempts per address', () => {
    let stack: Stack;
    afterEach(() => stack.close());

    it('ignore a forged X-Forwarded-For from an untrusted peer, and count each client of a trusted proxy apart', async () => {
      stack = await startStack({ env: { INSTALL_ATTEMPTS_PER_ADDRESS_PER_MINUTE: '3', TRUSTED_PROXIES: '127.0.0.2' } });
      const url = `${stack.server.url}/install`;
      const forged = stack.b24.installEventBody({ accessToken: 'forged-token' });
      // A new made-up address on every request does not buy the sender a new allowance.
      const direct = [];
      for (let i = 0; i < 5; i++) direct.push(await postFrom('127.0.0.3', url, forged, `203.0.113.${i}`));
      expect(direct.filter((status) => status === 429)).toHaveLength(2);
      // Our proxy forwards for two clients: each has its own allowance, whatever they wrote themselves.
      const first = [];
      for (let i = 0; i < 4; i++) first.push(await postFrom('127.0.0.2', url, forged, `198.51.100.${i}, 203.0.113.7`));
      expect(first.filter((status) => status === 429)).toHaveLength(1);
      expect(await postFrom('127.0.0.2', url, forged, '203.0.113.8')).not.toBe(429);
    });
  });
});
