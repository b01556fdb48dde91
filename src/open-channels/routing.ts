import type { LineOptions } from './lines.js';

/** A connected line as routing reads it (src/open-channels/lines.ts `OpenLines.lines`, in routing order). */
export interface RoutableLine {
  lineId: number;
  options: LineOptions;
}

/** What routing needs to know of a conversation; the client's tags are read only when a line asks. */
export interface Conversation {
  channelId: number | null;
  clientTagIds(): Promise<number[]>;
}

export type Route =
  /** The line this conversation goes to. */
  | { kind: 'line'; line: RoutableLine }
  /** The conversation's line takes only some clients (its tag filter), and not this one. */
  | { kind: 'filtered'; line: RoutableLine; reason: string }
  /** No connected line takes it: held until one does (contracts-10 "Routing"). */
  | { kind: 'none'; reason: string };

/**
 * Every conversation lands on exactly one line: the first line, in routing order, whose rule matches
 * (channels: the dialog's channel; tags: any of the client's tags), else the first default line.
 * That line's tag filter then says whether its messages are sent (only / except the clients with
 * any of its tags).
 */
export async function routeConversation(lines: RoutableLine[], conversation: Conversation): Promise<Route> {
  if (lines.length === 0) return { kind: 'none', reason: 'no Open Channel line is connected to Chat2Desk' };
  let tags: number[] | undefined;
  const clientTags = async () => {
    tags ??= await conversation.clientTagIds();
    return tags;
  };
  let chosen: RoutableLine | undefined;
  for (const line of lines) {
    const { route } = line.options;
    if (route.kind === 'channels' && conversation.channelId !== null && route.channelIds.includes(conversation.channelId)) chosen = line;
    else if (route.kind === 'tags' && (await clientTags()).some((tag) => route.tagIds.includes(tag))) chosen = line;
    if (chosen) break;
  }
  chosen ??= lines.find((line) => line.options.route.kind === 'default');
  if (!chosen) {
    return {
      kind: 'none',
      reason: `no connected Open Channel line takes this conversation (channel ${conversation.channelId ?? 'unknown'}, and none of the lines is the default)`,
    };
  }
  const filter = chosen.options.tagFilter;
  if (filter.mode === 'all') return { kind: 'line', line: chosen };
  const tagged = (await clientTags()).some((tag) => filter.tagIds.includes(tag));
  if (filter.mode === 'only' && !tagged) return { kind: 'filtered', line: chosen, reason: `line ${chosen.lineId} takes only clients with tags ${filter.tagIds.join(', ')}` };
  if (filter.mode === 'except' && tagged) return { kind: 'filtered', line: chosen, reason: `line ${chosen.lineId} takes no clients with tags ${filter.tagIds.join(', ')}` };
  return { kind: 'line', line: chosen };
}
