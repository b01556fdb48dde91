import { loadTemplate } from '../templates.js';

export type CommentLanguage = 'en' | 'ru' | 'es';

/** A long episode's transcript is cut here; the comment links to the rest in Chat2Desk. */
export const TRANSCRIPT_LIMIT = 200;
/** Characters of the transcript at most (a timeline comment is read, not archived). */
export const TRANSCRIPT_MAX_CHARS = 20_000;

interface Labels {
  episode: string;
  dialog: string;
  open: string;
  client: string;
  channel: string;
  operator: string;
  started: string;
  ended: string;
  duration: string;
  tags: string;
  transcript: string;
  utc: string;
  noMessages: string;
  more: string;
  rest: string;
  fromClient: string;
  fromOperator: string;
  system: string;
}

const LABELS: Record<CommentLanguage, Labels> = {
  en: {
    episode: 'request',
    dialog: 'dialog',
    open: 'Open the dialog in Chat2Desk',
    client: 'Client',
    channel: 'Channel',
    operator: 'Operator',
    started: 'Started',
    ended: 'Ended',
    duration: 'Duration',
    tags: 'Tags',
    transcript: 'Transcript',
    utc: 'times in UTC',
    noMessages: 'No messages.',
    more: 'more messages:',
    rest: 'the rest in Chat2Desk',
    fromClient: 'Client',
    fromOperator: 'Operator',
    system: 'System',
  },
  ru: {
    episode: 'обращение',
    dialog: 'диалог',
    open: 'Открыть диалог в Chat2Desk',
    client: 'Клиент',
    channel: 'Канал',
    operator: 'Оператор',
    started: 'Начало',
    ended: 'Конец',
    duration: 'Длительность',
    tags: 'Теги',
    transcript: 'Переписка',
    utc: 'время UTC',
    noMessages: 'Сообщений нет.',
    more: 'сообщений ещё:',
    rest: 'остальное в Chat2Desk',
    fromClient: 'Клиент',
    fromOperator: 'Оператор',
    system: 'Система',
  },
  es: {
    episode: 'solicitud',
    dialog: 'diálogo',
    open: 'Abrir el diálogo en Chat2Desk',
    client: 'Cliente',
    channel: 'Canal',
    operator: 'Operador',
    started: 'Inicio',
    ended: 'Fin',
    duration: 'Duración',
    tags: 'Etiquetas',
    transcript: 'Conversación',
    utc: 'horas en UTC',
    noMessages: 'Sin mensajes.',
    more: 'mensajes más:',
    rest: 'el resto en Chat2Desk',
    fromClient: 'Cliente',
    fromOperator: 'Operador',
    system: 'Sistema',
  },
};

export interface TranscriptLine {
  time: string;
  direction: 'client' | 'operator' | 'system';
  text: string;
  attachments: Array<{ url: string; name: string }>;
}

/** Everything the comment shows, as plain text: the template escapes it for BBCode. */
export interface EpisodeCommentView {
  requestId: number;
  dialogId: number | null;
  dialogUrl: string;
  client: string;
  channel: string;
  transport: string;
  operator: string;
  /** Unix ms, or undefined when unknown. */
  startedAt: number | undefined;
  endedAt: number | undefined;
  tags: string[];
  withTranscript: boolean;
  transcript: TranscriptLine[];
}

/**
 * Bitrix24 timeline comments are BBCode. Text from Chat2Desk (messages, names, tags) could carry
 * `[url=…]` or any other tag; its brackets become fullwidth look-alikes, which BBCode ignores.
 */
export function escapeBbcode(text: string): string {
  return text.replace(/\[/g, '［').replace(/\]/g, '］');
}

/** A link: only http(s), with brackets percent-encoded so the URL cannot close the tag. */
export function bbcodeLink(url: string, label: string): string {
  let href: string;
  try {
    const parsed = new URL(url.trim());
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new Error('not a web link');
    href = parsed.href.replace(/\[/g, '%5B').replace(/\]/g, '%5D');
  } catch {
    return escapeBbcode(label && label !== url ? `${label}: ${url}` : url);
  }
  return `[url=${href}]${escapeBbcode(label || href)}[/url]`;
}

/**
 * Compiled without HTML escaping: Bitrix24 escapes HTML in comments itself, so HTML-escaping here
 * would show `&amp;` and `&lt;` to the reader. The template escapes BBCode with `bb` and `link`.
 */
const render = loadTemplate<Record<string, unknown>>('timeline-comment', {
  htmlEscape: false,
  helpers: {
    bb: (value: unknown) => escapeBbcode(String(value ?? '')),
    link: (url: unknown, label: unknown) => bbcodeLink(String(url ?? ''), typeof label === 'string' ? label : ''),
  },
});

/** The first line of every episode comment of ours starts so; it names the request (see `isCommentOf`). */
const MARKER = '[b]Chat2Desk[/b] ';

/** Is this timeline comment ours for the request? Its first line names it, whatever the language. */
export function isCommentOf(comment: string, requestId: number): boolean {
  const firstLine = comment.split('\n', 1)[0] ?? '';
  return firstLine.startsWith(MARKER) && new RegExp(`#${requestId}(?!\\d)`).test(firstLine);
}

export function renderEpisodeComment(view: EpisodeCommentView, language: CommentLanguage): string {
  const t = LABELS[language];
  const { lines, omitted } = capTranscript(view.transcript);
  return render({
    t,
    requestId: view.requestId,
    dialogId: view.dialogId ?? '—',
    dialogUrl: view.dialogUrl,
    client: view.client,
    channel: view.channel,
    transport: view.transport,
    operator: view.operator,
    started: showTime(view.startedAt),
    ended: showTime(view.endedAt),
    duration: view.startedAt !== undefined && view.endedAt !== undefined && view.endedAt >= view.startedAt ? humanDuration(view.endedAt - view.startedAt, language) : '',
    tags: view.tags.join(', '),
    withTranscript: view.withTranscript,
    transcript: lines.map((line) => ({ ...line, direction: line.direction === 'client' ? t.fromClient : line.direction === 'operator' ? t.fromOperator : t.system })),
    omitted,
  }).trim();
}

/** At most TRANSCRIPT_LIMIT lines and TRANSCRIPT_MAX_CHARS characters; the rest is counted. */
function capTranscript(lines: TranscriptLine[]): { lines: TranscriptLine[]; omitted: number } {
  const kept: TranscriptLine[] = [];
  let chars = 0;
  for (const line of lines.slice(0, TRANSCRIPT_LIMIT)) {
    chars += line.text.length + line.attachments.reduce((sum, item) => sum + item.url.length + item.name.length, 0);
    if (chars > TRANSCRIPT_MAX_CHARS) break;
    kept.push(line);
  }
  return { lines: kept, omitted: lines.length - kept.length };
}

function showTime(ms: number | undefined): string {
  return ms === undefined ? '' : `${new Date(ms).toISOString().slice(0, 19).replace('T', ' ')} UTC`;
}

const UNITS: Record<CommentLanguage, { d: string; h: string; min: string; s: string }> = {
  en: { d: 'd', h: 'h', min: 'min', s: 's' },
  ru: { d: 'д', h: 'ч', min: 'мин', s: 'с' },
  es: { d: 'd', h: 'h', min: 'min', s: 's' },
};

function humanDuration(ms: number, language: CommentLanguage): string {
  const u = UNITS[language];
  const seconds = Math.round(ms / 1000);
  const [days, hours, minutes, rest] = [Math.floor(seconds / 86_400), Math.floor(seconds / 3600) % 24, Math.floor(seconds / 60) % 60, seconds % 60];
  if (days > 0) return `${days} ${u.d} ${hours} ${u.h}`;
  if (hours > 0) return `${hours} ${u.h} ${minutes} ${u.min}`;
  if (minutes > 0) return `${minutes} ${u.min} ${rest} ${u.s}`;
  return `${rest} ${u.s}`;
}
