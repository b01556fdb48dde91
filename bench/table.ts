/** One line of the README's benchmark table: our figure against a baseline measured in the same run. */
export interface Row {
  figure: string;
  ours: string;
  baseline: string;
  ratio: string;
  target: string;
}

/** What one benchmark module hands to bench/run.ts: its table rows and the sentences printed under the table. */
export interface Section {
  rows: Row[];
  notes: string[];
}

export function fmt(value: number, digits = 2): string {
  return value.toFixed(digits);
}

export function verdict(ok: boolean): string {
  return ok ? 'met' : 'MISSED';
}

export function renderTable(sections: Section[], heading: string): string {
  return [
    heading,
    '',
    '| figure | ours | baseline | ratio | target |',
    '|---|---|---|---|---|',
    ...sections.flatMap((section) => section.rows.map((row) => `| ${row.figure} | ${row.ours} | ${row.baseline} | ${row.ratio} | ${row.target} |`)),
    '',
    // A blank line between notes, so each stays its own paragraph in the README.
    sections.flatMap((section) => section.notes).join('\n\n'),
  ].join('\n');
}
