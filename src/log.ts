import { pino, type Logger } from 'pino';

export type { Logger };

/**
 * Secrets must never reach a log. Call sites do not log bodies or tokens, and this redaction list is
 * the second line of defence for any object that carries one by accident.
 */
const REDACT = [
  'access_token',
  'refresh_token',
  'application_token',
  'client_secret',
  'auth',
  'token',
  'apiToken',
  'chat2deskApiToken',
  'authorization',
  'Authorization',
  '*.access_token',
  '*.refresh_token',
  '*.application_token',
  '*.client_secret',
  '*.auth',
  '*.token',
  '*.apiToken',
  '*.chat2deskApiToken',
  '*.authorization',
  '*.Authorization',
  'req.headers.authorization',
];

export function createLogger(level: string, destination?: NodeJS.WritableStream): Logger {
  const options = { level, redact: { paths: REDACT, censor: '[redacted]' }, base: undefined };
  return destination ? pino(options, destination as pino.DestinationStream) : pino(options);
}
