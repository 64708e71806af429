import { expect } from 'chai';
import { PaliGemmaError } from '../../src/interfaces/errors.js';

/** What `p` rejects with; fails the test if it resolves. */
export async function rejection(p: Promise<unknown>): Promise<Error> {
  try { await p; } catch (e) { return e as Error; }
  throw new Error('expected a rejection, but it resolved');
}

/** Awaits a PaliGemmaError whose one-line message contains every part. */
export async function expectUserError(p: Promise<unknown>, ...parts: string[]): Promise<string> {
  const e = await rejection(p);
  expect(e, `${e?.stack}`).to.be.instanceOf(PaliGemmaError);
  for (const part of parts) expect(e.message).to.contain(part);
  expect(e.message).not.to.contain('\n');
  return e.message;
}
