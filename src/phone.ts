import { findPhoneNumbersInText, parsePhoneNumberFromString, type CountryCode } from 'libphonenumber-js/max';

export interface NormalizedPhone {
  /** International digits without '+', the form Chat2Desk stores (protocols/chat2desk.md §3). */
  digits: string;
  e164: string;
}

/**
 * The one phone normaliser. Accepts what a Bitrix24 phone field gives a robot: an array of values,
 * or its printable text ("+7 916 123-45-67, +7 495 ..."), possibly with a type suffix. The first
 * valid number wins; a number without a country code takes `defaultCountry`.
 */
export function normalizePhone(input: string | string[] | undefined, defaultCountry?: string): NormalizedPhone | undefined {
  const values = (Array.isArray(input) ? input : [input ?? '']).map((value) => value.trim()).filter(Boolean);
  const country = defaultCountry ? (defaultCountry.toUpperCase() as CountryCode) : undefined;
  for (const value of values) {
    const whole = parsePhoneNumberFromString(value, country ? { defaultCountry: country } : undefined);
    if (whole?.isValid()) return toNormalized(whole.number);
    const found = findPhoneNumbersInText(value, country ? { defaultCountry: country } : undefined);
    for (const match of found) if (match.number.isValid()) return toNormalized(match.number.number);
    // Chat2Desk stores numbers as bare international digits; accept those when no country is set.
    if (/^\d{10,15}$/.test(value)) {
      const international = parsePhoneNumberFromString(`+${value}`);
      if (international?.isValid()) return toNormalized(international.number);
    }
  }
  return undefined;
}

function toNormalized(e164: string): NormalizedPhone {
  return { e164, digits: e164.replace(/^\+/, '') };
}
