import { openDatabase } from '../src/db/database.js';
const h = openDatabase('/tmp/r2b.db');
const n = (h.sqlite.prepare("select count(*) as n from jobs where member_id='p' and state='confirming'").get() as any).n;
console.log('confirming p', n);
const cond = (bound: number) => `select 1 where coalesce((select max(id) from jobs where member_id = 'p' and state = 'confirming') - (select min(id) from jobs where member_id = 'p' and state = 'confirming') + 1, 0) < ${bound}
  or (select count(*) from (select 1 from jobs where member_id = 'p' and state = 'confirming' limit ${bound})) < ${bound}`;
console.log(h.sqlite.prepare('explain query plan ' + cond(1000000)).all().map((r: any) => r.detail));
for (const b of [1000000, 2000, 100]) {
  const s = h.sqlite.prepare(cond(b));
  const t = performance.now(); for (let i = 0; i < 2000; i++) s.get(); console.log('bound', b, 'us', ((performance.now() - t) / 2000) * 1000, s.get());
}
h.close();
