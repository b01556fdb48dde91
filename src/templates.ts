import Handlebars from 'handlebars';
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const templatesDir = fileURLToPath(new URL('../templates/', import.meta.url));

export interface TemplateOptions {
  /**
   * false: `{{value}}` is not HTML-escaped. Only for text whose destination escapes HTML itself
   * (a Bitrix24 timeline comment); such a template must escape for its own markup with helpers.
   */
  htmlEscape?: boolean;
  /** Helpers for this template only, so templates do not see each other's. */
  helpers?: Record<string, Handlebars.HelperDelegate>;
}

/** Compiles a template from templates/ once; by default Handlebars HTML-escapes every {{value}}. */
export function loadTemplate<T>(name: string, options: TemplateOptions = {}): (context: T) => string {
  const compiled = Handlebars.compile(readFileSync(`${templatesDir}${name}.hbs`, 'utf8'), { strict: false, noEscape: options.htmlEscape === false });
  const runtime = options.helpers ? { helpers: options.helpers } : undefined;
  return (context: T) => compiled(context, runtime);
}

/**
 * The app page (templates/app.hbs) with its partials (templates/partials/<name>.hbs, one per section),
 * in a Handlebars environment of its own so its partials and helpers reach no other template.
 */
export function loadAppTemplate<T>(): (context: T) => string {
  const env = Handlebars.create();
  const partialsDir = `${templatesDir}partials/`;
  for (const file of readdirSync(partialsDir).filter((name) => name.endsWith('.hbs'))) {
    env.registerPartial(file.slice(0, -'.hbs'.length), readFileSync(`${partialsDir}${file}`, 'utf8'));
  }
  env.registerHelper('eq', (a: unknown, b: unknown) => a === b || (a != null && b != null && String(a) === String(b)));
  env.registerHelper('includes', (list: unknown, value: unknown) => Array.isArray(list) && list.some((item) => String(item) === String(value)));
  env.registerHelper('lookupWord', (words: Record<string, string>, prefix: string, key: string) => words[`${prefix}${key}`] ?? key);
  const compiled = env.compile(readFileSync(`${templatesDir}app.hbs`, 'utf8'), { strict: false });
  return (context: T) => compiled(context);
}
