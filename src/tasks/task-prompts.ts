/**
 * The task prompts PaliGemma's mix checkpoints were trained on (big_vision's PaliGemma
 * transfers and the model card): `caption en`, `ocr`, `answer en …`, `detect cat ; dog`,
 * `segment cat`. The pipeline adds the image tokens, `<bos>` and the closing "\n".
 *
 * ```ts
 * detectPrompt(['cat', 'dog']);   // 'detect cat ; dog'
 * ```
 */
import { PaliGemmaError } from '../interfaces/errors.js';

/** Language codes are short lowercase tags like `en`, `es`, `zh-CN`. */
const LANG_RE = /^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$/;

function checkLang(lang: string): string {
  if (typeof lang !== 'string' || !LANG_RE.test(lang)) {
    throw new PaliGemmaError(`invalid lang ${JSON.stringify(lang)}: expected a language code such as "en"`, 'invalid_argument');
  }
  return lang;
}

function checkLabel(label: string, what: string): string {
  if (typeof label !== 'string') throw new PaliGemmaError(`invalid ${what}: expected a string`, 'invalid_argument');
  const t = label.trim().replace(/\s+/g, ' ');
  if (t === '') throw new PaliGemmaError(`invalid ${what}: empty`, 'invalid_argument');
  // ';' separates objects in the prompt and the answer; '<' would start a special token.
  if (/[;\n<>]/.test(t)) throw new PaliGemmaError(`invalid ${what} ${JSON.stringify(label)}: must not contain ';', '<', '>' or a newline`, 'invalid_argument');
  return t;
}

export function captionPrompt(lang = 'en'): string {
  return `caption ${checkLang(lang)}`;
}

export function ocrPrompt(): string {
  return 'ocr';
}

export function answerPrompt(question: string, lang = 'en'): string {
  if (typeof question !== 'string' || question.trim() === '') {
    throw new PaliGemmaError('invalid question: empty', 'invalid_argument');
  }
  return `answer ${checkLang(lang)} ${question.trim().replace(/\s+/g, ' ')}`;
}

/** `detect a ; b ; c`: one prompt may ask for several object classes. */
export function detectPrompt(labels: string | readonly string[]): string {
  const list = typeof labels === 'string' ? [labels] : [...labels];
  if (list.length === 0) throw new PaliGemmaError('detect needs at least one label', 'invalid_argument');
  return `detect ${list.map((l) => checkLabel(l, 'detect label')).join(' ; ')}`;
}

/** `segment a`: the mix checkpoints segment one referring expression at a time. */
export function segmentPrompt(label: string): string {
  return `segment ${checkLabel(label, 'segment label')}`;
}
