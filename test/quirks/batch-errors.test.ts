import { describe, expect, it } from 'vitest';
import { commandErrorKind, describeCommandError } from '../../src/bitrix24/batch-errors.js';

const error = (code: string, description = '') => ({ error: code, error_description: description });

describe('Errors of one command in a batch', () => {
  it.each(['QUERY_LIMIT_EXCEEDED', 'OPERATION_TIME_LIMIT', 'OVERLOAD_LIMIT', 'INTERNAL_SERVER_ERROR', 'ERROR_UNEXPECTED_ANSWER', 'expired_token'])(
    '%s clears by waiting',
    (code) => {
      expect(commandErrorKind(error(code))).toBe('transient');
    },
  );

  it('ACCESS_DENIED says the event token is not waited for', () => {
    expect(commandErrorKind(error('ACCESS_DENIED', 'Access denied'))).toBe('access_denied');
  });

  it('a robot already installed, or a handler already bound, is already done', () => {
    expect(commandErrorKind(error('ERROR_ACTIVITY_ALREADY_INSTALLED', 'Activity or Automation rule already installed!'))).toBe('already_done');
    expect(commandErrorKind(error('ERROR_CORE', 'Handler already binded'))).toBe('already_done');
  });

  it.each([error('ERROR_ACTIVITY_VALIDATION_FAILURE', 'Empty data!'), error('ERROR_CORE', 'Something else'), error('access_denied'), error('query_limit_exceeded'), error('')])(
    '%j is a refusal that repeating will not change',
    (refusal) => {
      expect(commandErrorKind(refusal)).toBe('refused');
    },
  );

  it('is described by code and description, without a trailing space when there is no description', () => {
    expect(describeCommandError(error('ERROR_CORE', 'Handler already binded'))).toBe('ERROR_CORE Handler already binded');
    expect(describeCommandError(error('ACCESS_DENIED'))).toBe('ACCESS_DENIED');
  });
});
