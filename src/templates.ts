import Handlebars from 'handlebars';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const templatesDir = fileURLToPath(new URL('../templates/', import.meta.url));

/** Compiles a template from templates/ once; Handlebars escapes every {{value}}. */
export function loadTemplate<T>(name: string): (context: T) => string {
  const compiled = Handlebars.compile(readFileSync(`${templatesDir}${name}.hbs`, 'utf8'), { strict: false });
  return (context: T) => compiled(context);
}
