import { type Config, ConfigError, loadConfig, productionGaps } from './config.js';
import { createLogger } from './log.js';
import { type RunningServer, startServer } from './server.js';

let config: Config;
try {
  config = loadConfig();
} catch (error) {
  if (error instanceof ConfigError) {
    console.error(error.message);
    process.exit(2);
  }
  throw error;
}
const log = createLogger(config.logLevel);
let server: RunningServer;
try {
  server = await startServer(config, log);
} catch (error) {
  log.fatal({ err: error instanceof Error ? error.message : String(error) }, 'the server could not start');
  process.exit(1);
}
log.info({ url: server.url, publicUrl: config.publicUrl, database: config.postgresUrl ? 'postgres' : config.databaseFile }, 'chat2desk-bitrix24 is listening');
if (config.postgresUrl) {
  log.info('PostgreSQL: other server processes may share this database (README "Running several processes")');
}
for (const gap of productionGaps()) log.warn(`not ready for production: ${gap}`);

let stopping = false;
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'stopping');
    server.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  });
}
