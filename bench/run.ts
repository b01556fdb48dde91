/**
 * npm run bench: speed and memory figures, each a ratio against a baseline measured in the same run.
 * Each module returns its rows of the table (bench/table.ts); add a benchmark with one more
 * entry in `benchmarks`. The figures are printed and written into README.md between the bench markers.
 * `npm run bench -- burst unknown-limit` runs only the named ones and leaves the README alone
 * (`npm run bench -- ol`: the Open Channels inbound burst).
 * `npm run bench -- --db postgres --processes 1,2` runs only the PostgreSQL figures (bench/postgres.ts:
 * 1 and 2 server processes on one PostgreSQL against 1 on SQLite); the full run includes them, with
 * 1 and 2 processes, as a section of their own.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { ackBenchmark } from './ack.js';
import { appPageBenchmark } from './app-page.js';
import { tabBenchmark } from './tab.js';
import { burstBenchmark } from './burst.js';
import { episodesBenchmark } from './episodes.js';
import { findDialogsBenchmark } from './find-dialogs.js';
import { unknownLimitBenchmark } from './unknown-limit.js';
import { openChannelsBenchmark } from './open-channels.js';
import { postgresBenchmark } from './postgres.js';
import { renderTable, type Section } from './table.js';

const benchmarks: Record<string, () => Promise<Section>> = {
  ack: ackBenchmark,
  burst: burstBenchmark,
  'find-dialogs': findDialogsBenchmark,
  'unknown-limit': () => unknownLimitBenchmark(),
  episodes: episodesBenchmark,
  'app-page': appPageBenchmark,
  tab: tabBenchmark,
  ol: openChannelsBenchmark,
};
const { values: options, positionals: chosen } = parseArgs({
  allowPositionals: true,
  options: { db: { type: 'string' }, processes: { type: 'string' } },
});
if (options.db !== undefined && options.db !== 'postgres') throw new Error(`--db ${options.db}: only postgres has a benchmark of its own (SQLite is every other one)`);
const processCounts = (options.processes ?? '1,2').split(',').map(Number);
if (processCounts.some((count) => !Number.isInteger(count) || count < 1)) throw new Error(`--processes ${options.processes}: a list of process counts such as 1,2`);
const unknown = chosen.filter((name) => !(name in benchmarks));
if (unknown.length > 0) throw new Error(`unknown benchmark ${unknown.join(', ')}; there are ${Object.keys(benchmarks).join(', ')}`);
const everything = chosen.length === 0 && options.db === undefined;
const sections: Section[] = [];
for (const [name, run] of Object.entries(benchmarks)) if (everything || chosen.includes(name)) sections.push(await run());
const measured = `Measured ${new Date().toISOString().slice(0, 10)} on ${process.platform}/${process.arch}, Node ${process.version}; both sides of every ratio in the same run.`;
const tables: string[] = [];
if (sections.length > 0) tables.push(renderTable(sections, measured));
if (everything || options.db === 'postgres')
  tables.push(
    renderTable(
      [await postgresBenchmark(processCounts)],
      `### Several processes on one PostgreSQL\n\n${measured} Run alone: \`npm run bench -- --db postgres --processes ${processCounts.join(',')}\`.`,
    ),
  );
const table = tables.join('\n\n');
console.log(table);

const readmePath = new URL('../README.md', import.meta.url);
try {
  const readme = readFileSync(readmePath, 'utf8');
  const start = '<!-- bench:start -->';
  const end = '<!-- bench:end -->';
  if (everything && readme.includes(start) && readme.includes(end)) {
    writeFileSync(readmePath, `${readme.slice(0, readme.indexOf(start) + start.length)}\n${table}\n${readme.slice(readme.indexOf(end))}`);
    console.log('\nREADME.md updated.');
  }
} catch {
  // No README next to the bench (e.g. a partial checkout): the printed table is the result.
}
process.exit(0);
