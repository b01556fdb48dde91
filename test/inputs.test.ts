import { connect } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { EXCERPT_LENGTH, excerpt } from '../src/activities/activity.js';
import { PHONE_MAX_LENGTH, PHONE_MAX_VALUES, normalizePhone, phoneBoundsProblem } from '../src/phone.js';
import { eventually, install, installAndConfigure, startStack, type Stack } from './support/stack.js';

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

  it('refuses an event token with control characters (400, nothing stored), and a call sent with it is stored', async () => {
    // PostgreSQL refuses a NUL in text: stored together, such a call failed its batch-mates' statement.
    const genuine = stack.b24.robotCallBody({ code: 'c2d_send_message', properties: { phone: '+7 916 123-45-67', text: 'hello' } });
    const forged = stack.b24.robotCallBody({ code: 'c2d_send_message', properties: { phone: '+7 916 123-45-67', text: 'hello' } });
    const post = (body: string) => fetch(`${stack.server.url}/bitrix24/robot`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body });
    const [refused, accepted] = await Promise.all([post(forged.body.replace(/event_token=[^&]*/, `event_token=${encodeURIComponent('wf|act|\u0000')}`)), post(genuine.body)]);
    expect(refused.status).toBe(400);
    expect(await refused.json()).toEqual({ error: 'event_token holds control characters' });
    expect(accepted.status).toBe(200);
    expect(await stack.db.rows('select event_token from jobs where event_token is not null')).toEqual([{ event_token: genuine.eventToken }]);
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

describe('HTTP edges', () => {
  let stack: Stack;
  beforeEach(async () => {
    stack = await startStack();
    await install(stack);
  });
  afterEach(() => stack.close());

  /**
   * Starts a robot-call upload on a raw socket and closes it halfway, as a client that gives up
   * would. `Expect: 100-continue` makes the server say when it has taken the request in.
   */
  async function abortUpload(framing: string, partialBody: string): Promise<void> {
    const socket = connect(stack.server.port, '127.0.0.1');
    const taken = new Promise((resolve) => socket.once('data', resolve));
    socket.write(`POST /bitrix24/robot HTTP/1.1\r\nHost: test\r\nContent-Type: application/x-www-form-urlencoded\r\nExpect: 100-continue\r\n${framing}\r\n\r\n`);
    expect(String(await taken)).toMatch(/^HTTP\/1\.1 100 Continue/);
    await new Promise((resolve) => socket.write(partialBody, resolve));
    socket.destroy();
  }

  it('logs an aborted upload below error level: a client leaving is not a server failure', async () => {
    const parsed = () => stack.logs.map((line) => JSON.parse(line) as { level: number; msg: string });
    // Whatever the server makes of it, it says so in the log: that line is what the test waits for.
    const aborts = () => parsed().filter((line) => line.msg === 'client went away before the request was read' || line.msg === 'request failed');
    await abortUpload('Content-Length: 100000', 'code=c2d_send_message&properties%5Bphone%5D=');
    await eventually(() => aborts().length === 1, 10_000, 'the aborted upload in the log');
    // Without a length the body limit reads the body first, in its middleware.
    await abortUpload('Transfer-Encoding: chunked', '20\r\ncode=c2d_send_message&properties');
    await eventually(() => aborts().length === 2, 10_000, 'the second aborted upload in the log');
    expect(aborts().map((line) => line.level)).toEqual([20, 20]);
    expect(parsed().filter((line) => line.level >= 50)).toEqual([]);
  });

  it('refuses a content type that only starts like a form (415), and accepts a form with a charset', async () => {
    const { body } = stack.b24.robotCallBody({ code: 'c2d_find_dialogs', properties: { phone: '+7 916 123-45-67' } });
    const post = (type: string) => fetch(`${stack.server.url}/bitrix24/robot`, { method: 'POST', headers: { 'content-type': type }, body });
    const evil = await post('application/x-www-form-urlencoded-evil');
    expect(evil.status).toBe(415);
    expect(await evil.json()).toEqual({ error: 'Bitrix24 posts application/x-www-form-urlencoded bodies' });
    expect((await post('application/x-www-form-urlencodedX; charset=UTF-8')).status).toBe(415);
    expect(await stack.server.jobs.depth()).toMatchObject({ queued: 0, running: 0, reporting: 0 });
    const withCharset = await post('Application/X-WWW-Form-Urlencoded ; charset=UTF-8');
    expect(withCharset.status).toBe(200);
    expect(await withCharset.json()).toMatchObject({ status: 'accepted' });
  });
});
