/**
 * An Open Channel operator's message as the client's messenger shows it: Bitrix24 writes BBCode
 * (docs/protocols.md B23; docs:`api-reference/chats/messages/formatting.md`), a messenger shows
 * plain text. Formatting is dropped and its words kept; a link keeps its address beside its words,
 * since the client cannot click hidden markup.
 */

/**
 * The operator's name Bitrix24 puts before the text when the connector asks for signatures
 * (`NEED_SIGNATURE`, bitrix24.md §12.1): `[b]Klaus Weber:[/b] [br]` (the add event) or
 * `[b]Klaus Weber:[/b][br] ` (the update event), examples/bitrix24/onimconnectormessage*.form.txt.
 */
const SIGNATURE = /^\s*\[b\]([^[\]\n]{1,200}?):\[\/b\]\s*\[br\]\s*/i;

/** Tags whose words stay and whose markup goes (formatting, alignment, lists, sizes, colours). */
const FORMATTING_TAGS = [
  'b',
  'i',
  'u',
  's',
  'color',
  'size',
  'font',
  'left',
  'right',
  'center',
  'justify',
  'list',
  'icon',
  'send',
  'put',
  'chat',
  'context',
  'dialog',
  'call',
  'pch',
  'disk',
  'timestamp',
];

export interface SignedText {
  /** The operator's name Bitrix24 signed the message with, if it did. */
  signature: string | undefined;
  /** The message without its signature, still BBCode. */
  body: string;
}

/** Splits Bitrix24's signature off the text. */
export function splitSignature(text: string): SignedText {
  const match = SIGNATURE.exec(text);
  if (!match) return { signature: undefined, body: text };
  return { signature: match[1]!.trim(), body: text.slice(match[0].length) };
}

/**
 * The messenger's text of a message: the signature kept as "Name: " before the text when the
 * line's `signature` option is on (taken from Bitrix24's, else `nameOf()`), dropped when off.
 * Bitrix24's signature is looked for only when the connector asked for one (`signedByBitrix24`):
 * otherwise a text starting `[b]Important:[/b][br]` is the operator's own heading and stays.
 */
export async function messengerText(text: string, options: { signature: boolean; signedByBitrix24: boolean; nameOf: () => Promise<string | undefined> }): Promise<string> {
  const { signature, body } = options.signedByBitrix24 ? splitSignature(text) : { signature: undefined, body: text };
  const plain = bbcodeToText(body);
  if (!options.signature) return plain;
  const name = signature ?? (await options.nameOf());
  if (!name || plain === '') return plain;
  return `${bbcodeToText(name)}: ${plain}`;
}

/** BBCode → plain text. Unknown bracketed words ("[sic]") are left as written. */
export function bbcodeToText(input: string): string {
  const codes: string[] = [];
  // [code] keeps its contents verbatim: set aside before anything else is converted.
  let text = input.replace(/\[code\]([\s\S]*?)\[\/code\]/gi, (_all, inner: string) => {
    codes.push(inner.replace(/^\n+|\n+$/g, ''));
    return `\u0000${codes.length - 1}\u0000`;
  });
  text = text
    .replace(/\[br\]/gi, '\n')
    .replace(/\[url=([^\]]+)\]([\s\S]*?)\[\/url\]/gi, (_all, href: string, words: string) => linkText(unquote(href), words))
    .replace(/\[url\]([\s\S]*?)\[\/url\]/gi, (_all, href: string) => href.trim())
    .replace(/\[img(?:\s[^\]]*)?\]([\s\S]*?)\[\/img\]/gi, (_all, src: string) => src.trim())
    .replace(/\[user=[^\]]*\]([\s\S]*?)\[\/user\]/gi, (_all, name: string) => name)
    .replace(/\[quote(?:=[^\]]*)?\]([\s\S]*?)\[\/quote\]/gi, (_all, quoted: string) => quote(quoted))
    .replace(/\[\*\]/g, '• ');
  for (const tag of FORMATTING_TAGS) text = text.replace(new RegExp(`\\[/?${tag}(?:[= ][^\\]]*)?\\]`, 'gi'), '');
  text = text.replace(/\u0000(\d+)\u0000/g, (_all, n: string) => codes[Number(n)] ?? '');
  return text.replace(/[ \t]+\n/g, '\n').trim();
}

function unquote(value: string): string {
  return value.trim().replace(/^(["'])(.*)\1$/, '$2');
}

/** "words (address)", or the address alone when the words are the address. */
function linkText(href: string, words: string): string {
  const label = bbcodeToText(words);
  if (label === '' || label === href) return href;
  return `${label} (${href})`;
}

/** A quotation as messengers show one: each line after "> ". Bitrix24's dashed rulers around it are dropped. */
function quote(quoted: string): string {
  return quoted
    .replace(/\[br\]/gi, '\n')
    .split('\n')
    .filter((line) => !/^-{10,}$/.test(line.trim()))
    .map((line) => `> ${line}`)
    .join('\n')
    .concat('\n');
}

/**
 * Text we did not write (a client's message, a Chat2Desk operator's name, a file name) as literal
 * words in a message we send to Bitrix24, which renders BBCode in every message it shows
 * (docs/protocols.md B22 "Text from outside"): a zero-width space after each `[` keeps
 * `[b]Chat2Desk operator …:[/b]`, `[USER=1]`, `[URL=…]` or `[br]` from being taken as markup, so a
 * client cannot imitate our marks, ping employees or hide a link; the reader sees the same characters.
 * Bitrix24 documents no escape for its BBCode.
 */
export function literalInBbcode(text: string): string {
  return text.replace(/\[/g, '[\u200B');
}
