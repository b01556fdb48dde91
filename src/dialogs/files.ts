import { randomBytes, randomUUID } from 'node:crypto';
import { fileTypeFromBuffer } from 'file-type';
import type { Clock } from '../clock.js';
import type { UploadedFile, UploadedFileStore } from '../db/uploaded-files.js';
import type { DialogViewer } from './scope.js';

/** A refused upload or file link: the status and the words the page shows. */
export class FileRequestError extends Error {
  override name = 'FileRequestError';
  constructor(
    message: string,
    readonly httpStatus: 400 | 404 | 410 | 413 | 415 | 429,
  ) {
    super(message);
  }
}

export interface DialogFilesDeps {
  store: UploadedFileStore;
  clock: Clock;
  /** PUBLIC_URL: the links Chat2Desk fetches are built on it. */
  publicUrl: string;
  /** FILE_LINK_HOURS: how long a link works after the upload. */
  linkHours: number;
  /** UPLOAD_MAX_BYTES. */
  maxBytes: number;
}

/** What the page gets back for an upload: the id it sends with the action. */
export interface UploadAnswer {
  id: string;
  name: string;
  size: number;
  type: string;
  expiresAt: string;
}

/**
 * Types a manager sends to clients, by the type sniffed from the bytes (an allow-list: a deny-list
 * would let through whatever it forgot). Raster images, audio, video, PDF, office documents and
 * archives; plain text is decided apart (below). Nothing a browser would run: SVG and HTML are text.
 */
const ALLOWED_PREFIXES = ['image/', 'audio/', 'video/', 'application/vnd.openxmlformats-officedocument.', 'application/vnd.oasis.opendocument.'];
const ALLOWED_TYPES = new Set([
  'application/pdf',
  'application/rtf',
  'application/x-cfb', // .doc, .xls, .ppt of old Office
  'application/msword',
  'application/vnd.ms-excel',
  'application/vnd.ms-powerpoint',
  'application/zip',
  'application/x-7z-compressed',
  'application/x-rar-compressed',
  'application/vnd.rar',
  'application/gzip',
  'application/x-tar',
  'application/x-bzip2',
  'application/x-xz',
  'application/zstd',
]);
/** Sniffed types that are text underneath: accepted as plain text if the bytes are (file-type reads SVG with an XML declaration as XML). */
const TEXT_LIKE = /^(text\/|application\/xml$)/;

export const PLAIN_TEXT = 'text/plain';

const LINK_SECRET = /^[A-Za-z0-9_-]{43}$/;
/**
 * What one user may keep stored at once, in UPLOAD_MAX_BYTES: files stay until their links expire
 * (Chat2Desk fetches them when it likes), so without a bound one user could fill the database.
 */
const STORED_UPLOADS_PER_USER = 10;
const MAX_NAME_LENGTH = 200;
/** The owner of files the app hosts on no portal user's behalf (Bitrix24 user ids start at 1). */
export const SYSTEM_OWNER = 0;

/**
 * Files a user attaches to a message. Chat2Desk takes files only by a direct public link
 * (docs/protocols.md C8), so an upload is kept here, behind an unguessable link that expires, and is
 * served so it can never run in our origin (attachment, nosniff, a sandboxing CSP, the sniffed type).
 */
export class DialogFiles {
  constructor(private readonly deps: DialogFilesDeps) {}

  get maxBytes(): number {
    return this.deps.maxBytes;
  }

  async upload(viewer: DialogViewer, upload: { name: string; bytes: Buffer }): Promise<UploadAnswer> {
    if (upload.bytes.length === 0) throw new FileRequestError('The file is empty', 400);
    if (upload.bytes.length > this.deps.maxBytes) throw tooLarge(this.deps.maxBytes);
    const now = this.deps.clock.now();
    const stored = await this.deps.store.unexpiredBytes(viewer.portal.memberId, viewer.userId, now);
    if (stored + upload.bytes.length > STORED_UPLOADS_PER_USER * this.deps.maxBytes) {
      throw new FileRequestError(
        `You have ${describeBytes(stored)} of files whose links have not expired yet, and ${describeBytes(STORED_UPLOADS_PER_USER * this.deps.maxBytes)} is the most one user keeps: try again once older links expire (${this.deps.linkHours} h after each upload)`,
        429,
      );
    }
    const type = await sniff(upload.bytes);
    const file = {
      id: randomUUID(),
      secret: randomBytes(32).toString('base64url'),
      memberId: viewer.portal.memberId,
      userId: viewer.userId,
      name: safeFileName(upload.name),
      type,
      size: upload.bytes.length,
      createdAt: now,
      expiresAt: now + this.deps.linkHours * 3600_000,
    };
    await this.deps.store.add({ ...file, bytes: upload.bytes });
    return { id: file.id, name: file.name, size: file.size, type: file.type, expiresAt: new Date(file.expiresAt).toISOString() };
  }

  /**
   * A file we host for a portal on no user's behalf (a client's attachment re-hosted for Bitrix24 to
   * fetch, docs/protocols.md B22): owned by the system user 0, so no user's upload quota counts it,
   * stored once under `id` however often a retried job hosts it. Any type is kept (it is served as a
   * download with nosniff, never rendered); an unknown one as application/octet-stream.
   */
  async host(memberId: string, id: string, file: { name: string; bytes: Buffer }): Promise<UploadedFile> {
    if (file.bytes.length > this.deps.maxBytes) throw tooLarge(this.deps.maxBytes);
    const type = await sniff(file.bytes).catch((error: unknown) => {
      if (error instanceof FileRequestError) return 'application/octet-stream';
      throw error;
    });
    const now = this.deps.clock.now();
    return this.deps.store.addOnce({
      id,
      secret: randomBytes(32).toString('base64url'),
      memberId,
      userId: SYSTEM_OWNER,
      name: safeFileName(file.name),
      type,
      size: file.bytes.length,
      createdAt: now,
      expiresAt: now + this.deps.linkHours * 3600_000,
      bytes: file.bytes,
    });
  }

  /**
   * The files an action names: only the viewer's own, of this portal, still unexpired. Any other id
   * is refused as unknown (never "someone else's").
   */
  async ownFiles(viewer: Pick<DialogViewer, 'portal' | 'userId'>, ids: string[]): Promise<UploadedFile[]> {
    const unique = [...new Set(ids)];
    const found = await this.deps.store.ownUnexpired(viewer.portal.memberId, viewer.userId, unique, this.deps.clock.now());
    const missing = unique.filter((id) => !found.some((file) => file.id === id));
    if (missing.length > 0) throw new FileRequestError(`No such file, or its link expired: upload it again (${missing.join(', ')})`, 404);
    return unique.map((id) => found.find((file) => file.id === id)!);
  }

  /** The public link Chat2Desk fetches. */
  link(file: Pick<UploadedFile, 'secret' | 'name'>): string {
    return `${this.deps.publicUrl}/files/${file.secret}/${encodeURIComponent(file.name)}`;
  }

  /** The file behind a link; 404 for an unknown link, 410 once it expired (until the maintenance deletes it). */
  async open(secret: string, name: string): Promise<UploadedFile & { bytes: Buffer }> {
    const file = LINK_SECRET.test(secret) ? await this.deps.store.bySecret(secret) : undefined;
    if (!file || file.name !== name) throw new FileRequestError('No such file', 404);
    if (file.expiresAt <= this.deps.clock.now()) throw new FileRequestError('This file link has expired', 410);
    return file;
  }

  pruneExpired(): Promise<number> {
    return this.deps.store.pruneExpired(this.deps.clock.now());
  }
}

export function tooLarge(maxBytes: number): FileRequestError {
  return new FileRequestError(`The file is larger than ${describeBytes(maxBytes)}, the most this server takes (UPLOAD_MAX_BYTES)`, 413);
}

export function describeBytes(bytes: number): string {
  for (const [unit, size] of [
    ['MB', 1024 * 1024],
    ['KB', 1024],
  ] as const) {
    if (bytes >= size) return `${Number.isInteger(bytes / size) ? bytes / size : (bytes / size).toFixed(1)} ${unit}`;
  }
  return `${bytes} bytes`;
}

/**
 * The type from the bytes alone: file-type's magic numbers against the allow-list. Plain text has
 * no magic number: accepted as text/plain only when the bytes are valid UTF-8 without NULs, so an
 * HTML or SVG file becomes text, never markup.
 */
export async function sniff(bytes: Buffer): Promise<string> {
  const detected = await fileTypeFromBuffer(bytes);
  if (detected && (ALLOWED_TYPES.has(detected.mime) || ALLOWED_PREFIXES.some((prefix) => detected.mime.startsWith(prefix)))) return detected.mime;
  if ((!detected || TEXT_LIKE.test(detected.mime)) && isPlainText(bytes)) return PLAIN_TEXT;
  throw new FileRequestError(
    `This kind of file (${detected ? detected.mime : 'unknown'}) cannot be sent: images, audio, video, PDF, office documents, archives and plain text can`,
    415,
  );
}

function isPlainText(bytes: Buffer): boolean {
  if (bytes.includes(0)) return false;
  try {
    new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    return true;
  } catch {
    return false;
  }
}

/**
 * The name as stored and shown: no path separators, no control or format characters (a right-to-left
 * override could disguise an extension), unicode letters kept, at most 200 characters.
 */
export function safeFileName(name: string): string {
  const cleaned = name
    .normalize('NFC')
    .replace(/[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/gu, '')
    .replace(/[/\\]/g, '_')
    .replace(/\s+/g, ' ')
    .trim()
    .replace(/^\.+/, '');
  const chars = [...cleaned];
  const bounded = chars.length > MAX_NAME_LENGTH ? chars.slice(chars.length - MAX_NAME_LENGTH).join('') : cleaned;
  return bounded === '' ? 'file' : bounded;
}

/** RFC 6266 / 5987: the UTF-8 name of an attachment, every byte outside the safe set percent-encoded. */
export function contentDisposition(name: string): string {
  const encoded = encodeURIComponent(name).replace(/['()*]/g, (char) => `%${char.charCodeAt(0).toString(16).toUpperCase()}`);
  return `attachment; filename*=UTF-8''${encoded}`;
}
