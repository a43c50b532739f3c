/**
 * Driving a daemon's Compute stream by hand, for tests that send what a TaskFarm never would:
 * install a bundle, open the stream, Start a chain, send task batches (packed: one TaskBatch of
 * seqs and one v8-serialized array of inputs), and wait for replies (packed ResultBatches, unpacked
 * here into one {@link TaskResult} per seq).
 */
import { createHash } from 'node:crypto';
import { asRemoteError, decodeOutcomes, encodeInputs } from '../../dist/src/protocol/batch.js';
import type { grpc } from '../../dist/src/protocol/grpc.js';
import type { ClientMessage, RemoteErrorMessage, ResultBatchMessage, WorkerMessage } from '../../dist/src/protocol/messages.js';
import type { RawWorker } from './raw-worker.js';

/** One task's outcome, unpacked from a ResultBatch: `value` (flag 0) or `error` (flag 1). */
export interface TaskResult {
  readonly seq: number;
  readonly value?: unknown;
  readonly error?: RemoteErrorMessage;
  readonly duration_ms: number;
}

/** A TaskBatch message: `seqs` with `inputs` packed in one v8-serialized array. */
export function taskBatch(seqs: readonly number[], inputs: readonly unknown[]): ClientMessage {
  return { tasks: { seqs: [...seqs], inputs: encodeInputs(inputs), program: 1, priority: 0 } };
}

/** A TaskBatch message with `inputs` bytes as they are (not necessarily a valid packed array). */
export function rawTaskBatch(seqs: readonly number[], inputs: Uint8Array): ClientMessage {
  return { tasks: { seqs: [...seqs], inputs, program: 1, priority: 0 } };
}

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
  /** Every ResultBatch as received. */
  readonly batches: ResultBatchMessage[] = [];
  /** Every task outcome, unpacked from the batches in order of arrival. */
  readonly results: TaskResult[] = [];
  /** Why a ResultBatch from the daemon could not be unpacked (should stay empty). */
  readonly undecodable: string[] = [];
  /** The stream's error, once it failed. */
  error: grpc.ServiceError | undefined;
  ended = false;
  readonly #waiters = new Set<() => void>();

  constructor(raw: RawWorker, token: string) {
    this.stream = raw.compute(token);
    this.stream.on('data', (m: WorkerMessage) => {
      this.messages.push(m);
      if (m.body === 'results') this.#unpack(m.results);
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

  #unpack(b: ResultBatchMessage): void {
    this.batches.push(b);
    try {
      if (b.durations_ms.length !== b.seqs.length) throw new TypeError(`${b.durations_ms.length} durations for ${b.seqs.length} seqs`);
      const { flags, values } = decodeOutcomes(b.outcomes, b.seqs.length);
      const unpacked = b.seqs.map((seq, i): TaskResult => {
        const duration_ms = b.durations_ms[i]!;
        if (flags[i] === 0) return { seq, value: values[i], duration_ms };
        if (flags[i] === 1) return { seq, error: asRemoteError(values[i]), duration_ms };
        throw new TypeError(`flag ${flags[i]} for seq ${seq}`);
      });
      this.results.push(...unpacked);
    } catch (err) {
      this.undecodable.push((err as Error).message);
    }
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
      const timer = setTimeout(
        () => done(new Error(`timed out after ${timeoutMs} ms waiting for ${what} (error: ${this.error?.code}, ended: ${this.ended})`)),
        timeoutMs,
      );
      this.#waiters.add(poll);
      poll();
    });
  }

  /**
   * Sends Start (as program 1, which {@link taskBatch} names) and waits for its Ready (or
   * StartFailed, which it returns).
   */
  async start(chain: string[], timeoutMs = 10_000): Promise<WorkerMessage> {
    this.write({ start: { chain, task_timeout_ms: 0, shared: [], program: 1 } });
    let found: WorkerMessage | undefined;
    await this.until(
      'Ready or StartFailed',
      () =>
        (found = this.messages.find((m) => (m.body === 'ready' && m.ready.program === 1) || m.body === 'start_failed')) !== undefined ||
        this.error !== undefined ||
        this.ended,
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
