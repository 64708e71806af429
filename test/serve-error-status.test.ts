/** What the server answers for each kind of error: the client's fault is a 4xx, the server's a 500. */
import { expect } from 'chai';
import { PaliGemmaError } from '../src/interfaces/errors.js';
import { apiError } from '../src/serving/server.js';

describe('paligemma serve: error statuses', function () {
  it('request errors are 400, a full queue 429, shutting down 503', function () {
    expect(apiError(new PaliGemmaError('bad prompt', 'context_exceeded')).status).to.equal(400);
    expect(apiError(new PaliGemmaError('bad option', 'invalid_argument')).status).to.equal(400);
    expect(apiError(new PaliGemmaError('full', 'queue_full')).status).to.equal(429);
    expect(apiError(new PaliGemmaError('bye', 'shutting_down')).status).to.equal(503);
  });

  it('a non-finite logit, a missing package or a failing plugin is a 500 server_error, in OpenAI\'s shape', function () {
    for (const code of ['non_finite', 'missing_dependency', 'plugin_failed', 'out_of_memory']) {
      const e = apiError(new PaliGemmaError(`${code} happened`, code));
      expect(e, code).to.deep.equal({ status: 500, message: `${code} happened`, type: 'server_error', param: null, code });
    }
  });

  it('an error that is not ours hides its message behind a plain 500', function () {
    expect(apiError(new TypeError('x is undefined'))).to.deep.equal({ status: 500, message: 'internal error', type: 'server_error', param: null, code: null });
  });
});
