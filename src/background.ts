import type { Logger } from './log.js';

/** Work started after an answer was sent (cache fills, re-registration); shutdown and tests can wait for it. */
export class BackgroundTasks {
  readonly #running = new Set<Promise<void>>();

  constructor(private readonly log: Logger) {}

  run(name: string, work: () => Promise<unknown>, context: Record<string, unknown> = {}): void {
    const task = work()
      .then(() => undefined)
      .catch((error: unknown) => this.log.warn({ ...context, task: name, err: error instanceof Error ? error.message : String(error) }, 'background task failed'))
      .finally(() => this.#running.delete(task));
    this.#running.add(task);
  }

  async idle(): Promise<void> {
    while (this.#running.size > 0) await Promise.all([...this.#running]);
  }
}
