// Reads a V8 .cpuprofile (node --cpu-prof) and says where the time went: self time per function,
// and per stage of the streaming pipeline.
import { readFileSync } from 'node:fs';

/** Buckets for the pipeline's stages, first match wins; matched against "function url". */
const STAGES = [
  ['sha256 (hash.update)', /^(update|digest) .*crypto/],
  ['native writes (file, pipe, socket)', /^(writeBuffer|writeBuffers|writev|writeString|writeLatin1String|writeUtf8String) $/],
  ['native reads', /^(read|readBuffers) $/],
  ['undici (socket reads, HTTP parser)', /undici/],
  ['stream/pipe glue (net, child_process)', /node:(net|internal\/stream_base_commons|internal\/child_process)/],
  ['module loading (startup)', /node:internal\/modules|^(compileFunction|wrapSafe|parseSource|compileSourceTextModule) /],
  ['tar index / yaml', /(tarindex|tarrewrite|yaml)/],
  ['streams plumbing', /node:internal\/streams|internal\/streams/],
  ['progress / output', /(output\/ui|cli-progress|ora)/],
  ['garbage collector', /^\(garbage collector\)/],
  ['idle (waiting on I/O)', /^\(idle\)/],
  ['program (native, unattributed)', /^\(program\)/],
];

export function summarizeProfile(file, top = 12) {
  const prof = JSON.parse(readFileSync(file, 'utf8'));
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  const selfUs = new Map();
  for (let i = 0; i < prof.samples.length; i++) {
    const id = prof.samples[i];
    selfUs.set(id, (selfUs.get(id) ?? 0) + (prof.timeDeltas[i] ?? 0));
  }
  const total = [...selfUs.values()].reduce((a, b) => a + b, 0) || 1;
  const perFn = new Map();
  const perStage = new Map();
  for (const [id, us] of selfUs) {
    const cf = byId.get(id).callFrame;
    const url = cf.url.replace(/^file:\/\/.*\/(node_modules|dist)\//, '$1/');
    const key = `${cf.functionName || '(anonymous)'} ${url}${cf.url ? `:${cf.lineNumber + 1}` : ''}`.trim();
    perFn.set(key, (perFn.get(key) ?? 0) + us);
    const stage = STAGES.find(([, re]) => re.test(`${cf.functionName} ${cf.url}`))?.[0] ?? 'other JS';
    perStage.set(stage, (perStage.get(stage) ?? 0) + us);
  }
  const rows = (m) =>
    [...m]
      .sort((a, b) => b[1] - a[1])
      .map(([name, us]) => ({ name, ms: Math.round(us / 1000), share: Math.round((us / total) * 1000) / 10 }));
  return { file, totalMs: Math.round(total / 1000), stages: rows(perStage), top: rows(perFn).slice(0, top) };
}
