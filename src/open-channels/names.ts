/**
 * A Chat2Desk client's name as Bitrix24's connector user takes it: `name` and `last_name` hold only
 * letters, spaces, hyphens and apostrophes, at most 25 characters each (docs/protocols.md B22;
 * digits are refused). What is left after cleaning is split into name and last name at word
 * boundaries; a name of digits or emoji becomes empty (the phone travels in `phone`).
 */
export const NAME_MAX = 25;

export interface ConnectorUserName {
  name: string;
  lastName: string;
}

export function cleanClientName(raw: string | null | undefined): ConnectorUserName {
  const words = (raw ?? '')
    .normalize('NFC')
    // Typographic apostrophes become the one Bitrix24 takes.
    .replace(/[\u2018\u2019\u02BC`]/g, "'")
    .replace(/[^\p{L}\s'-]/gu, ' ')
    .split(/\s+/)
    // A word needs a letter: stray hyphens and apostrophes left by removed characters go.
    .map((word) => word.replace(/^['-]+|['-]+$/g, ''))
    .filter((word) => /\p{L}/u.test(word));
  const name = take(words);
  const lastName = take(words);
  return { name, lastName };
}

/** Takes whole words from the front while they fit; a single word longer than the bound is cut. */
function take(words: string[]): string {
  let taken = '';
  while (words.length > 0) {
    const next = taken === '' ? words[0]! : `${taken} ${words[0]}`;
    if ([...next].length > NAME_MAX) {
      if (taken === '') {
        words.shift();
        return [...next]
          .slice(0, NAME_MAX)
          .join('')
          .replace(/['-]+$/, '');
      }
      break;
    }
    taken = next;
    words.shift();
  }
  return taken;
}
