import { describe, expect, it } from 'vitest';
import { dialogUrl } from '../../src/chat2desk/links.js';
import { parseChat2DeskTime, showChat2DeskTime, toBitrixDateTime } from '../../src/chat2desk/times.js';

const AT = Date.UTC(2026, 0, 29, 6, 14, 41);

describe("Chat2Desk's times", () => {
  it.each(['2026-01-29T06:14:41 UTC', ' 2026-01-29T06:14:41 UTC ', '2026-01-29 06:14:41 UTC', '2026-01-29T06:14:41Z'])('reads %j', (value) => {
    expect(parseChat2DeskTime(value)).toBe(AT);
  });

  it.each(['', null, undefined, 'yesterday', '2026-01-29T06:14:41 MSK'])('reads %j as no time', (value) => {
    expect(parseChat2DeskTime(value)).toBeUndefined();
  });

  it('shows a time for people, with or without the zone, and an unreadable one as it came', () => {
    expect(showChat2DeskTime('2026-01-29T06:14:41 UTC')).toBe('2026-01-29 06:14:41 UTC');
    expect(showChat2DeskTime('2026-01-29T06:14:41 UTC', false)).toBe('2026-01-29 06:14:41');
    expect(showChat2DeskTime('soon')).toBe('soon');
    expect(showChat2DeskTime(null)).toBe('');
  });

  it('gives a robot ISO 8601 with an offset, and anything else back as it came', () => {
    expect(toBitrixDateTime('2026-01-29T06:14:41 UTC')).toBe('2026-01-29T06:14:41+00:00');
    expect(toBitrixDateTime(' 2026-01-29T06:14:41 UTC ')).toBe('2026-01-29T06:14:41+00:00');
    expect(toBitrixDateTime('2026-01-29 06:14:41 UTC')).toBe('2026-01-29 06:14:41 UTC');
    expect(toBitrixDateTime('2026-01-29T06:14:41Z')).toBe('2026-01-29T06:14:41Z');
  });
});

describe('The dialog web link', () => {
  it.each([
    ['https://api.chat2desk.com', 'https://web.chat2desk.com/chat/all?dialogID=42'],
    ['https://api.chat2desk.com/', 'https://web.chat2desk.com/chat/all?dialogID=42'],
    ['https://api.chat2desk.com.mx', 'https://web.chat2desk.com.mx/chat/all?dialogID=42'],
    ['https://api.chat24.io/v1', 'https://web.chat24.io/chat/all?dialogID=42'],
    ['http://127.0.0.1:4010', 'http://127.0.0.1:4010/chat/all?dialogID=42'],
  ])('from %s', (apiUrl, link) => {
    expect(dialogUrl(apiUrl, 42)).toBe(link);
  });
});
