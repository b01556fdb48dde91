import { findPhoneNumbersInText, parsePhoneNumberFromString, type CountryCode } from 'libphonenumber-js/max';
import * as v from 'valibot';

export interface NormalizedPhone {
  /** International digits without '+', the form Chat2Desk stores (docs/protocols.md C3). */
  digits: string;
  e164: string;
}

/**
 * What a phone property may hold before it is parsed. libphonenumber's text search runs on the
 * event loop at about 25 µs per character (a 240 KB value held every portal for 2.7 s), so a value
 * beyond these bounds is refused unread. A Bitrix24 phone field has a few numbers, and its
 * printable text ("+7 916 123-45-67, +7 495 …") a few per line: these bounds leave room for both
 * and cap the worst case at a few tens of milliseconds.
 */
export const PHONE_MAX_VALUES = 10;
export const PHONE_MAX_LENGTH = 150;

/** Why a phone property is too large to parse, or undefined when it is within the bounds. */
export function phoneBoundsProblem(input: string | string[]): string | undefined {
  const values = Array.isArray(input) ? input : [input];
  const given = values.filter((value) => value.trim() !== '');
  if (given.length > PHONE_MAX_VALUES) return `phone has ${given.length} values; at most ${PHONE_MAX_VALUES} are accepted`;
  if (given.some((value) => value.trim().length > PHONE_MAX_LENGTH)) return `phone is longer than ${PHONE_MAX_LENGTH} characters`;
  return undefined;
}

/** The schema check every robot with a phone property runs first, so no oversized phone reaches the parser. */
export const withinPhoneBounds = v.rawCheck<string | string[]>(({ dataset, addIssue }) => {
  const problem = dataset.typed ? phoneBoundsProblem(dataset.value) : undefined;
  if (problem) addIssue({ message: problem });
});

/**
 * The one phone normaliser. Accepts what a Bitrix24 phone field gives a robot: an array of values,
 * or its printable text ("+7 916 123-45-67, +7 495 ..."), possibly with a type suffix. The first
 * valid number wins; a number without a country code takes `defaultCountry`. Input beyond the
 * bounds above is a RangeError, never parsed (robot schemas refuse it before a run gets here).
 */
export function normalizePhone(input: string | string[] | undefined, defaultCountry?: string): NormalizedPhone | undefined {
  const problem = phoneBoundsProblem(input ?? '');
  if (problem) throw new RangeError(problem);
  const values = (Array.isArray(input) ? input : [input ?? '']).map((value) => value.trim()).filter(Boolean);
  const country = defaultCountry ? (defaultCountry.toUpperCase() as CountryCode) : undefined;
  for (const value of values) {
    const bareDigits = BARE_DIGITS.test(value);
    // Without a country, libphonenumber reads no number that lacks its '+': for bare digits both
    // searches below fail, throwing and catching a ParseError inside (the largest part of a run's
    // phone cost in a burst), so they are skipped. Checked on 30,000 digit strings: none parsed.
    if (country || !bareDigits) {
      const whole = parsePhoneNumberFromString(value, country ? { defaultCountry: country } : undefined);
      if (whole?.isValid()) return toNormalized(whole.number);
      const found = findPhoneNumbersInText(value, country ? { defaultCountry: country } : undefined);
      for (const match of found) if (match.number.isValid()) return toNormalized(match.number.number);
    }
    // Chat2Desk stores numbers as bare international digits; accept those too.
    if (bareDigits) {
      const international = parsePhoneNumberFromString(`+${value}`);
      if (international?.isValid()) return toNormalized(international.number);
    }
  }
  return undefined;
}

/** International digits as Chat2Desk stores them (docs/protocols.md C3). */
const BARE_DIGITS = /^\d{10,15}$/;

function toNormalized(e164: string): NormalizedPhone {
  return { e164, digits: e164.replace(/^\+/, '') };
}

/**
 * The client's phone as the event log (src/event-log.ts) stores and searches it: international digits, normalized by
 * the one phone normaliser with the portal's default country. Undefined when there is no valid
 * number. A robot run's is normalised by the worker and stored with its finish (src/jobs/kinds/robot.ts;
 * only a call refused at acceptance gets it there, src/jobs/robot-calls.ts); a closed episode's
 * comes with its result (`phone`, src/db/jobs.ts `finish`) or, when it fails, is kept as soon as it
 * failed after reading it (JobStore.notePhone).
 */
export function searchablePhone(value: unknown, defaultCountry?: string | null): string | undefined {
  const input = typeof value === 'string' ? value : Array.isArray(value) && value.every((item) => typeof item === 'string') ? (value as string[]) : undefined;
  if (input === undefined) return undefined;
  try {
    return normalizePhone(input, defaultCountry ?? undefined)?.digits;
  } catch {
    return undefined; // beyond the normaliser's bounds: the robot's own schema refuses it
  }
}
