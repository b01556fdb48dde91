import { describe, expect, it } from 'vitest';
import { isYes, phpList, phpMap, timelineOwner, yesNo } from '../../src/bitrix24/values.js';

describe('Bitrix24 booleans', () => {
  it.each([true, 1, 'Y', '1', 'true', 'TRUE', 'True'])('reads %j as yes', (value) => {
    expect(isYes(value)).toBe(true);
  });

  it.each([false, 0, 2, 'N', '0', 'y', 'yes', 'false', '', ' Y', null, undefined, {}, ['Y']])('reads %j as no', (value) => {
    expect(isYes(value)).toBe(false);
  });

  it('writes Y and N', () => {
    expect(yesNo(true)).toBe('Y');
    expect(yesNo(false)).toBe('N');
    expect(yesNo(undefined)).toBe('N');
  });
});

describe('PHP lists and maps', () => {
  it('reads a list from an array or from an object keyed by index (a list with gaps)', () => {
    expect(phpList(['a', 'b'])).toEqual(['a', 'b']);
    expect(phpList({ 0: 'a', 2: 'c' })).toEqual(['a', 'c']);
  });

  it('reads anything else as an empty list', () => {
    for (const value of ['a', 1, null, undefined, true]) expect(phpList(value)).toEqual([]);
  });

  it("reads a map from an object, and PHP's empty map [] as an empty map", () => {
    expect(phpMap({ job1: true })).toEqual({ job1: true });
    expect(phpMap([])).toEqual({});
  });

  it('reads a non-empty array, a string or nothing as an empty map', () => {
    for (const value of [['a'], 'a', 1, null, undefined]) expect(phpMap(value)).toEqual({});
  });
});

describe('The timeline owner of a workflow document', () => {
  it.each([
    [['crm', 'CCrmDocumentLead', 'LEAD_7'], { entityType: 'lead', entityId: 7 }],
    [['crm', 'CCrmDocumentDeal', 'DEAL_12'], { entityType: 'deal', entityId: 12 }],
    [['crm', 'CCrmDocumentContact', 'CONTACT_3'], { entityType: 'contact', entityId: 3 }],
    [['crm', 'CCrmDocumentCompany', 'COMPANY_44'], { entityType: 'company', entityId: 44 }],
    [['crm', 'Bitrix\\Crm\\Integration\\BizProc\\Document\\Dynamic', 'DYNAMIC_128_5'], { entityType: 'dynamic_128', entityId: 5 }],
  ])('finds the owner of %j', (documentId, owner) => {
    expect(timelineOwner(documentId)).toEqual(owner);
  });

  it.each([
    [['lists', 'BizprocDocument', '12']],
    [['disk', 'Bitrix\\Disk\\BizProcDocument', 'DEAL_1']],
    [['crm', 'CCrmDocumentDeal', 'deal_1']],
    [['crm', 'CCrmDocumentDeal', 'DEAL_']],
    [['crm', 'CCrmDocumentDeal', 'DEAL_1_2']],
    [['crm', 'CCrmDocumentDeal', 'INVOICE_1']],
    [['crm', 'CCrmDocumentDeal', 'DYNAMIC_128']],
    [['crm', 'CCrmDocumentDeal']],
    [[]],
  ])('finds no owner for %j', (documentId) => {
    expect(timelineOwner(documentId)).toBeUndefined();
  });
});
