/**
 * `taskfarm keygen`: writes a new farm key.
 */
import { parseArgs } from 'node:util';
import { defaultKeyPath, generateFarmKey, writeNewKeyFile } from '../src/index.js';

export const KEYGEN_HELP = `Usage: taskfarm keygen [--out FILE|-] [--force]

Writes a new random 256-bit farm key as one line of base64url text, in a file of mode 0600.
Every daemon and client of a farm needs the same key: copy the file to the same path on each
machine (or pass --key-file, or set TASKFARM_KEY to its text). Only key holders can recruit the
farm's workers, and a client only sends code and tasks to workers that prove the key.

Options:
  --out FILE     where to write it (default ${defaultKeyPath()}); - prints it on stdout
  --force        replace an existing key file (every machine then needs the new key)
  -h, --help     show this help
`;

export function runKeygen(argv: readonly string[]): number {
  const { values } = parseArgs({
    args: [...argv],
    options: { out: { type: 'string' }, force: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
    strict: true,
  });
  if (values.help === true) {
    process.stdout.write(KEYGEN_HELP);
    return 0;
  }
  if (values.out === '-') {
    process.stdout.write(generateFarmKey() + '\n');
    return 0;
  }
  const path = values.out ?? defaultKeyPath();
  try {
    writeNewKeyFile(path, values.force === true);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
      process.stderr.write(`taskfarm keygen: ${path} already exists; pass --force to replace it (every machine of the farm then needs the new key)\n`);
      return 1;
    }
    throw err;
  }
  process.stdout.write(`wrote a new farm key to ${path} (mode 0600)\ncopy it to the same path on every machine of the farm, and keep it private\n`);
  return 0;
}
