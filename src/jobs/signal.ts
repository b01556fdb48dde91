/** Wakes a sleeping loop early; `wait` resolves on `notify` or after `ms`, whichever is first. */
export class Signal {
  #wake: (() => void) | undefined;
  #pending = false;

  notify(): void {
    this.#pending = true;
    this.#wake?.();
  }

  wait(ms: number): Promise<void> {
    if (this.#pending) {
      this.#pending = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const timer = setTimeout(done, Math.max(0, ms));
      const self = this;
      function done() {
        clearTimeout(timer);
        self.#wake = undefined;
        self.#pending = false;
        resolve();
      }
      this.#wake = done;
    });
  }
}
