import { afterEach, describe, expect, it, vi } from 'vitest';
import { Liveness } from '../../../src/protocol/liveness.js';

describe('Liveness (the heartbeat primitive both ends use)', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('declares the peer silent after timeoutMs without a message, not before, and only once', async () => {
    vi.useFakeTimers();
    const onSilent = vi.fn();
    const l = new Liveness({ heartbeatMs: 0, timeoutMs: 1000, checkMs: 10, sendHeartbeat: () => {}, onSilent });
    await vi.advanceTimersByTimeAsync(1000);
    expect(onSilent).not.toHaveBeenCalled();
    await vi.advanceTimersByTimeAsync(10);
    expect(onSilent).toHaveBeenCalledOnce();
    expect(onSilent.mock.calls[0]![0]).toBeGreaterThan(1000);
    await vi.advanceTimersByTimeAsync(5000);
    expect(onSilent).toHaveBeenCalledOnce();
    l.stop();
  });

  it('a stall of its own event loop (a late check) does not count as the peer being silent', async () => {
    vi.useFakeTimers();
    const onSilent = vi.fn();
    const l = new Liveness({ heartbeatMs: 0, timeoutMs: 1000, checkMs: 10, sendHeartbeat: () => {}, onSilent });
    await vi.advanceTimersByTimeAsync(500);
    // The process is blocked for 3 s: the clock moves, no timer runs, nothing is read.
    vi.setSystemTime(Date.now() + 3000);
    await vi.advanceTimersByTimeAsync(10);
    expect(onSilent).not.toHaveBeenCalled();
    // A peer that stays silent once the loop runs again is still declared silent, on time.
    await vi.advanceTimersByTimeAsync(480);
    expect(onSilent).not.toHaveBeenCalled();
    await vi.advanceTimersByTimeAsync(40);
    expect(onSilent).toHaveBeenCalledOnce();
    l.stop();
  });

  it('every message heard restarts the clock', async () => {
    vi.useFakeTimers();
    const onSilent = vi.fn();
    const l = new Liveness({ heartbeatMs: 0, timeoutMs: 1000, checkMs: 10, sendHeartbeat: () => {}, onSilent });
    for (let i = 0; i < 10; i++) {
      await vi.advanceTimersByTimeAsync(900);
      l.heard();
    }
    expect(onSilent).not.toHaveBeenCalled();
    await vi.advanceTimersByTimeAsync(1010);
    expect(onSilent).toHaveBeenCalledOnce();
    l.stop();
  });

  it('sends a heartbeat only when nothing else was written for about heartbeatMs', async () => {
    vi.useFakeTimers();
    const sendHeartbeat = vi.fn();
    const l = new Liveness({ heartbeatMs: 500, timeoutMs: 0, checkMs: 50, sendHeartbeat, onSilent: () => {} });
    await vi.advanceTimersByTimeAsync(400);
    expect(sendHeartbeat).not.toHaveBeenCalled();
    await vi.advanceTimersByTimeAsync(100);
    expect(sendHeartbeat).toHaveBeenCalledTimes(1);
    // A busy stream (something written every 100 ms) sends no heartbeat at all.
    for (let i = 0; i < 20; i++) {
      await vi.advanceTimersByTimeAsync(100);
      l.wrote();
    }
    expect(sendHeartbeat).toHaveBeenCalledTimes(1);
    await vi.advanceTimersByTimeAsync(500);
    expect(sendHeartbeat).toHaveBeenCalledTimes(2);
    l.stop();
  });

  it('stop() ends everything', async () => {
    vi.useFakeTimers();
    const onSilent = vi.fn();
    const sendHeartbeat = vi.fn();
    const l = new Liveness({ heartbeatMs: 100, timeoutMs: 300, sendHeartbeat, onSilent });
    l.stop();
    await vi.advanceTimersByTimeAsync(10_000);
    expect(onSilent).not.toHaveBeenCalled();
    expect(sendHeartbeat).not.toHaveBeenCalled();
  });
});
