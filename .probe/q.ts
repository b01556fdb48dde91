import { openDatabase } from '../src/db/database.js';
const h = openDatabase('/tmp/r2b.db');
console.log(h.sqlite.prepare("explain query plan select count(*) from (select 1 from jobs where member_id = 'p' and state = 'confirming' limit 2000)").all());
console.log(h.sqlite.prepare("explain query plan insert into jobs (kind, public_id, member_id, input, state, run_at, deadline_at, created_at, updated_at) select 'k', 'x', 'p', '{}', 'confirming', 1, 1, 1, 1 where (select count(*) from (select 1 from jobs where member_id = 'p' and state = 'confirming' limit 2000)) < 2000 on conflict do nothing").all());
const s = h.sqlite.prepare("select count(*) as n from (select 1 from jobs where member_id = 'p' and state = 'confirming' limit 2000)");
let t = performance.now(); for (let i = 0; i < 2000; i++) s.get(); console.log('count up to 2000 us', ((performance.now() - t) / 2000) * 1000, s.get());
const s2 = h.sqlite.prepare("select count(*) as n from (select 1 from jobs where member_id = 'p' and state = 'confirming' limit 100)");
t = performance.now(); for (let i = 0; i < 2000; i++) s2.get(); console.log('count up to 100 us', ((performance.now() - t) / 2000) * 1000);
h.close();
