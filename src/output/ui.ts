import { createRequire } from 'node:module';
import type { Writable } from 'node:stream';
import type cliProgress from 'cli-progress';
import type { Task, Ui } from '../core/run.js';
import { humanBytes } from './format.js';

export interface UiOptions {
  stream: Writable & { isTTY?: boolean };
  quiet: boolean;
  color: boolean;
}

// The terminal widgets are loaded only when there is a terminal to draw on: cron and scripts
// never pay their start-up time and memory.
const require = createRequire(import.meta.url);

const SPINNER = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

function stamp(): string {
  return new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/**
 * Progress for people and for logs. On a terminal: one live bar per resource with bytes, rate
 * and ETA. Elsewhere (cron, CI, pipes): plain timestamped lines, no escape codes, no redraws.
 * --quiet keeps only warnings (errors are printed by the caller).
 */
export function createUi(opts: UiOptions): Ui & { stop(): void } {
  // A terminal that reports 0 columns (a pty nobody sized, e.g. `script` without a terminal
  // around it) sent ora into an endless redraw: without a width, draw nothing live.
  const width = (opts.stream as { columns?: number }).columns ?? 0;
  const tty = !!opts.stream.isTTY && !opts.quiet && width > 0;
  const color = (code: number, s: string) => (opts.color && tty ? `\x1b[${code}m${s}\x1b[0m` : s);
  let multi: cliProgress.MultiBar | undefined;
  const line = (s: string) => {
    if (multi) multi.log(s + '\n');
    else opts.stream.write(s + '\n');
  };
  const plain = (s: string) => line(tty ? s : `${stamp()} ${s}`);

  return {
    info(msg) {
      if (!opts.quiet) plain(msg);
    },
    warn(msg) {
      plain(color(33, `warning: ${msg}`));
    },
    async wait(text, fn) {
      if (!tty || multi) return fn();
      const { default: ora } = await import('ora');
      const spinner = ora({ text, stream: opts.stream as NodeJS.WriteStream, color: opts.color ? 'cyan' : false, isEnabled: true }).start();
      try {
        return await fn();
      } finally {
        spinner.stop();
      }
    },
    task(label): Task {
      const started = Date.now();
      if (opts.quiet) return { phase() {}, bytes() {}, end() {} };
      if (!tty) {
        let lastLogged = 0;
        return {
          phase: (text) => plain(`${label}: ${text}`),
          bytes(done, total) {
            // A line every 10 s at most: readable in a log, no carriage returns.
            if (Date.now() - lastLogged < 10_000) return;
            lastLogged = Date.now();
            plain(`${label}: ${humanBytes(done)}${total ? ` of ${humanBytes(total)}` : ''}`);
          },
          end: (ok, text) => plain(`${label}: ${ok === 'later' ? 'later' : ok ? 'done' : 'FAILED'}${text ? ` (${text})` : ''} in ${((Date.now() - started) / 1000).toFixed(1)} s`),
        };
      }
      const bars = require('cli-progress') as typeof cliProgress;
      multi ??= new bars.MultiBar(
        {
          stream: opts.stream as NodeJS.WriteStream,
          format: `{label} {bar} {done} / {totalh} {rate} ETA {eta_formatted} {phase}`,
          hideCursor: true,
          clearOnComplete: false,
          barsize: 24,
          etaBuffer: 20,
          fps: 5,
        },
        bars.Presets.shades_classic,
      );
      const bar = multi.create(1, 0, { label, done: '0 B', totalh: '?', rate: '', phase: '' });
      // Waits without bytes (snapshot, staging, importing) get a spinner beside the bar.
      let phaseText = '';
      let frame = 0;
      const spin = setInterval(() => {
        if (phaseText) bar.update({ phase: `${SPINNER[frame++ % SPINNER.length]} ${phaseText}` });
      }, 120);
      spin.unref();
      let total = 1;
      // The rate counts from the first byte: snapshot and staging time is not transfer time.
      let firstByteAt: number | undefined;
      return {
        phase: (text) => {
          phaseText = text;
          bar.update({ phase: text });
        },
        bytes(done, t) {
          if (t && t !== total) {
            total = t;
            bar.setTotal(t);
          }
          firstByteAt ??= Date.now();
          phaseText = '';
          const secs = (Date.now() - firstByteAt) / 1000;
          bar.update(Math.min(done, total), {
            done: humanBytes(done),
            totalh: t ? humanBytes(t) : '?',
            rate: secs > 0 ? `${humanBytes(Math.round(done / secs))}/s` : '',
            phase: '',
          });
        },
        end(ok, text) {
          clearInterval(spin);
          phaseText = '';
          // Put off: the bar stays where it was (empty: nothing was moved), saying why.
          if (ok === 'later') bar.update({ phase: color(33, `later: ${text ?? ''}`) });
          else bar.update(total, { phase: ok ? color(32, `done ${text ?? ''}`) : color(31, 'FAILED') });
          bar.stop();
        },
      };
    },
    stop() {
      if (!multi) return;
      // MultiBar.log() only queues a line for the next redraw (5 a second), and stop() does not
      // write the queue: without this redraw, warnings of a run's last moments were lost.
      (multi as unknown as { update(): void }).update();
      multi.stop();
      multi = undefined;
    },
  };
}
