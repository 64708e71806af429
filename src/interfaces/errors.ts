/**
 * An error the user can cause and fix (bad path, corrupt file, wrong option). The CLI prints its
 * message as one `error:` line and exits 2. Programming errors stay plain exceptions.
 */
export class PaliGemmaError extends Error {
  override readonly name = 'PaliGemmaError';
  constructor(message: string, readonly code: string = 'invalid_input') {
    super(message);
  }
}
