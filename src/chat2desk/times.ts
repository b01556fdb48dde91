/**
 * Chat2Desk writes times as "2026-01-29T06:14:41 UTC" (docs/protocols.md C1): ISO 8601 with
 * the zone as a word, which Date.parse does not read.
 */

/** Milliseconds since the epoch, or undefined for an empty or unreadable time. */
export function parseChat2DeskTime(value: string | null | undefined): number | undefined {
  if (!value) return undefined;
  const ms = Date.parse(value.trim().replace(/ UTC$/, 'Z'));
  return Number.isNaN(ms) ? undefined : ms;
}

/** "2026-01-29 06:14:41 UTC" (or without the zone) for people to read; an unreadable time as it came. */
export function showChat2DeskTime(value: string | null | undefined, withZone = true): string {
  const ms = parseChat2DeskTime(value);
  if (ms === undefined) return value ?? '';
  return `${new Date(ms).toISOString().slice(0, 19).replace('T', ' ')}${withZone ? ' UTC' : ''}`;
}

/** A robot's datetime return value gets ISO 8601 with an offset; anything else goes back as it came. */
export function toBitrixDateTime(chat2deskTime: string): string {
  const match = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}) UTC$/.exec(chat2deskTime.trim());
  return match ? `${match[1]}+00:00` : chat2deskTime;
}
