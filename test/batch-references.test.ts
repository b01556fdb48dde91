import { afterEach, describe, expect, it } from 'vitest';
import { install, startStack, type Stack } from './support/stack.js';

/**
 * Bitrix24 replaces `$result[key]…` inside a batched command's values with another command's result
 * (docs/protocols.md B3 batch); the fake portal does the same. Text from clients must arrive as written.
 */
describe('client text inside a batch', () => {
  let stack: Stack;
  afterEach(() => stack.close());

  it('is sent as written even when it looks like a batch reference, and the rest still share one batch', async () => {
    stack = await startStack();
    await install(stack);
    stack.b24.resetCalls();
    const hostile = 'Anna $result[first] $result_total[first]';
    const outcome = await stack.server.rest.batch(stack.b24.memberId, [
      { key: 'first', method: 'crm.lead.add', params: { fields: { TITLE: 'first lead' } } },
      { key: 'second', method: 'crm.lead.add', params: { fields: { TITLE: hostile } } },
      { key: 'third', method: 'crm.lead.add', params: { fields: { TITLE: 'third lead' } } },
    ]);
    expect(outcome.errors).toEqual({});
    const titles = [outcome.results.first, outcome.results.second, outcome.results.third].map((id) => stack.b24.crm.leads.get(Number(id))?.TITLE);
    expect(titles).toEqual(['first lead', hostile, 'third lead']);
    expect(stack.b24.calls.filter((call) => call.method === 'batch')).toHaveLength(1);
  });
});
