/** Brand in the global symbol registry: errors made by another copy of the SDK (a plugin's) count too. */
const PALIGEMMA_ERROR = Symbol.for('paligemma-sdk.PaliGemmaError');

/**
 * An error the user can cause and fix (bad path, corrupt file, wrong option). The CLI prints its
 * message as one `error:` line and exits 2. Programming errors stay plain exceptions.
 */
export class PaliGemmaError extends Error {
  override readonly name = 'PaliGemmaError';
  readonly [PALIGEMMA_ERROR] = true;
  constructor(message: string, readonly code: string = 'invalid_input') {
    super(message);
  }

  /** `instanceof` by brand, so a plugin that imports its own copy of the SDK throws "our" errors. */
  static override [Symbol.hasInstance](value: unknown): boolean {
    if (this !== PaliGemmaError) return Function.prototype[Symbol.hasInstance].call(this, value);
    return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[PALIGEMMA_ERROR] === true;
  }
}
