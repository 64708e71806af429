import { expect } from 'chai';
import { boxToLoc, locToBox, maskRect } from '../src/tasks/box-geometry.js';
import { parseLocOutput } from '../src/tasks/loc-parser.js';
import { answerPrompt, captionPrompt, detectPrompt, ocrPrompt, segmentPrompt } from '../src/tasks/task-prompts.js';
import { PaliGemmaError } from '../src/interfaces/errors.js';

const loc = (...v: number[]) => v.map((n) => `<loc${String(n).padStart(4, '0')}>`).join('');
const seg = (...v: number[]) => v.map((n) => `<seg${String(n).padStart(3, '0')}>`).join('');
const SIXTEEN = Array.from({ length: 16 }, (_, i) => (i * 7) % 128);

describe('tasks: loc parser', () => {
  it('parses one detected object', () => {
    const r = parseLocOutput(`${loc(100, 200, 300, 400)} cat`, 'detect');
    expect(r.skipped).to.deep.equal([]);
    expect(r.objects).to.deep.equal([{ label: 'cat', loc: [100, 200, 300, 400] }]);
  });

  it('parses many objects separated by " ; ", with multi-word labels', () => {
    const r = parseLocOutput(`${loc(0, 1, 1023, 1022)} cat ; ${loc(5, 6, 7, 8)} red dog ;${loc(9, 9, 10, 10)} cat`, 'detect');
    expect(r.skipped).to.deep.equal([]);
    expect(r.objects.map((o) => o.label)).to.deep.equal(['cat', 'red dog', 'cat']);
    expect(r.objects[0].loc).to.deep.equal([0, 1, 1023, 1022]);
    expect(r.objects[1].loc).to.deep.equal([5, 6, 7, 8]);
  });

  it('parses segmentation entries with 16 seg codes', () => {
    const r = parseLocOutput(`${loc(10, 20, 30, 40)}${seg(...SIXTEEN)} cat ; ${loc(1, 2, 3, 4)}${seg(...SIXTEEN.slice().reverse())} dog`, 'segment');
    expect(r.skipped).to.deep.equal([]);
    expect(r.objects).to.have.length(2);
    expect(r.objects[0]).to.deep.equal({ label: 'cat', loc: [10, 20, 30, 40], seg: SIXTEEN });
    expect(r.objects[1].seg).to.deep.equal(SIXTEEN.slice().reverse());
  });

  it('ignores empty output and blank entries', () => {
    expect(parseLocOutput('', 'detect')).to.deep.equal({ objects: [], skipped: [] });
    expect(parseLocOutput(`${loc(1, 2, 3, 4)} cat ; `, 'detect').objects).to.have.length(1);
  });

  const malformed: Array<[string, string, 'detect' | 'segment', RegExp]> = [
    ['a quadruple cut short', `${loc(1, 2, 3)}`, 'detect', /cut short: 3 of 4 <loc>/],
    ['cut short with a label', `${loc(1, 2)} cat`, 'detect', /cut short: 2 of 4 <loc>/],
    ['y_max < y_min', `${loc(500, 2, 400, 4)} cat`, 'detect', /y_max < y_min \(400 < 500\)/],
    ['x_max < x_min', `${loc(1, 600, 3, 4)} cat`, 'detect', /x_max < x_min \(4 < 600\)/],
    ['missing label', `${loc(1, 2, 3, 4)}`, 'detect', /missing label/],
    ['a loc token after the label', `${loc(1, 2, 3)} cat${loc(4)}`, 'detect', /loc token <loc0004> out of order: after the label/],
    ['five loc tokens', `${loc(1, 2, 3, 4, 5)} cat`, 'detect', /more than 4 <loc>/],
    ['text without tokens', 'no cats here', 'detect', /no <loc> tokens/],
    ['a 5-digit loc', `<loc01000>${loc(2, 3, 4)} cat`, 'detect', /malformed loc token/],
    ['seg codes in a detection answer', `${loc(1, 2, 3, 4)}${seg(1)} cat`, 'detect', /unexpected seg token/],
    ['fewer than 16 seg codes', `${loc(1, 2, 3, 4)}${seg(...SIXTEEN.slice(0, 15))} cat`, 'segment', /cut short: 15 of 16 <seg>/],
    ['more than 16 seg codes', `${loc(1, 2, 3, 4)}${seg(...SIXTEEN, 3)} cat`, 'segment', /17 <seg> tokens, expected 16/],
    ['a loc token after the seg codes', `${loc(1, 2, 3, 4)}${seg(...SIXTEEN)}${loc(5)} cat`, 'segment', /out of order: after the seg codes/],
    ['seg codes before four locs', `${loc(1, 2)}${seg(...SIXTEEN)} cat`, 'segment', /out of order: after only 2 of 4/],
    ['seg out of range', `${loc(1, 2, 3, 4)}<seg128>${seg(...SIXTEEN.slice(1))} cat`, 'segment', /out of range 0..127/],
    ['an empty box in segmentation', `${loc(5, 2, 5, 4)}${seg(...SIXTEEN)} cat`, 'segment', /empty box/],
    ['a segment entry missing its label', `${loc(1, 2, 3, 4)}${seg(...SIXTEEN)}`, 'segment', /missing label/],
  ];
  for (const [what, text, task, reason] of malformed) {
    it(`skips ${what} with a reason, keeping the good entries`, () => {
      const good = task === 'detect' ? `${loc(7, 8, 9, 10)} ok` : `${loc(7, 8, 9, 10)}${seg(...SIXTEEN)} ok`;
      const r = parseLocOutput(`${good} ; ${text} ; ${good}`, task);
      expect(r.objects.map((o) => o.label)).to.deep.equal(['ok', 'ok']);
      expect(r.skipped).to.have.length(1);
      expect(r.skipped[0].text).to.equal(text.trim());
      expect(r.skipped[0].reason).to.match(reason);
    });
  }

  it('an answer cut by the token budget keeps the complete objects', () => {
    const r = parseLocOutput(`${loc(1, 2, 3, 4)} cat ; ${loc(5, 6)}`, 'detect');
    expect(r.objects).to.have.length(1);
    expect(r.skipped[0].reason).to.match(/cut short/);
  });
});

describe('tasks: loc → pixels', () => {
  it('scales y by the height and x by the width of a non-square image (bin / 1023)', () => {
    // 640 wide, 480 high: the model saw it squashed to a square, so axes scale independently.
    const b = locToBox([102, 256, 511, 1023], 640, 480);
    expect(b.y0).to.be.closeTo((102 / 1023) * 480, 1e-9);
    expect(b.x0).to.be.closeTo((256 / 1023) * 640, 1e-9);
    expect(b.y1).to.be.closeTo((511 / 1023) * 480, 1e-9);
    expect(b.x1).to.equal(640);
    const full = locToBox([0, 0, 1023, 1023], 300, 100);
    expect(full).to.deep.equal({ x0: 0, y0: 0, x1: 300, y1: 100 });
    // A tall image: the same bins give different pixels on each axis.
    const tall = locToBox([512, 512, 512, 512], 100, 1000);
    expect(tall.x0).to.be.closeTo(50.0489, 1e-3);
    expect(tall.y0).to.be.closeTo(500.489, 1e-3);
  });

  it('round-trips with the training-side binning round(c · 1023)', () => {
    for (const [w, h] of [[640, 480], [97, 311], [1, 2000]]) {
      for (let i = 0; i < 50; i++) {
        const q: [number, number, number, number] = [(i * 37) % 1024, (i * 91) % 1024, (i * 53 + 7) % 1024, (i * 11 + 3) % 1024];
        expect(boxToLoc(locToBox(q, w, h), w, h)).to.deep.equal(q);
      }
    }
    // Binning of a known box by hand: y0 = 120/480 → round(0.25 · 1023) = 256 (255.75).
    expect(boxToLoc({ x0: 320, y0: 120, x1: 640, y1: 480 }, 640, 480)).to.deep.equal([256, 512, 1023, 1023]);
  });

  it('mask rectangles truncate like big_vision (int(b / 1023 · size))', () => {
    const r = maskRect([100, 200, 700, 1023], 640, 480);
    expect(r).to.deep.equal({ x0: Math.trunc(200 / 1023 * 640), y0: Math.trunc(100 / 1023 * 480), x1: 640, y1: Math.trunc(700 / 1023 * 480) });
    expect(r).to.deep.equal({ x0: 125, y0: 46, x1: 640, y1: 328 });
  });
});

describe('tasks: prompts', () => {
  it('builds the documented task prompts', () => {
    expect(captionPrompt()).to.equal('caption en');
    expect(captionPrompt('es')).to.equal('caption es');
    expect(ocrPrompt()).to.equal('ocr');
    expect(answerPrompt(' what is  this? ', 'fr')).to.equal('answer fr what is this?');
    expect(detectPrompt(['cat', 'dog'])).to.equal('detect cat ; dog');
    expect(detectPrompt('red car')).to.equal('detect red car');
    expect(segmentPrompt('cat')).to.equal('segment cat');
  });

  it('refuses labels and languages that would break the prompt', () => {
    expect(() => detectPrompt([])).to.throw(PaliGemmaError, /at least one label/);
    expect(() => detectPrompt(['a ; b'])).to.throw(PaliGemmaError, /must not contain/);
    expect(() => segmentPrompt('  ')).to.throw(PaliGemmaError, /empty/);
    expect(() => captionPrompt('english please')).to.throw(PaliGemmaError, /language code/);
    expect(() => answerPrompt('')).to.throw(PaliGemmaError, /question/);
  });
});
