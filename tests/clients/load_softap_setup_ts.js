'use strict';
/*
 * Loader for softap-setup-ts@1.2.1, which cannot be require()d as published
 * (clients.md §2.3): its index.js uses an ES `import` without a file extension
 * and lib/SoftAP.js mixes require() with `export { … }`.
 *
 * We rewrite ONLY the module statements, the way a bundler would, and leave the
 * library's code untouched:
 *   import { A, B as C } from './x';   ->  var __imp0 = require('./x'); var A = __imp0.A, C = __imp0.B;
 *   export { A, B as C };               ->  exports.A = A; exports.C = B;
 * Each file is compiled as an ordinary CommonJS module under its real filename
 * (so its own require('node-rsa') resolves from the package) and placed in
 * require.cache before index.js is compiled, so index.js's rewritten
 * require('./lib/SoftAP') gets the patched module.
 *
 * Usage: const { SoftAPSetup } = require('./load_softap_setup_ts')();
 */
const fs = require('fs');
const path = require('path');
const Module = require('module');

const IMPORT_RE = /^[ \t]*import\s*\{([^}]*)\}\s*from\s*(['"])([^'"]+)\2\s*;?[ \t]*$/gm;
const EXPORT_RE = /^[ \t]*export\s*\{([^}]*)\}\s*;?[ \t]*$/gm;

function splitSpecifiers(list) {
	return list.split(',').map(function trim(s) { return s.trim(); }).filter(Boolean).map(function pair(s) {
		const m = /^([A-Za-z_$][\w$]*)(?:\s+as\s+([A-Za-z_$][\w$]*))?$/.exec(s);
		if (!m) {
			throw new Error('softap-setup-ts loader: cannot rewrite specifier ' + JSON.stringify(s));
		}
		return { local: m[1], exported: m[2] || m[1] };
	});
}

/** Rewrite the ES module statements of one file; returns { source, rewrites }. */
function rewriteModuleSyntax(source) {
	let rewrites = 0;
	let n = 0;
	let out = source.replace(IMPORT_RE, function importToRequire(_all, specs, _q, from) {
		rewrites += 1;
		const tmp = '__softapTsImport' + (n++);
		const vars = splitSpecifiers(specs).map(function decl(p) {
			// for imports, `{ A as B }` binds local B to the module's export A
			return p.exported + ' = ' + tmp + '.' + p.local;
		});
		return 'var ' + tmp + ' = require(' + JSON.stringify(from) + ');' +
			(vars.length ? ' var ' + vars.join(', ') + ';' : '');
	});
	out = out.replace(EXPORT_RE, function exportToCommonJs(_all, specs) {
		rewrites += 1;
		return splitSpecifiers(specs).map(function assign(p) {
			return 'exports.' + p.exported + ' = ' + p.local + ';';
		}).join(' ');
	});
	// Anything ES-module-like left over means the package is not the one we expect.
	if (/^[ \t]*(import|export)\s/m.test(out)) {
		throw new Error('softap-setup-ts loader: unsupported import/export statement left after rewriting');
	}
	return { source: out, rewrites: rewrites };
}

function compileInto(filename, parent) {
	const raw = fs.readFileSync(filename, 'utf8');
	const rewritten = rewriteModuleSyntax(raw);
	if (rewritten.rewrites === 0) {
		throw new Error('softap-setup-ts loader: nothing to rewrite in ' + filename + ' (unexpected package layout)');
	}
	const mod = new Module(filename, parent);
	mod.filename = filename;
	mod.paths = Module._nodeModulePaths(path.dirname(filename));
	require.cache[filename] = mod;
	try {
		mod._compile(rewritten.source, filename);
	} catch (err) {
		delete require.cache[filename];
		throw err;
	}
	mod.loaded = true;
	return mod.exports;
}

let cached;

/** Load softap-setup-ts and return its exports ({ SoftAPSetup }). */
function loadSoftApSetupTs() {
	if (cached) {
		return cached;
	}
	const pkgJson = require.resolve('softap-setup-ts/package.json');
	const root = path.dirname(pkgJson);
	// lib/SoftAP.js first, so index.js's require('./lib/SoftAP') hits the cache.
	compileInto(path.join(root, 'lib', 'SoftAP.js'), module);
	cached = compileInto(path.join(root, 'index.js'), module);
	if (typeof cached.SoftAPSetup !== 'function') {
		throw new Error('softap-setup-ts loader: index.js did not export SoftAPSetup');
	}
	return cached;
}

module.exports = loadSoftApSetupTs;
module.exports.rewriteModuleSyntax = rewriteModuleSyntax;
