// Preloaded into the incus-backup process by the benchmark (`node --import probe.mjs bin/incus-backup ...`).
// It records what only the process itself can see, and writes it as JSON to $IB_BENCH_PROBE at exit:
//
// - peak memory: process.resourceUsage().maxRSS is this process alone. /usr/bin/time reports the
//   largest of the process and its waited-for children (restic), so it cannot tell them apart.
// - disk writes of this process alone: the sum of /proc/self/task/*/io. /proc/self/io also contains
//   every child already reaped (restic writing the repository), which is reported as `tree`.
//   Node's threads (main, libuv pool, V8 workers) live until exit, so no thread's count is lost.
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';

const out = process.env.IB_BENCH_PROBE;
if (out) {
  const keys = ['rss', 'heapTotal', 'heapUsed', 'external', 'arrayBuffers'];
  const peak = Object.fromEntries(keys.map((k) => [k, 0]));
  const sample = () => {
    const m = process.memoryUsage();
    for (const k of keys) if (m[k] > peak[k]) peak[k] = m[k];
  };
  // Cheap (no heap walk); unref'd so it never keeps the CLI alive.
  setInterval(sample, 50).unref();

  const readIo = (file) => {
    const io = {};
    try {
      for (const line of readFileSync(file, 'utf8').split('\n')) {
        const [k, v] = line.split(':');
        if (k && v !== undefined) io[k.trim()] = Number(v.trim());
      }
    } catch {
      // a thread that ended between readdir and read: its bytes moved to /proc/self/io
    }
    return io;
  };

  process.on('exit', () => {
    sample();
    const threads = {};
    for (const tid of readdirSync('/proc/self/task')) {
      for (const [k, v] of Object.entries(readIo(`/proc/self/task/${tid}/io`))) threads[k] = (threads[k] ?? 0) + v;
    }
    const usage = process.resourceUsage();
    const report = {
      maxRssKB: usage.maxRSS,
      cpuUserUs: usage.userCPUTime,
      cpuSystemUs: usage.systemCPUTime,
      peak,
      io: { self: threads, tree: readIo('/proc/self/io') },
    };
    writeFileSync(out, JSON.stringify(report) + '\n');
  });
}
