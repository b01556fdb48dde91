import { describe, expect, it } from 'vitest';
import { isCommentOf, renderEpisodeComment, type EpisodeCommentView } from '../src/episodes/comment.js';

/** The episode comment's template (templates/timeline-comment.hbs) in each language, without a server. */
describe('the episode comment', () => {
  const view: EpisodeCommentView = {
    requestId: 8725101,
    dialogId: 4324101,
    dialogUrl: 'https://web.chat2desk.com/chat/all?dialogID=4324101',
    client: 'Анна [b]x[/b] (+79161234567)',
    channel: 'Sales',
    transport: 'whatsapp',
    operator: 'John Doe',
    startedAt: Date.parse('2026-01-29T06:14:41Z'),
    endedAt: Date.parse('2026-01-29T07:20:00Z'),
    tags: ['VIP'],
    withTranscript: true,
    transcript: Array.from({ length: 205 }, (_, i) => ({ time: '2026-01-29 06:14:41', direction: 'client' as const, text: `m${i}`, attachments: [] })),
  };

  it('speaks Russian and Spanish, escapes client text, caps the transcript with a link to the rest, and is recognised by its request', () => {
    const ru = renderEpisodeComment(view, 'ru');
    expect(ru.split('\n').slice(0, 9)).toEqual([
      '[b]Chat2Desk[/b] обращение #8725101 · диалог 4324101',
      '[url=https://web.chat2desk.com/chat/all?dialogID=4324101]Открыть диалог в Chat2Desk[/url]',
      'Клиент: Анна ［b］x［/b］ (+79161234567)',
      'Канал: Sales (whatsapp)',
      'Оператор: John Doe',
      'Начало: 2026-01-29 06:14:41 UTC',
      'Конец: 2026-01-29 07:20:00 UTC',
      'Длительность: 1 ч 5 мин',
      'Теги: VIP',
    ]);
    expect(ru).toContain('… 5 сообщений ещё: [url=https://web.chat2desk.com/chat/all?dialogID=4324101]остальное в Chat2Desk[/url]');
    const es = renderEpisodeComment(view, 'es');
    expect(es.split('\n')[0]).toBe('[b]Chat2Desk[/b] solicitud #8725101 · diálogo 4324101');
    expect(es).toContain('[b]Cliente:[/b] m0');
    expect(isCommentOf(es, 8725101)).toBe(true);
    expect(isCommentOf(es, 872510)).toBe(false);
    expect(isCommentOf(renderEpisodeComment(view, 'en'), 87251010)).toBe(false);
  });
});
