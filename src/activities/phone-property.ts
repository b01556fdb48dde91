import * as v from 'valibot';
import { normalizePhone, withinPhoneBounds, type NormalizedPhone } from '../phone.js';
import { RobotFailure, excerpt, localized, type PropertyDefinition } from './activity.js';

/**
 * The client's phone as a robot property: a number, or a Bitrix24 phone field, which arrives as
 * several values or as its printable text (src/phone.ts reads both).
 */
export type PhoneValue = string | string[];

/** True when the property holds anything but blanks. */
export const phoneGiven = (value: PhoneValue) => (Array.isArray(value) ? value.some((item) => item.trim() !== '') : value.trim() !== '');

/** The property of a robot that needs the phone. */
export const requiredPhoneProperty: PropertyDefinition = {
  name: localized('Client phone', 'Телефон клиента', 'Teléfono del cliente'),
  description: localized(
    'A phone field or a number; the first valid number is used',
    'Поле телефона или номер; берётся первый корректный',
    'Un campo de teléfono o un número; se usa el primero válido',
  ),
  type: 'string',
  required: true,
};

/** Schema of a required phone: bounded before it is parsed, refused when blank. */
export const requiredPhoneEntry = v.pipe(v.union([v.string(), v.array(v.string())], 'phone is required'), withinPhoneBounds, v.check(phoneGiven, 'phone is required'));

/** Schema of a phone that may stay empty (another property names the target instead). */
export const optionalPhoneEntry = v.optional(v.pipe(v.union([v.string(), v.array(v.string())], 'phone must be a phone number or a phone field'), withinPhoneBounds), '');

/** The phone, normalised; a value with no valid number fails the run saying what was given and what to fix. */
export function phoneOrFail(value: PhoneValue, defaultCountry: string | null): NormalizedPhone {
  const phone = normalizePhone(value, defaultCountry ?? undefined);
  if (!phone) {
    throw new RobotFailure(
      `"${excerpt(value)}" is not a valid phone number${defaultCountry ? '' : ' (numbers without a country code need a default country in the app settings)'}`,
    );
  }
  return phone;
}
