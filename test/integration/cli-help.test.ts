/**
 * Issue 9, item 8: every command's `--help` and the README's synopses tell the same story. For each
 * command listed by `taskfarm --help`, the flags in its help's Options equal the flags in its
 * synopsis under README "Command line" (and the worker synopsis under "Running worker daemons").
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { cli, REPO } from '../helpers/cli.js';

const README = readFileSync(join(REPO, 'README.md'), 'utf8');

/** Flags a help text documents under "Options:" (without -h/--help). */
function helpFlags(help: string): string[] {
  const options = help.split(/^Options:\n/m)[1] ?? '';
  const flags = new Set<string>();
  for (const line of options.split('\n')) {
    const m = /^ {2}(?:-\w, )?(--[a-z][a-z-]*)/.exec(line);
    if (m !== null && m[1] !== '--help') flags.add(m[1]!);
  }
  return [...flags].sort();
}

/** The first fenced code block after the heading `## <title>`. */
function codeBlockAfter(title: string): string {
  const at = README.indexOf(`\n## ${title}\n`);
  expect(at, `README has a "## ${title}" section`).toBeGreaterThan(0);
  const m = /```[a-z]*\n([\s\S]*?)```/.exec(README.slice(at));
  expect(m, `a code block under "## ${title}"`).not.toBeNull();
  return m![1]!;
}

/** Synopsis entries of a code block: `taskfarm <cmd> …` plus its indented continuation lines. */
function synopses(block: string): Map<string, string> {
  const out = new Map<string, string>();
  let current: string | undefined;
  for (const line of block.split('\n')) {
    const m = /^taskfarm ([a-z]+)\b/.exec(line);
    if (m !== null) {
      current = m[1]!;
      out.set(current, line);
    } else if (current !== undefined && /^\s+\S/.test(line)) out.set(current, `${out.get(current)!}\n${line}`);
    else current = undefined;
  }
  return out;
}

const flagsOf = (synopsis: string): string[] => [...new Set(synopsis.match(/--[a-z][a-z-]*/g) ?? [])].sort();

describe('--help against the README', () => {
  it('every command of `taskfarm --help` has a README synopsis naming exactly the flags of its --help', async () => {
    const top = await cli(['--help']);
    const commands = [...(top.stdout.split(/^Commands:\n/m)[1] ?? '').matchAll(/^ {2}([a-z]+) {2,}/gm)]
      .map((m) => m[1]!)
      .filter((c) => c !== 'help' && c !== 'version');
    expect(commands).toEqual(expect.arrayContaining(['worker', 'run', 'ls', 'keygen', 'demo', 'isolated']));
    const readme = synopses(codeBlockAfter('Command line'));
    for (const command of commands) {
      const r = await cli([command, '--help']);
      expect(r.code, command).toBe(0);
      expect(r.stdout, command).toMatch(new RegExp(`^Usage: taskfarm ${command}\\b`));
      const synopsis = readme.get(command);
      expect(synopsis, `README "Command line" has a synopsis of taskfarm ${command}`).toBeDefined();
      expect(flagsOf(synopsis!), `taskfarm ${command}: README synopsis vs --help`).toEqual(helpFlags(r.stdout));
    }
    // One CLI start per command (two dozen): ~1.5 s each on a loaded 2-core machine.
  }, 120_000);

  it('the synopsis under "Running worker daemons" is the one under "Command line"', () => {
    expect(synopses(codeBlockAfter('Running worker daemons')).get('worker')).toBe(synopses(codeBlockAfter('Command line')).get('worker'));
  });
});
