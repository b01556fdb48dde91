import { describe, expect, it } from 'vitest';
import { isAdminProfile, refusesToken } from '../../src/bitrix24/admin.js';
import { Bitrix24Error, Bitrix24TransportError } from '../../src/bitrix24/errors.js';

describe('The portal-admin check', () => {
  it.each([true, 'Y', '1', 1, 'true'])('a profile with ADMIN %j is an administrator', (ADMIN) => {
    expect(isAdminProfile({ ADMIN })).toBe(true);
  });

  it.each([false, 'N', '0', 0, '', 'y', null])('a profile with ADMIN %j is not', (ADMIN) => {
    expect(isAdminProfile({ ADMIN })).toBe(false);
  });

  it('a profile without ADMIN, or no profile, is not', () => {
    expect(isAdminProfile({})).toBe(false);
    expect(isAdminProfile(null)).toBe(false);
    expect(isAdminProfile(undefined)).toBe(false);
  });

  it('a 4xx refusal of profile refuses the token', () => {
    expect(refusesToken(new Bitrix24Error('profile', 'invalid_token', 'Unable to get application by token', 401))).toBe(true);
    expect(refusesToken(new Bitrix24Error('profile', 'expired_token', '', 401))).toBe(true);
  });

  it('load, a 5xx or the network says nothing about the token', () => {
    expect(refusesToken(new Bitrix24Error('profile', 'QUERY_LIMIT_EXCEEDED', '', 503))).toBe(false);
    expect(refusesToken(new Bitrix24Error('profile', 'OPERATION_TIME_LIMIT', '', 400))).toBe(false);
    expect(refusesToken(new Bitrix24Error('profile', 'INTERNAL_SERVER_ERROR', '', 500))).toBe(false);
    expect(refusesToken(new Bitrix24TransportError('profile', new Error('socket hang up')))).toBe(false);
    expect(refusesToken(new Error('anything'))).toBe(false);
  });
});
