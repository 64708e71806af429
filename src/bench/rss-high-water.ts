/**
 * Per-phase peak resident memory. Linux keeps the process's resident high-water mark (VmHWM in
 * /proc/self/status) and lets the process reset it to the current RSS (write "5" to
 * /proc/self/clear_refs), so a phase's own peak can be read even after a bigger earlier one
 * (such as building the weights). Elsewhere it falls back to getrusage's lifetime maximum.
 */
import { readFileSync, writeFileSync } from 'node:fs';

/** Resets the high-water mark to the current RSS; false where the OS offers no reset. */
export function resetHighWater(): boolean {
  try {
    writeFileSync('/proc/self/clear_refs', '5');
    return true;
  } catch {
    return false;
  }
}

/** The resident high-water mark in MiB since the last reset (or since the process started). */
export function highWaterMb(): number {
  try {
    const m = /VmHWM:\s+(\d+)\s+kB/.exec(readFileSync('/proc/self/status', 'utf8'));
    if (m) return Number(m[1]) / 1024;
  } catch { /* not Linux */ }
  return process.resourceUsage().maxRSS / 1024;
}
