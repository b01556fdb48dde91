import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { EXCERPT_LENGTH, excerpt } from '../src/activities/activity.js';
import { PHONE_MAX_LENGTH, PHONE_MAX_VALUES, normalizePhone, phoneBoundsProblem } from '../src/phone.js';
import { eventually, installAndConfigure, startStack, type Stack } from './support/stack.js';

/** 240 KB of "1 ": under the body limit, and 2.7 s of libphonenumber's text search if it were parsed. */
const HUGE_PHONE = '1 '.repeat(120_000);

describe('phone bounds, checked before any parsing', () => {
  it('refuses a huge value before parsing it: a RangeError, not "no valid number"', () => {
    expect(phoneBoundsProblem(HUGE_PHONE)).toBe(`phone is longer than ${PHONE_MAX_LENGTH} characters`);
    // Parsed, this text holds no valid number and would give undefined after seconds of work.
    expect(() => normalizePhone(HUGE_PHONE, 'RU')).toThrow(new RangeError(`phone is longer than ${PHONE_MAX_LENGTH} characters`));
  });

  it('refuses a phone field with more values than a contact has numbers', () => {
    const many = Array.from({ length: PHONE_MAX_VALUES + 1 }, (_, index) => `+7 916 123-45-${String(index).padStart(2, '0')}`);
    expect(phoneBoundsProblem(many)).toBe(`phone has ${PHONE_MAX_VALUES + 1} values; at most ${PHONE_MAX_VALUES} are accepted`);
    expect(() => normalizePhone(many)).toThrow(RangeError);
    expect(normalizePhone(many.slice(0, PHONE_MAX_VALUES))?.digits).toBe('79161234500');
  });

  it('still reads what a Bitrix24 phone field gives: values, printable text, empty entries', () => {
    expect(phoneBoundsProblem(['', '+7 916 123-45-67', ' '])).toBeUndefined();
    expect(normalizePhone('Mobile: +7 916 123-45-67, work: +7 495 123-45-67', 'RU')?.digits).toBe('79161234567');
    expect(normalizePhone(` ${'8 916 123-45-67'.padEnd(PHONE_MAX_LENGTH)} `, 'RU')?.digits).toBe('79161234567');
  });

  it('cuts a value repeated in an error to a readable length, saying how long it was', () => {
    expect(excerpt('short')).toBe('short');
    const cut = excerpt(HUGE_PHONE);
    expect(cut).toHaveLength(EXCERPT_LENGTH + ' (240000 characters)'.length + 1);
    expect(cut.endsWith('… (240000 characters)')).toBe(true);
    // A surrogate pair on the cut is dropped whole, not halved.
    expect(excerpt(`${'a'.repeat(EXCERPT_LENGTH - 1)}😀tail`)).toBe(`${'a'.repeat(EXCERPT_LENGTH - 1)}… (${EXCERPT_LENGTH + 5} characters)`);
  });
});

describe('robot calls with oversized properties', () => {
  let stack: Stack;
  beforeEach(async () => {
    stack = await startStack();
    await installAndConfigure(stack, { defaultCountry: 'RU' });
  });
  afterEach(() => stack.close());

  const result = (eventToken: string) => eventually(() => stack.b24.sentEvents.find((event) => event.eventToken === eventToken), 10_000, `result of ${eventToken}`);

  it('fails huge phones at acceptance with a short error while another robot call is answered', async () => {
    stack.c2d.seedClient({ phone: '79161234567', name: 'Ivan Petrov', transport: 'whatsapp', channelId: 17404, withDialog: 'open' });
    const huge = Array.from({ length: 5 }, () => stack.b24.callRobot({ code: 'c2d_send_message', properties: { phone: HUGE_PHONE, text: 'hello' } }));
    const normal = stack.b24.callRobot({ code: 'c2d_find_dialogs', properties: { phone: '+7 916 123-45-67' } });
    const calls = await Promise.all([...huge, normal]);
    expect(calls.map((call) => call.status)).toEqual([200, 200, 200, 200, 200, 200]);
    // Refused at acceptance: the job is born failed and never reaches a worker.
    for (const call of calls.slice(0, 5)) expect(JSON.parse(call.text)).toMatchObject({ status: 'accepted' });

    const found = await result(calls[5]!.eventToken);
    expect(found.returnValues).toMatchObject({ status: 'ok', found: 'Y' });
    for (const call of calls.slice(0, 5)) {
      const failed = await result(call.eventToken);
      expect(failed.returnValues).toMatchObject({ status: 'failed', error: 'Send Chat2Desk message: phone is longer than 8192 characters' });
      expect(failed.logMessage).toBe('Chat2Desk message not sent: Send Chat2Desk message: phone is longer than 8192 characters');
    }
    expect(stack.c2d.calls.filter((call) => call.method === 'POST')).toEqual([]);
  });

  it("fails a phone over the robot's own bound without parsing it, for every robot with a phone", async () => {
    const long = '1 '.repeat(500);
    const cases: Array<{ code: string; properties: Record<string, string | string[]> }> = [
      { code: 'c2d_send_message', properties: { phone: long, text: 'hello' } },
      { code: 'c2d_find_dialogs', properties: { phone: [long] } },
      { code: 'c2d_tag_dialog', properties: { phone: long, tags: 'VIP' } },
      { code: 'c2d_assign_operator', properties: { phone: long, operator_id: '311416' } },
      { code: 'c2d_log_dialog', properties: { phone: long } },
    ];
    const calls = await Promise.all(cases.map((input) => stack.b24.callRobot(input)));
    for (const call of calls) {
      const failed = await result(call.eventToken);
      expect(failed.returnValues.status).toBe('failed');
      expect(failed.returnValues.error).toMatch(new RegExp(`: phone is longer than ${PHONE_MAX_LENGTH} characters$`));
    }
    expect(stack.c2d.calls).toEqual([]);
  });

  it('fails a property with more values than any robot reads, naming it', async () => {
    const call = await stack.b24.callRobot({ code: 'c2d_tag_dialog', properties: { dialog_id: '1', tags: Array.from({ length: 60 }, (_, index) => `tag${index}`) } });
    const failed = await result(call.eventToken);
    expect(failed.returnValues).toMatchObject({ status: 'failed', error: 'Tag dialog: tags has 60 values; at most 50 are accepted' });
  });

  it('cuts an unknown robot code echoed back to the workflow', async () => {
    const code = `c2d_${'x'.repeat(5000)}`;
    const { body, eventToken } = stack.b24.robotCallBody({ code, properties: {} });
    const response = await fetch(`${stack.server.url}/bitrix24/robot`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body });
    expect(response.status).toBe(200);
    const failed = await result(eventToken);
    // Bitrix24 keeps only declared return values, and an unknown robot declares none: LOG_MESSAGE shows it.
    expect(failed.logMessage).toBe(`Unknown robot code ${excerpt(code)}`);
    expect(failed.logMessage!.length).toBeLessThan(200);
  });
});
