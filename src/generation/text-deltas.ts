/**
 * Incremental detokenization for streaming: each new token yields the text it completes, at a
 * cost that follows the few tokens still pending rather than the whole output (decoding the
 * whole list at every step is quadratic in the output length).
 *
 * Text is decoded over a short window: the tokens of the last emitted chunk (their context makes
 * a leading '▁' decode as it does in the full sequence) plus the tokens not emitted yet. A
 * byte-fallback token (`<0xE2>`) is fed to a UTF-8 decoder's state machine (the WHATWG one, which
 * lossy decoders follow): while it is in the middle of a sequence (`<0xE2><0x82>` of '€'), the
 * text is held back; once the sequence completes, or turns out invalid, the decoder is back at
 * its start state, so what follows decodes independently of what came before and the window may
 * start afresh. At most 3 tokens are ever held for this. A token that is not a byte token but
 * whose window text ends in U+FFFD (a tokenizer with another byte scheme) is held too, until the
 * text stops ending so.
 *
 * ```ts
 * const deltas = new TextDeltas(tokenizer);
 * for (const id of ids) process.stdout.write(deltas.push(id));
 * process.stdout.write(deltas.flush());          // whatever an unfinished sequence left
 * ```
 */
import type { Tokenizer } from '../interfaces/tokenizer.js';

const BYTE_TOKEN = /^<0x([0-9A-Fa-f]{2})>$/;

/**
 * The WHATWG UTF-8 decoder's state between bytes (Encoding Standard, "UTF-8 decoder"): how many
 * continuation bytes the sequence in progress still needs and the range the next one must be in.
 */
class Utf8State {
  private needed = 0;
  private lower = 0x80;
  private upper = 0xbf;

  get inSequence(): boolean { return this.needed > 0; }

  reset(): void { this.needed = 0; this.lower = 0x80; this.upper = 0xbf; }

  feed(b: number): void {
    if (this.needed > 0) {
      if (b >= this.lower && b <= this.upper) {
        this.lower = 0x80; this.upper = 0xbf;
        this.needed--;
        return;
      }
      // An unexpected byte ends the sequence (one U+FFFD) and is then read afresh.
      this.reset();
    }
    if (b >= 0xc2 && b <= 0xdf) this.needed = 1;
    else if (b >= 0xe0 && b <= 0xef) { this.needed = 2; if (b === 0xe0) this.lower = 0xa0; if (b === 0xed) this.upper = 0x9f; }
    else if (b >= 0xf0 && b <= 0xf4) { this.needed = 3; if (b === 0xf0) this.lower = 0x90; if (b === 0xf4) this.upper = 0x8f; }
    // ASCII is complete; any other byte is an error (U+FFFD) that leaves the start state.
  }
}

export class TextDeltas {
  private readonly ids: number[] = [];
  /** ids[prefix, read) were emitted last; their text is the window's known head. */
  private prefix = 0;
  private read = 0;
  private readonly utf8 = new Utf8State();

  constructor(private readonly tokenizer: Pick<Tokenizer, 'decode'> & Partial<Pick<Tokenizer, 'idToToken'>>) {}

  /** Adds one token; returns the text it completes ('' while a character is still incomplete). */
  push(id: number): string {
    this.ids.push(id);
    const byte = BYTE_TOKEN.exec(this.tokenizer.idToToken?.(id) ?? '');
    if (byte) this.utf8.feed(Number.parseInt(byte[1], 16));
    else this.utf8.reset();             // another token ends the byte run: the decoder starts over
    if (this.utf8.inSequence) return '';
    return this.emit(!byte);
  }

  /** Text still held back at the end (an unfinished sequence's replacement character). */
  flush(): string {
    return this.emit(false);
  }

  private emit(holdOnReplacement: boolean): string {
    if (this.read === this.ids.length) return '';
    const decode = (from: number, to: number) => this.tokenizer.decode(this.ids.slice(from, to), { skipSpecialTokens: true });
    const head = decode(this.prefix, this.read);
    const text = decode(this.prefix, this.ids.length);
    if (holdOnReplacement && text.endsWith('\uFFFD')) return '';
    // The head is a prefix of the window's text whenever the tokenizer decodes piecewise, as
    // SentencePiece-style decoders do; if it is not, the safe delta is what follows the
    // longest common prefix.
    let cut = head.length;
    if (!text.startsWith(head)) { cut = 0; while (cut < head.length && head[cut] === text[cut]) cut++; }
    this.prefix = this.read;
    this.read = this.ids.length;
    return text.slice(cut);
  }
}
