/**
 * npm run bench: speed and memory figures, each a ratio against a baseline measured in the same run.
 * Each module returns its rows of the table (bench/table.ts); add a benchmark with one more
 * entry in `benchmarks`. The figures are printed and written into README.md between the bench markers.
 * `npm run bench -- burst unknown-limit` runs only the named ones and leaves the README alone
 * (`npm run bench -- ol`: the Open Channels inbound burst).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { ackBenchmark } from './ack.js';
import { appPageBenchmark } from './app-page.js';
import { tabBenchmark } from './tab.js';
import { burstBenchmark } from './burst.js';
import { episodesBenchmark } from './episodes.js';
import { findDialogsBenchmark } from './find-dialogs.js';
import { unknownLimitBenchmark } from './unknown-limit.js';
import { openChannelsBenchmark } from './open-channels.js';
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
const chosen = process.argv.slice(2);
const unknown = chosen.filter((name) => !(name in benchmarks));
if (unknown.length > 0) throw new Error(`unknown benchmark ${unknown.join(', ')}; there are ${Object.keys(benchmarks).join(', ')}`);
const sections: Section[] = [];
for (const [name, run] of Object.entries(benchmarks)) if (chosen.length === 0 || chosen.includes(name)) sections.push(await run());
const table = renderTable(
  sections,
  `Measured ${new Date().toISOString().slice(0, 10)} on ${process.platform}/${process.arch}, Node ${process.version}; both sides of every ratio in the same run.`,
);
console.log(table);

const readmePath = new URL('../README.md', import.meta.url);
try {
  const readme = readFileSync(readmePath, 'utf8');
  const start = '<!-- bench:start -->';
  const end = '<!-- bench:end -->';
  if (chosen.length === 0 && readme.includes(start) && readme.includes(end)) {
    writeFileSync(readmePath, `${readme.slice(0, readme.indexOf(start) + start.length)}\n${table}\n${readme.slice(readme.indexOf(end))}`);
    console.log('\nREADME.md updated.');
  }
} catch {
  // No README next to the bench (e.g. a partial checkout): the printed table is the result.
}
process.exit(0);
