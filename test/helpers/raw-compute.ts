/**
 * Driving a daemon's Compute stream by hand, for tests that send what a TaskFarm never would:
 * install a bundle, open the stream, Start a chain, send task batches, and wait for replies.
 */
import { createHash } from 'node:crypto';
import type { grpc } from '../../dist/src/protocol/grpc.js';
import type { ClientMessage, ResultMessage, WorkerMessage } from '../../dist/src/protocol/messages.js';
import type { RawWorker } from './raw-worker.js';

/** A stage bundle that doubles its input. */
export const DOUBLE_BUNDLE = Buffer.from('export default (x) => x * 2;\n');

export function sha256(code: Uint8Array): string {
  return createHash('sha256').update(code).digest('hex');
}

/** Installs `code` on the lease; returns its hash. */
export async function installBundle(raw: RawWorker, token: string, code: Buffer): Promise<string> {
  const hash = sha256(code);
  const { missing } = await raw.install(token, { hashes: [hash], bundles: [{ hash, code }] }, 5000);
  if (missing.length > 0) throw new Error(`bundle ${hash} still missing after Install`);
  return hash;
}

/** An open Compute stream and everything the worker sent on it. */
export class ComputeSession {
  readonly stream: grpc.ClientDuplexStream<ClientMessage, WorkerMessage>;
  readonly messages: WorkerMessage[] = [];
  readonly results: ResultMessage[] = [];
  /** The stream's error, once it failed. */
  error: grpc.ServiceError | undefined;
  ended = false;
  readonly #waiters = new Set<() => void>();

  constructor(raw: RawWorker, token: string) {
    this.stream = raw.compute(token);
    this.stream.on('data', (m: WorkerMessage) => {
      this.messages.push(m);
      if (m.body === 'results') this.results.push(...m.results.results);
      this.#wake();
    });
    this.stream.on('error', (err: grpc.ServiceError) => {
      this.error = err;
      this.#wake();
    });
    this.stream.on('end', () => {
      this.ended = true;
      this.#wake();
    });
    this.stream.on('close', () => {
      this.ended = true;
      this.#wake();
    });
  }

  #wake(): void {
    for (const w of [...this.#waiters]) w();
  }

  write(msg: ClientMessage): void {
    this.stream.write(msg);
  }

  /** Resolves once `check()` is true (re-checked on every event), rejects after `timeoutMs`. */
  until(what: string, check: () => boolean, timeoutMs = 5000): Promise<void> {
    return new Promise((resolve, reject) => {
      const done = (err?: Error): void => {
        clearTimeout(timer);
        this.#waiters.delete(poll);
        if (err !== undefined) reject(err);
        else resolve();
      };
      const poll = (): void => {
        if (check()) done();
      };
      const timer = setTimeout(() => done(new Error(`timed out after ${timeoutMs} ms waiting for ${what} (error: ${this.error?.code}, ended: ${this.ended})`)), timeoutMs);
      this.#waiters.add(poll);
      poll();
    });
  }

  /** Sends Start and waits for Ready (or StartFailed, which it returns). */
  async start(chain: string[], timeoutMs = 10_000): Promise<WorkerMessage> {
    this.write({ start: { chain } });
    let found: WorkerMessage | undefined;
    await this.until(
      'Ready or StartFailed',
      () => (found = this.messages.find((m) => m.body === 'ready' || m.body === 'start_failed')) !== undefined || this.error !== undefined || this.ended,
      timeoutMs,
    );
    if (found === undefined) throw new Error(`the stream ended before Ready: ${this.error?.code} ${this.error?.details}`);
    return found;
  }

  /** Ends the stream from our side. */
  close(): void {
    try {
      this.stream.cancel();
    } catch {
      // already gone
    }
  }
}
