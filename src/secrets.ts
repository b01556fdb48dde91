import { createCipheriv, createDecipheriv, createHmac, hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

/**
 * Secrets at rest (OAuth tokens, the Chat2Desk API token) are sealed with AES-256-GCM under a key
 * derived from APP_SECRET. Application tokens are never needed in clear again, so only a keyed
 * digest of them is stored and compared in constant time.
 */
export class SecretBox {
  readonly #sealKey: Buffer;
  readonly #digestKey: Buffer;

  constructor(appSecret: string) {
    this.#sealKey = Buffer.from(hkdfSync('sha256', appSecret, 'chat2desk-bitrix24', 'seal-v1', 32));
    this.#digestKey = Buffer.from(hkdfSync('sha256', appSecret, 'chat2desk-bitrix24', 'digest-v1', 32));
  }

  seal(plain: string): string {
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', this.#sealKey, iv);
    const body = Buffer.concat([cipher.update(plain, 'utf8'), cipher.final()]);
    return `v1.${iv.toString('base64url')}.${cipher.getAuthTag().toString('base64url')}.${body.toString('base64url')}`;
  }

  open(sealed: string): string {
    const [version, iv, tag, body] = sealed.split('.');
    if (version !== 'v1' || !iv || !tag || body === undefined) throw new Error('Sealed secret has an unknown format');
    const decipher = createDecipheriv('aes-256-gcm', this.#sealKey, Buffer.from(iv, 'base64url'));
    decipher.setAuthTag(Buffer.from(tag, 'base64url'));
    return Buffer.concat([decipher.update(Buffer.from(body, 'base64url')), decipher.final()]).toString('utf8');
  }

  digest(value: string): string {
    return createHmac('sha256', this.#digestKey).update(value).digest('base64url');
  }

  /** Constant-time check of a presented secret against a stored digest. */
  matches(presented: string, storedDigest: string): boolean {
    const a = Buffer.from(this.digest(presented));
    const b = Buffer.from(storedDigest);
    return a.length === b.length && timingSafeEqual(a, b);
  }
}

/**
 * Without APP_SECRET a random key is kept beside the database file, so a first run works and
 * survives restarts; production should set APP_SECRET (the start-up banner says so).
 */
export function resolveAppSecret(configured: string | undefined, databaseFile: string): string {
  if (configured) return configured;
  if (databaseFile === ':memory:') return randomBytes(32).toString('base64url');
  const keyFile = join(dirname(databaseFile), '.app-secret');
  if (existsSync(keyFile)) return readFileSync(keyFile, 'utf8').trim();
  mkdirSync(dirname(keyFile), { recursive: true });
  const secret = randomBytes(32).toString('base64url');
  writeFileSync(keyFile, secret, { mode: 0o600 });
  return secret;
}
