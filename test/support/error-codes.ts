/**
 * Every PaliGemmaError code the source can throw, read from the syntax tree of src/**.ts (the
 * TypeScript compiler's parser, so that messages spanning template literals and nested calls
 * are read as code, not matched by a regular expression):
 * - `new PaliGemmaError(message, 'code')`, and `'invalid_input'` where the code is left out;
 * - `super(message, 'code')` in a class that extends PaliGemmaError;
 * - a code held in a local name is followed to the literals assigned to it, and a code passed
 *   as a parameter to the literals the function's callers in the same file pass (or its
 *   default); anything else is reported as dynamic, so that the scan never misses a code.
 * Other error classes with a code (the server's RequestError) are read the same way.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import ts from 'typescript';

export interface CodeUse { code: string; file: string; line: number }
export interface CodeScan { uses: CodeUse[]; dynamic: Array<{ file: string; line: number; text: string }> }

const DEFAULT_CODE = 'invalid_input';

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    if (e.isDirectory()) return sourceFiles(p);
    return e.name.endsWith('.ts') && !e.name.endsWith('.d.ts') ? [p] : [];
  });
}

/** String literals an expression can evaluate to (conditionals and ?? / || branches), or undefined if any branch is not one. */
function literals(e: ts.Expression): string[] | undefined {
  if (ts.isStringLiteral(e) || ts.isNoSubstitutionTemplateLiteral(e)) return [e.text];
  if (ts.isParenthesizedExpression(e) || ts.isAsExpression(e)) return literals(e.expression);
  if (ts.isConditionalExpression(e)) {
    const a = literals(e.whenTrue), b = literals(e.whenFalse);
    return a && b ? [...a, ...b] : undefined;
  }
  if (ts.isBinaryExpression(e) && (e.operatorToken.kind === ts.SyntaxKind.QuestionQuestionToken || e.operatorToken.kind === ts.SyntaxKind.BarBarToken)) {
    const a = literals(e.left), b = literals(e.right);
    return a && b ? [...a, ...b] : b;
  }
  return undefined;
}

/** An error constructor whose code the scan reads: the argument position and the default code. */
interface Thrower { arg: number; defaultCode: string }

export function scanErrorCodes(srcDir: string, throwers: Record<string, Thrower> = { PaliGemmaError: { arg: 1, defaultCode: DEFAULT_CODE } }): CodeScan {
  const uses: CodeUse[] = [];
  const dynamic: CodeScan['dynamic'] = [];
  const names = Object.keys(throwers);
  for (const path of sourceFiles(srcDir)) {
    const text = readFileSync(path, 'utf8');
    if (!names.some((n) => text.includes(n))) continue;
    const file = relative(join(srcDir, '..'), path);
    const sf = ts.createSourceFile(path, text, ts.ScriptTarget.Latest, true);
    const lineOf = (n: ts.Node) => sf.getLineAndCharacterOfPosition(n.getStart(sf)).line + 1;
    // Literals assigned to each local name in this file (`const code = a ? 'x' : 'y'`).
    const assigned = new Map<string, string[] | undefined>();
    const note = (name: string, value: ts.Expression | undefined) => {
      if (!value) return;
      const got = literals(value);
      const had = assigned.get(name);
      assigned.set(name, got && (had !== undefined || !assigned.has(name)) ? [...(had ?? []), ...got] : undefined);
    };
    const calls: ts.CallExpression[] = [];
    const subclasses = new Map<string, Thrower>();
    const collect = (node: ts.Node): void => {
      if (ts.isVariableDeclaration(node) && ts.isIdentifier(node.name)) note(node.name.text, node.initializer);
      if (ts.isBinaryExpression(node) && node.operatorToken.kind === ts.SyntaxKind.EqualsToken && ts.isIdentifier(node.left)) note(node.left.text, node.right);
      if (ts.isCallExpression(node)) calls.push(node);
      if (ts.isClassDeclaration(node) && node.name) {
        const base = node.heritageClauses?.flatMap((h) => h.types.map((t) => t.expression.getText(sf))).find((b) => b in throwers);
        if (base) subclasses.set(node.name.text, throwers[base]);
      }
      ts.forEachChild(node, collect);
    };
    collect(sf);

    /** Codes an argument can be: literals, a local name's literals, or what callers pass for a parameter. */
    const codesOf = (arg: ts.Expression | undefined, defaultCode: string, depth = 0): string[] | undefined => {
      if (!arg) return [defaultCode];
      const lit = literals(arg);
      if (lit) return lit;
      if (!ts.isIdentifier(arg) || depth > 3) return undefined;
      const fn = ts.findAncestor(arg, (n): n is ts.SignatureDeclaration => ts.isFunctionLike(n)
        && n.parameters.some((p) => ts.isIdentifier(p.name) && p.name.text === arg.text));
      if (!fn) return assigned.get(arg.text);
      const index = fn.parameters.findIndex((p) => ts.isIdentifier(p.name) && p.name.text === arg.text);
      const param = fn.parameters[index];
      const fnName = ts.isFunctionDeclaration(fn) ? fn.name?.text
        : ts.isVariableDeclaration(fn.parent) && ts.isIdentifier(fn.parent.name) ? fn.parent.name.text : undefined;
      if (!fnName) return undefined;
      const fallback = param.initializer ? literals(param.initializer) : undefined;
      const out: string[] = [];
      for (const c of calls) {
        if (!ts.isIdentifier(c.expression) || c.expression.text !== fnName) continue;
        const given = c.arguments[index];
        const got = given ? codesOf(given, defaultCode, depth + 1) : fallback;
        if (!got) return undefined;
        out.push(...got);
      }
      return out.length > 0 ? out : fallback;
    };
    const record = (node: ts.Node, t: Thrower, args: readonly ts.Expression[] | undefined) => {
      const codes = codesOf(args?.[t.arg], t.defaultCode);
      if (codes) for (const code of codes) uses.push({ code, file, line: lineOf(node) });
      else dynamic.push({ file, line: lineOf(node), text: args![t.arg].getText(sf) });
    };
    const visit = (node: ts.Node): void => {
      if (ts.isNewExpression(node) && ts.isIdentifier(node.expression)) {
        const t = throwers[node.expression.text] ?? subclasses.get(node.expression.text);
        // A subclass fixes its own code in super(); a `new` of it is counted there.
        if (t && node.expression.text in throwers && !path.endsWith(join('interfaces', 'errors.ts'))) record(node, t, node.arguments);
      }
      if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.SuperKeyword) {
        const cls = ts.findAncestor(node, ts.isClassDeclaration);
        const t = cls?.name ? subclasses.get(cls.name.text) : undefined;
        if (t) record(node, t, node.arguments);
      }
      ts.forEachChild(node, visit);
    };
    visit(sf);
  }
  return { uses, dynamic };
}
