/**
 * float32 against 16-bit and quantized weights on the onnx backend, in one session: each
 * configuration is one `paligemma bench --backend onnx --json` child process (so each has its
 * own peak RSS), run one after the other, and every figure is quoted as a ratio to the float32
 * run of the same round.
 *
 *   npx tsx bench/quantized-weights.ts [--rounds N] [--configs f32,bf16,int8,int4]
 *                                      [--new-tokens N] [--repeats N] [--vision-layers N] [--text-layers N]
 *
 * Configurations (all at PaliGemma-3B-224 shapes, 2 + 2 layers by default, loaded from a
 * checkpoint the bench writes, see `bench --weights`):
 *   f32   float32 checkpoint                       (the baseline)
 *   bf16  BF16 checkpoint, the 16-bit path (no quantization asked)
 *   int8  BF16 checkpoint, --backend-option quantize=int8 (MatMulNBits, 8 bits, blocks of 32)
 *   int4  BF16 checkpoint, --backend-option quantize=int4
 *   f16   F16 checkpoint, the 16-bit path
 *
 * Printed per round and as medians over rounds: time to first token (image → first logits),
 * ms per decoded token, peak RSS and its ratio to the checkpoint's weight bytes, load time.
 */
import { spawnSync } from 'node:child_process';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';

const ROOT = resolve(import.meta.dirname, '..');

const CONFIGS: Record<string, string[]> = {
  f32: ['--weights', 'f32'],
  bf16: ['--weights', 'bf16'],
  f16: ['--weights', 'f16'],
  int8: ['--weights', 'bf16', '--backend-option', 'quantize=int8'],
  int4: ['--weights', 'bf16', '--backend-option', 'quantize=int4'],
};

const { values: args } = parseArgs({
  options: {
    rounds: { type: 'string', default: '1' },
    configs: { type: 'string', default: 'f32,bf16,int8,int4' },
    'new-tokens': { type: 'string', default: '8' },
    repeats: { type: 'string', default: '2' },
    'vision-layers': { type: 'string', default: '2' },
    'text-layers': { type: 'string', default: '2' },
    'scale-down': { type: 'string', default: '1' },   // smoke runs only
    json: { type: 'boolean', default: false },
  },
});
const names = args.configs!.split(',').filter(Boolean);
for (const n of names) if (!CONFIGS[n]) throw new Error(`unknown config '${n}' (use ${Object.keys(CONFIGS).join(', ')})`);
if (!names.includes('f32')) names.unshift('f32');   // the baseline of every ratio
const rounds = Number(args.rounds);

interface Row { ttftMs: number; decodeMsPerToken: number; peakRssMb: number; fileBytes: number; loadMs: number; engine: string }

function runOne(name: string): Row {
  const r = spawnSync(process.execPath, [
    join(ROOT, 'bin/paligemma.js'), 'bench', '--backend', 'onnx', '--json', ...CONFIGS[name],
    '--new-tokens', args['new-tokens']!, '--repeats', args.repeats!,
    '--vision-layers', args['vision-layers']!, '--text-layers', args['text-layers']!, '--scale-down', args['scale-down']!,
  ], { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`bench ${name} failed (exit ${r.status}): ${r.stderr.trim().split('\n').slice(-3).join(' | ')}`);
  const j = JSON.parse(r.stdout.trim().split('\n').pop()!) as {
    ttftMs: number; decodeMsPerToken: number; peakRssMb: number; detail: { fileBytes: number; loadMs: number; engine: string };
  };
  return { ttftMs: j.ttftMs, decodeMsPerToken: j.decodeMsPerToken, peakRssMb: j.peakRssMb, fileBytes: j.detail.fileBytes, loadMs: j.detail.loadMs, engine: j.detail.engine };
}

const median = (xs: number[]) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };
const f = (x: number, d = 0) => x.toFixed(d);

function table(title: string, rows: Record<string, Row>): string {
  const base = rows.f32;
  const lines = [title,
    `  ${'config'.padEnd(7)}${'TTFT ms'.padStart(10)}${'f32÷this'.padStart(10)}${'decode ms/tok'.padStart(15)}${'f32÷this'.padStart(10)}` +
    `${'peak RSS MiB'.padStart(14)}${'÷ file'.padStart(8)}${'load ms'.padStart(10)}   engine`];
  for (const [name, r] of Object.entries(rows)) {
    lines.push(`  ${name.padEnd(7)}${f(r.ttftMs).padStart(10)}${`${(base.ttftMs / r.ttftMs).toFixed(2)}×`.padStart(10)}` +
      `${f(r.decodeMsPerToken, 1).padStart(15)}${`${(base.decodeMsPerToken / r.decodeMsPerToken).toFixed(2)}×`.padStart(10)}` +
      `${f(r.peakRssMb).padStart(14)}${`${((r.peakRssMb * 2 ** 20) / r.fileBytes).toFixed(2)}×`.padStart(8)}${f(r.loadMs).padStart(10)}   ${r.engine}`);
  }
  return lines.join('\n');
}

const all: Array<Record<string, Row>> = [];
for (let round = 0; round < rounds; round++) {
  const rows: Record<string, Row> = {};
  for (const name of names) {
    process.stderr.write(`round ${round + 1}/${rounds}: ${name}…\n`);
    rows[name] = runOne(name);
  }
  all.push(rows);
  if (args.json) console.log(JSON.stringify({ round: round + 1, rows }));
  else console.log(table(`round ${round + 1} (ratios against this round's f32 run)`, rows));
}
if (rounds > 1 && !args.json) {
  const ratioMedian: Record<string, { ttft: number; decode: number; rss: number }> = {};
  for (const name of names) {
    ratioMedian[name] = {
      ttft: median(all.map((r) => r.f32.ttftMs / r[name].ttftMs)),
      decode: median(all.map((r) => r.f32.decodeMsPerToken / r[name].decodeMsPerToken)),
      rss: median(all.map((r) => (r[name].peakRssMb * 2 ** 20) / r[name].fileBytes)),
    };
  }
  console.log(`median over ${rounds} rounds of the per-round ratios:`);
  for (const [name, m] of Object.entries(ratioMedian)) {
    console.log(`  ${name.padEnd(7)} TTFT f32÷this ${m.ttft.toFixed(2)}×   decode f32÷this ${m.decode.toFixed(2)}×   peak RSS ÷ file ${m.rss.toFixed(2)}×`);
  }
}
