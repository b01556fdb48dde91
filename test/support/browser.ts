import { existsSync, mkdirSync } from 'node:fs';
import sparticuz from '@sparticuz/chromium';
import { type Browser, chromium } from 'playwright-core';
import { afterAll, beforeAll } from 'vitest';

/** Screenshots of every page state, for a person to look at (gitignored). */
export const ARTIFACTS = 'test-artifacts';

/**
 * A headless Chromium with nothing beyond `npm ci`: @sparticuz/chromium ships a Chromium build inside
 * the npm package and unpacks it on first use. CHROMIUM_PATH points at another build (Debian's
 * /usr/bin/chromium, say) for those who prefer one.
 */
export async function launchChromium(): Promise<Browser> {
  const custom = process.env.CHROMIUM_PATH;
  if (custom && !existsSync(custom)) throw new Error(`CHROMIUM_PATH=${custom} does not exist`);
  const executablePath = custom || (await sparticuz.executablePath());
  return chromium.launch({
    executablePath,
    // The machine has no outside network: without these Chromium keeps trying to reach Google.
    args: [
      // Not sparticuz.args: those are for a one-page Lambda (--single-process ends the browser with its first page).
      '--no-sandbox',
      '--disable-gpu',
      '--disable-dev-shm-usage',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
  });
}

/**
 * One Chromium for a page test file: launched (and the artifacts folder made) before its tests,
 * closed after them. Call at the top of the file's describe; the returned function gives the browser.
 */
export function chromiumForFile(): () => Browser {
  let browser: Browser | undefined;
  beforeAll(async () => {
    mkdirSync(ARTIFACTS, { recursive: true });
    browser = await launchChromium();
  });
  afterAll(() => browser?.close());
  return () => {
    if (!browser) throw new Error('Chromium is not running: chromiumForFile() must be called in the describe, before the tests');
    return browser;
  };
}
