import * as v from 'valibot';
import type { OpenLineStore } from '../db/open-lines.js';

/**
 * The per-line options of a connected Open Channel line (the vendor's Open Channels settings,
 * pages-and-modes.md §1.4, chosen per line in the line's connector settings page).
 */
export interface LineOptions {
  route: { kind: 'default' } | { kind: 'channels'; channelIds: number[] } | { kind: 'tags'; tagIds: number[] };
  /** The Bitrix24 chat id = the Chat2Desk client (default) or request. */
  chatPer: 'client' | 'request';
  /** Operator's name on outgoing messages. */
  signature: boolean;
  /** Inbound held until a Chat2Desk operator joined the dialog. */
  holdUntilOperator: boolean;
  /** Chat2Desk delivery errors posted into the Open Channel chat. */
  postDeliveryErrors: boolean;
  tagFilter: { mode: 'all' | 'only' | 'except'; tagIds: number[]; sendPreviousAfterTagging: boolean };
}

export const DEFAULT_LINE_OPTIONS: LineOptions = {
  route: { kind: 'default' },
  chatPer: 'client',
  signature: true,
  holdUntilOperator: false,
  postDeliveryErrors: true,
  tagFilter: { mode: 'all', tagIds: [], sendPreviousAfterTagging: false },
};

/** Bounds: a line names a handful of channels or tags, never an account's whole list one by one. */
export const LINE_IDS_MAX = 200;

function idList(field: string) {
  return v.pipe(
    v.array(
      v.pipe(v.number(`${field} must be a list of ids`), v.integer(`${field} must be a list of ids`), v.minValue(1, `${field} must be a list of ids`)),
      `${field} must be a list of ids`,
    ),
    v.maxLength(LINE_IDS_MAX, `${field} lists more than ${LINE_IDS_MAX} ids`),
    v.transform((ids) => [...new Set(ids)]),
  );
}

/** The strict schema of what an admin submits: every field present, each bad one named. */
export const lineOptionsSchema = v.strictObject(
  {
    route: v.variant(
      'kind',
      [
        v.strictObject({ kind: v.literal('default') }, 'route must be {kind: default}'),
        v.strictObject(
          { kind: v.literal('channels'), channelIds: v.pipe(idList('route.channelIds'), v.minLength(1, 'route.channelIds must name at least one channel')) },
          'route must be {kind: channels, channelIds}',
        ),
        v.strictObject(
          { kind: v.literal('tags'), tagIds: v.pipe(idList('route.tagIds'), v.minLength(1, 'route.tagIds must name at least one tag')) },
          'route must be {kind: tags, tagIds}',
        ),
      ],
      'route.kind must be default, channels or tags',
    ),
    chatPer: v.picklist(['client', 'request'], 'chatPer must be client or request'),
    signature: v.boolean('signature must be true or false'),
    holdUntilOperator: v.boolean('holdUntilOperator must be true or false'),
    postDeliveryErrors: v.boolean('postDeliveryErrors must be true or false'),
    tagFilter: v.pipe(
      v.strictObject(
        {
          mode: v.picklist(['all', 'only', 'except'], 'tagFilter.mode must be all, only or except'),
          tagIds: idList('tagFilter.tagIds'),
          sendPreviousAfterTagging: v.boolean('tagFilter.sendPreviousAfterTagging must be true or false'),
        },
        'tagFilter must be {mode, tagIds, sendPreviousAfterTagging}',
      ),
      v.check((filter) => filter.mode === 'all' || filter.tagIds.length > 0, 'tagFilter.tagIds must name at least one tag when tagFilter.mode is only or except'),
    ),
  },
  'line options must be an object with route, chatPer, signature, holdUntilOperator, postDeliveryErrors and tagFilter',
);

export type LineOptionsResult = { ok: true; options: LineOptions } | { ok: false; error: string };

/** Validates submitted options; the error names the first bad field. */
export function parseLineOptions(input: unknown): LineOptionsResult {
  const result = v.safeParse(lineOptionsSchema, input);
  if (result.success) return { ok: true, options: result.output as LineOptions };
  return { ok: false, error: result.issues[0]?.message ?? 'line options are invalid' };
}

/**
 * Reads stored options tolerantly: each part that is missing or no longer valid (an older
 * version stored less) falls back to its default, so a stored line never stops working.
 */
export function readLineOptions(stored: unknown): LineOptions {
  const record = typeof stored === 'object' && stored !== null ? (stored as Record<string, unknown>) : {};
  const part = <K extends keyof LineOptions>(key: K): LineOptions[K] => {
    const candidate = { ...DEFAULT_LINE_OPTIONS, [key]: record[key] };
    const result = v.safeParse(lineOptionsSchema, candidate);
    return result.success ? (result.output as LineOptions)[key] : DEFAULT_LINE_OPTIONS[key];
  };
  return {
    route: part('route'),
    chatPer: part('chatPer'),
    signature: part('signature'),
    holdUntilOperator: part('holdUntilOperator'),
    postDeliveryErrors: part('postDeliveryErrors'),
    tagFilter: part('tagFilter'),
  };
}

/** A portal's connected lines with their options, in routing order (src/open-channels/routing.ts reads them). */
export class OpenLines {
  constructor(private readonly deps: { store: OpenLineStore }) {}

  async lines(memberId: string): Promise<Array<{ lineId: number; position: number; options: LineOptions }>> {
    const rows = await this.deps.store.list(memberId);
    return rows.map((row) => ({ lineId: row.lineId, position: row.position, options: readLineOptions(row.options) }));
  }
}
