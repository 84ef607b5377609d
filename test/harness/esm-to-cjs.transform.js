'use strict';
// Jest transformer: compiles ES-module .js/.mjs files (Nest 12 and its ESM-only dependencies)
// to CommonJS, so the CommonJS test runtime can require() them on Node < 24.9, where Jest
// cannot require(esm) natively. Files that Node would load as CommonJS (.cjs, or .js whose
// nearest package.json lacks "type": "module") are returned unchanged, so with Nest 11 this
// is a no-op. Uses the project's own `typescript`; no extra dependency.
//
// Before compiling, it rewrites (by syntax tree, never inside strings or comments):
//   import.meta.url / .filename / .dirname  -> file URL of __filename / __filename / __dirname
//   any other import.meta (e.g. .resolve)   -> an object with url, filename, dirname, resolve
//   identifiers require/module/exports/__filename/__dirname, and TypeScript's CommonJS helper
//     names (__importDefault, ...) -> __esm$<name>: in ESM they are never implicitly bound, so
//     they always name the module's own binding (e.g. terminus's
//     `const require = createRequire(import.meta.url)`) or are undefined (`typeof module`).
// Edits never add a line break, so line numbers in stack traces stay right.
// Refuses top-level await (CommonJS cannot express it) with a clear error.
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const ts = require('typescript');

const VERSION = '2';
const SELF = crypto.createHash('sha256').update(fs.readFileSync(__filename)).digest('hex');

const typeByDir = new Map();
/** "module" or "commonjs": the "type" of the nearest package.json, as Node decides. */
function packageType(dir) {
  if (typeByDir.has(dir)) return typeByDir.get(dir);
  let type;
  const pj = path.join(dir, 'package.json');
  if (fs.existsSync(pj)) {
    try {
      type = JSON.parse(fs.readFileSync(pj, 'utf8')).type === 'module' ? 'module' : 'commonjs';
    } catch {
      type = 'commonjs';
    }
  } else {
    const parent = path.dirname(dir);
    type = parent === dir || path.basename(dir) === 'node_modules' ? 'commonjs' : packageType(parent);
  }
  typeByDir.set(dir, type);
  return type;
}

function isEsm(file) {
  if (file.endsWith('.mjs')) return true;
  if (file.endsWith('.cjs') || !file.endsWith('.js')) return false;
  return packageType(path.dirname(file)) === 'module';
}

const FILE_URL = 'require("node:url").pathToFileURL(__filename).href';
const RESOLVE =
  '((s) => { if (require("node:module").isBuiltin(s)) return s.startsWith("node:") ? s : "node:" + s; ' +
  'if (/^[a-z][a-z0-9+.-]+:/i.test(s)) return new URL(s).href; ' +
  'return require("node:url").pathToFileURL(require.resolve(s)).href; })';
const META = `({ url: ${FILE_URL}, filename: __filename, dirname: __dirname, resolve: ${RESOLVE} })`;
// CommonJS wrapper names, and helpers TypeScript declares in its CommonJS output (tslib's own ESM
// entry re-exports `__importDefault` etc. and would clash with them).
const RESERVED = new Set([
  'require',
  'module',
  'exports',
  '__filename',
  '__dirname',
  '__createBinding',
  '__setModuleDefault',
  '__importStar',
  '__importDefault',
  '__exportStar',
  '__rewriteRelativeImportExtension',
  '__esDecorate',
  '__runInitializers',
  '__setFunctionName',
  '__propKey',
  '__addDisposableResource',
  '__disposeResources',
]);
const NEEDS_EDIT = new RegExp(`\\bimport\\s*\\.\\s*meta\\b|\\b(?:${[...RESERVED].join('|')})\\b`);

/** Text edits [start, end, replacement] for import.meta and CommonJS-reserved names; throws on top-level await. */
function collectEdits(sf, file) {
  const edits = [];
  const rename = (id) => `__esm$${id.text}`;
  const visit = (node, inFunction) => {
    if (!inFunction && (ts.isAwaitExpression(node) || (ts.isForOfStatement(node) && node.awaitModifier))) {
      const { line } = sf.getLineAndCharacterOfPosition(node.getStart(sf));
      throw new Error(`esm-to-cjs: top-level await at ${file}:${line + 1} cannot be compiled to CommonJS`);
    }
    if (ts.isMetaProperty(node) && node.keywordToken === ts.SyntaxKind.ImportKeyword) {
      const parent = node.parent;
      const name = ts.isPropertyAccessExpression(parent) && parent.expression === node ? parent.name.text : undefined;
      const simple = { url: FILE_URL, filename: '__filename', dirname: '__dirname' }[name];
      if (simple) edits.push([parent.getStart(sf), parent.getEnd(), `(${simple})`]);
      else edits.push([node.getStart(sf), node.getEnd(), META]);
      return;
    }
    if (ts.isIdentifier(node) && RESERVED.has(node.text)) {
      const p = node.parent;
      const isName = (n) => n === node;
      if (
        (ts.isPropertyAccessExpression(p) && isName(p.name)) ||
        (ts.isQualifiedName(p) && isName(p.right)) ||
        ((ts.isPropertyAssignment(p) ||
          ts.isMethodDeclaration(p) ||
          ts.isPropertyDeclaration(p) ||
          ts.isGetAccessorDeclaration(p) ||
          ts.isSetAccessorDeclaration(p) ||
          ts.isEnumMember(p)) &&
          isName(p.name)) ||
        ((ts.isLabeledStatement(p) || ts.isBreakOrContinueStatement(p)) && p.label === node) ||
        (ts.isBindingElement(p) && p.propertyName === node) ||
        ((ts.isImportSpecifier(p) || ts.isExportSpecifier(p)) && p.propertyName === node)
      ) {
        return; // a property or label name, not a binding
      }
      const start = node.getStart(sf);
      if (ts.isShorthandPropertyAssignment(p)) edits.push([start, node.getEnd(), `${node.text}: ${rename(node)}`]);
      else if (ts.isBindingElement(p) && !p.dotDotDotToken && ts.isObjectBindingPattern(p.parent)) {
        edits.push([start, node.getEnd(), `${node.text}: ${rename(node)}`]);
      } else if (ts.isImportSpecifier(p)) edits.push([start, node.getEnd(), `${node.text} as ${rename(node)}`]);
      else if (ts.isExportSpecifier(p)) {
        // `export { require }` exports the local binding under its own name
        if (!p.parent.parent.moduleSpecifier) edits.push([start, node.getEnd(), `${rename(node)} as ${node.text}`]);
      } else edits.push([start, node.getEnd(), rename(node)]);
      return;
    }
    const fnBoundary = ts.isFunctionLike(node) || ts.isClassStaticBlockDeclaration(node);
    ts.forEachChild(node, (child) => visit(child, inFunction || fnBoundary));
  };
  visit(sf, false);
  return edits;
}

/** `import("<built-in>")` -> `Promise.resolve().then(() => require("<built-in>"))`, by syntax tree; other text unchanged. */
function requireBuiltinImports(text, file) {
  if (!/\bimport\s*\(/.test(text)) return text;
  const sf = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true, ts.ScriptKind.JS);
  const edits = [];
  const visit = (node) => {
    if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword && node.arguments.length >= 1) {
      const spec = node.arguments[0];
      if (ts.isStringLiteralLike(spec) && require('node:module').isBuiltin(spec.text)) {
        edits.push([node.getStart(sf), node.getEnd(), `Promise.resolve().then(() => require(${JSON.stringify(spec.text)}))`]);
        return;
      }
    }
    ts.forEachChild(node, visit);
  };
  visit(sf);
  return edits.length ? applyEdits(text, edits) : text;
}

function applyEdits(text, edits) {
  edits.sort((a, b) => b[0] - a[0]);
  for (const [start, end, replacement] of edits) text = text.slice(0, start) + replacement + text.slice(end);
  return text;
}

const COMPILER_OPTIONS = {
  module: ts.ModuleKind.CommonJS,
  target: ts.ScriptTarget.ES2022,
  allowJs: true,
  esModuleInterop: true, // `import express from 'express'` must get the CommonJS module itself
  importHelpers: false,
  sourceMap: true,
  inlineSourceMap: false,
  removeComments: false,
};

module.exports = {
  getCacheKey(sourceText, sourcePath, options) {
    const esm = isEsm(sourcePath) && !(options && options.supportsStaticESM);
    return crypto
      .createHash('sha256')
      .update(`${VERSION}\0${SELF}\0${ts.version}\0${sourcePath}\0${esm}\0`)
      .update(options && options.configString ? options.configString : '')
      .update('\0')
      .update(sourceText)
      .digest('hex');
  },

  process(sourceText, sourcePath, options) {
    if (options && options.supportsStaticESM) return { code: sourceText };
    // CommonJS files pass unchanged, but for `import("node:…")` of a built-in module (@nats-io/obj
    // loads node:crypto so): Jest runs no dynamic import() without --experimental-vm-modules.
    if (!isEsm(sourcePath)) return { code: requireBuiltinImports(sourceText, sourcePath) };
    const fileName = sourcePath.replace(/\.mjs$/, '.js'); // let TS treat it as plain JS, module kind from options
    let text = sourceText;
    if (NEEDS_EDIT.test(text) || /\bawait\b/.test(text)) {
      const sf = ts.createSourceFile(fileName, text, ts.ScriptTarget.Latest, true, ts.ScriptKind.JS);
      const edits = collectEdits(sf, sourcePath);
      if (edits.length) text = applyEdits(text, edits);
    }
    const out = ts.transpileModule(text, { compilerOptions: COMPILER_OPTIONS, fileName, reportDiagnostics: false });
    const code = out.outputText.replace(/\n\/\/# sourceMappingURL=\S+\s*$/, '\n');
    const map = out.sourceMapText ? JSON.parse(out.sourceMapText) : undefined;
    if (map) {
      map.sources = [sourcePath];
      map.sourcesContent = [sourceText];
    }
    return { code, map };
  },
};
