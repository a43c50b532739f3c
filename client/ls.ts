/**
 * `taskfarm ls`: the workers advertised on the LAN, free and recruited.
 */
import { parseArgs } from 'node:util';
import { MdnsDiscovery, PROTOCOL_VERSION, describeWorker, type AdvertisedWorker } from '../src/index.js';

export const LS_HELP = `Usage: taskfarm ls [options]

Lists the taskfarm workers advertised on the LAN over mDNS (free and recruited), and asks each
one for its live state.

Options:
  --farm NAME         farm to list (default: $TASKFARM_FARM or "default")
  --timeout MS        how long to listen for adverts (default 1000)
  --interface ADDR    use mDNS on this interface address only
  --json              one JSON object per worker instead of a table
  -h, --help          show this help

Columns: ID, HOST, ADDRESSES (in dialing order), PORT, THREADS, STATE (free, recruited, or
unreachable when it does not answer), PROTO (protocol version), SECURITY (key+tls, or INSECURE
for a daemon run with --insecure). A daemon that is shutting down withdraws its advert, so it
leaves the list. With no worker of the farm, it lists the farms whose adverts it did see.
Listing needs no key; using a worker does. Workers on other networks (routed, no multicast) are
not seen: use --peers with them.
`;

interface Row {
  id: string;
  host: string;
  addresses: string[];
  port: number;
  threads: number;
  state: string;
  proto: number;
  farm: string;
  version: string;
  secure: boolean;
}

export async function runLs(argv: readonly string[]): Promise<number> {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      farm: { type: 'string' },
      timeout: { type: 'string' },
      interface: { type: 'string' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help === true) {
    process.stdout.write(LS_HELP);
    return 0;
  }
  const timeout = values.timeout === undefined ? 1000 : Number(values.timeout);
  if (!Number.isInteger(timeout) || timeout < 1) {
    process.stderr.write(`taskfarm ls: --timeout expects a positive integer (ms), got "${values.timeout}"\n`);
    return 2;
  }
  const farm = values.farm ?? (process.env['TASKFARM_FARM'] || 'default');
  const discovery = new MdnsDiscovery({
    farm,
    lookupMs: timeout,
    includeBusy: true,
    protocolVersion: PROTOCOL_VERSION,
    ...(values.interface === undefined ? {} : { interface: values.interface }),
  });
  const warnings: string[] = [];
  discovery.on('warning', (w) => warnings.push(w));
  let workers: AdvertisedWorker[];
  let farmsSeen: string[];
  try {
    await discovery.start();
    workers = discovery.workers();
    farmsSeen = discovery.farmsSeen().filter((f) => f !== farm);
  } finally {
    await discovery.close();
  }
  const rows: Row[] = await Promise.all(
    workers.map(async (w) => {
      let state: string = w.state;
      for (const address of w.addresses) {
        try {
          const target = address.includes(':') ? `[${address}]:${w.port}` : `${address}:${w.port}`;
          state = (await describeWorker(target, 1000, w.advert.secure)).state;
          break;
        } catch {
          state = 'unreachable';
        }
      }
      return {
        id: w.id,
        host: w.advert.hostname,
        addresses: [...w.addresses],
        port: w.port,
        threads: w.advert.threads,
        state,
        proto: w.advert.proto,
        farm: w.advert.farm,
        version: w.advert.version,
        secure: w.advert.secure,
      };
    }),
  );
  rows.sort((a, b) => a.host.localeCompare(b.host) || a.id.localeCompare(b.id));
  for (const w of warnings) process.stderr.write(`taskfarm ls: ${w}\n`);
  if (values.json === true) {
    for (const r of rows) process.stdout.write(JSON.stringify(r) + '\n');
    return 0;
  }
  if (rows.length === 0) {
    process.stderr.write(
      farmsSeen.length > 0
        ? `taskfarm ls: no worker of farm "${farm}" answered within ${timeout} ms; farms seen: ${farmsSeen.join(', ')} ` +
            `(list one with --farm ${farmsSeen[0]})\n`
        : `taskfarm ls: no worker of farm "${farm}" answered within ${timeout} ms, and no taskfarm advert was seen. Check that daemons run ` +
            '(`taskfarm worker`), that UDP port 5353 (mDNS) is open, and that they are on this network segment (routed networks: use --peers).\n',
    );
    return 0;
  }
  const table = [
    ['ID', 'HOST', 'ADDRESSES', 'PORT', 'THREADS', 'STATE', 'PROTO', 'SECURITY'],
    ...rows.map((r) => [r.id, r.host, r.addresses.join(','), String(r.port), String(r.threads), r.state, String(r.proto), r.secure ? 'key+tls' : 'INSECURE']),
  ];
  const widths = table[0]!.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
  for (const row of table)
    process.stdout.write(
      row
        .map((c, i) => c.padEnd(widths[i]!))
        .join('  ')
        .trimEnd() + '\n',
    );
  return 0;
}
