import Handlebars from 'handlebars';
import { readFileSync } from 'node:fs';
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
