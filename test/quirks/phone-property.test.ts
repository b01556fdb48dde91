import * as v from 'valibot';
import { describe, expect, it } from 'vitest';
import { RobotFailure } from '../../src/activities/activity.js';
import { optionalPhoneEntry, phoneGiven, phoneOrFail, requiredPhoneEntry } from '../../src/activities/phone-property.js';

const issues = (schema: v.GenericSchema, value: unknown) => {
  const parsed = v.safeParse(schema, value);
  return parsed.success ? [] : parsed.issues.map((issue) => issue.message);
};

describe('The phone property', () => {
  it('accepts a number or a phone field', () => {
    expect(issues(requiredPhoneEntry, '+7 916 123-45-67')).toEqual([]);
    expect(issues(requiredPhoneEntry, ['', '+7 916 123-45-67'])).toEqual([]);
  });

  it.each([[''], ['  '], [[]], [['', ' ']], [undefined], [7]])('requires a phone, refusing %j', (value) => {
    expect(issues(requiredPhoneEntry, value)).toEqual(['phone is required']);
  });

  it('refuses an oversized value before parsing it', () => {
    expect(issues(requiredPhoneEntry, '1'.repeat(151))).toEqual(['phone is longer than 150 characters']);
    expect(
      issues(
        requiredPhoneEntry,
        Array.from({ length: 11 }, () => '+79161234567'),
      ),
    ).toEqual(['phone has 11 values; at most 10 are accepted']);
  });

  it('may stay empty where another property names the target, but not be of another type', () => {
    expect(v.parse(optionalPhoneEntry, undefined)).toBe('');
    expect(issues(optionalPhoneEntry, '')).toEqual([]);
    expect(issues(optionalPhoneEntry, 7)).toEqual(['phone must be a phone number or a phone field']);
  });

  it('counts as given only when something but blanks is there', () => {
    expect(phoneGiven('1')).toBe(true);
    expect(phoneGiven(['', '1'])).toBe(true);
    expect(phoneGiven(' ')).toBe(false);
    expect(phoneGiven([' '])).toBe(false);
  });

  it('is normalised to international digits', () => {
    expect(phoneOrFail('+7 916 123-45-67', null)).toEqual({ digits: '79161234567', e164: '+79161234567' });
    expect(phoneOrFail(['8 (916) 123-45-67'], 'RU')).toEqual({ digits: '79161234567', e164: '+79161234567' });
  });

  it('fails the run saying what was given, and that a default country is missing when it is', () => {
    expect(() => phoneOrFail('12', null)).toThrow(new RobotFailure('"12" is not a valid phone number (numbers without a country code need a default country in the app settings)'));
    expect(() => phoneOrFail('12', 'RU')).toThrow(new RobotFailure('"12" is not a valid phone number'));
    expect(() => phoneOrFail('12', null)).toThrow(RobotFailure);
  });
});
