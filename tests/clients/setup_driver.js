#!/usr/bin/env node
'use strict';
/*
 * setup_driver.js: run one real npm SoftAP client library through the whole
 * Photon setup sequence against a (simulated) device, and print ONE JSON line.
 *
 * INPUT (one JSON object), taken from the first of:
 *   1. the environment variable SOFTAP_DRIVER_ARGS   (preferred; what tests/conformance/test_real_clients.py uses)
 *   2. the first command-line argument               (node setup_driver.js '<json>')
 * Either way the driver removes it (deletes the variable, strips process.argv)
 * BEFORE loading any library: softap-setup 1.x/3.x read their settings through
 * nconf from defaults.json, then ALL environment variables, then process.argv
 * via yargs, and we don't want the JSON to leak into that configuration.
 * Host/port (and protocol for 3.x) are then given to 1.x/3.x both as
 * SOFTAP_HOST/SOFTAP_PORT/SOFTAP_PROTOCOL (set in process.env before the
 * library is required) and as constructor options.
 *
 *   {
 *     "lib": "particle-4.1.2" | "js1" | "js3" | "ts",
 *     "protocol": "tcp" | "http",           (js1: tcp only)
 *     "host": "127.0.0.1", "port": 5609,
 *     "ssid": "...", "password": "...",
 *     "security": "wpa2_aes",                (a name from the library's own table)
 *     "channel": 6 | null,                   (null -> the library sends "ch":null)
 *     "claimCode": "<63 chars>",
 *     "steps": ["deviceInfo", ...],         (optional; default: the full sequence; a repeated
 *                                            step is reported as "name#2", "name#3", ...)
 *     "stepTimeoutMs": 15000,                (optional per-step watchdog)
 *     "continueOnError": false               (optional; default: stop at the first failed step)
 *   }
 *
 * Full sequence: deviceInfo, scan, publicKey, setClaimCode, configure, connect,
 * run in the order given. Every step uses the library's own public API on ONE
 * client object (the public key obtained by publicKey() is what configure()
 * encrypts the password with).
 *
 * OUTPUT: exactly one JSON line on stdout:
 *   {
 *     "ok": bool,                 true iff every requested step called back without error
 *     "lib": ..., "protocol": ...,
 *     "steps": { "<step>": {"ok": true, "result": <callback data, raw; undefined -> null>, "ms": n}
 *                         | {"ok": false, "error": "<message>", "ms": n},
 *                 ... skipped steps are absent },
 *     "extraCallbacks": {"<step>": n},   callbacks after the first one (4.x calls back twice on error)
 *     "uncaught": ["<step>: <message>"], exceptions thrown inside the library after its step ended
 *     "error": "<why ok is false>" | null
 *   }
 * Results are passed back as the library delivers them, unchecked: e.g. the
 * 4.x/ts configure() result is the raw {"r": n} (the library does not check r),
 * 4.x scan() returns the scans array while 1.x/3.x return the whole object.
 *
 * Defences (clients.md §2.1 "Using it in tests"): every callback goes through
 * a once-guard, each step has a watchdog, exceptions thrown inside socket
 * handlers are caught (process 'uncaughtException') and reported, and the
 * process always exits (explicitly, so keep-alive sockets cannot hold it).
 * 1.x/3.x never call back when the device closes without sending data; the
 * driver notices the close and reports that instead of waiting for the watchdog.
 * Exit status: 0 when ok, 1 when a step failed, 2 for bad driver input.
 */

const path = require('path');

const FULL_SEQUENCE = ['deviceInfo', 'scan', 'publicKey', 'setClaimCode', 'configure', 'connect'];
const LIBS = {
	'particle-4.1.2': { protocols: ['tcp', 'http'] },
	js1: { protocols: ['tcp'] },
	js3: { protocols: ['tcp', 'http'] },
	ts: { protocols: ['tcp', 'http'] }
};
const DEFAULT_STEP_TIMEOUT_MS = 15000;
// After a 1.x/3.x socket closed without a callback, wait this long before
// declaring that the library will never call back.
const CLOSE_GRACE_MS = 300;

let finished = false;
const report = {
	ok: false,
	lib: null,
	protocol: null,
	steps: {},
	extraCallbacks: {},
	uncaught: [],
	error: null
};
let currentStep = null; // { name, settle(err, result) } while a step is running
let lastStepName = null; // the step that ran most recently (for late exceptions)

function errorText(err) {
	if (err === undefined || err === null) {
		return String(err);
	}
	if (err instanceof Error) {
		return err.message || String(err);
	}
	try {
		return typeof err === 'string' ? err : JSON.stringify(err);
	} catch (_e) {
		return String(err);
	}
}

function finish(exitCode) {
	if (finished) {
		return;
	}
	finished = true;
	let line;
	try {
		line = JSON.stringify(report);
	} catch (err) {
		line = JSON.stringify({ ok: false, steps: {}, error: 'cannot serialise report: ' + errorText(err) });
	}
	// stdout to a pipe or file is synchronous on Linux; still exit from the write callback.
	process.stdout.write(line + '\n', function exitAfterWrite() {
		process.exit(exitCode);
	});
	// Hard stop in case the write callback never comes.
	setTimeout(function forceExit() { process.exit(exitCode); }, 2000).unref();
}

function fail(message, exitCode) {
	report.ok = false;
	report.error = message;
	finish(exitCode === undefined ? 1 : exitCode);
}

process.on('uncaughtException', function onUncaught(err) {
	const msg = 'uncaught exception: ' + errorText(err);
	if (currentStep) {
		currentStep.settle(new Error(msg));
	} else {
		report.uncaught.push((lastStepName || '(before any step)') + ': ' + errorText(err));
	}
});
process.on('unhandledRejection', function onRejection(reason) {
	const msg = 'unhandled rejection: ' + errorText(reason);
	if (currentStep) {
		currentStep.settle(new Error(msg));
	} else {
		report.uncaught.push((lastStepName || '(before any step)') + ': ' + errorText(reason));
	}
});

function readArgs() {
	let raw = process.env.SOFTAP_DRIVER_ARGS;
	delete process.env.SOFTAP_DRIVER_ARGS;
	const argvJson = process.argv[2];
	// Strip our arguments so yargs (inside 1.x/3.x) sees nothing.
	process.argv.splice(2);
	if (raw === undefined || raw === '') {
		raw = argvJson;
	}
	if (raw === undefined || raw === '') {
		throw new Error('no input: set SOFTAP_DRIVER_ARGS or pass the JSON as the first argument');
	}
	const args = JSON.parse(raw);
	if (!args || typeof args !== 'object' || Array.isArray(args)) {
		throw new Error('input must be a JSON object');
	}
	if (!Object.prototype.hasOwnProperty.call(LIBS, args.lib)) {
		throw new Error('unknown lib ' + JSON.stringify(args.lib) + '; expected one of ' + Object.keys(LIBS).join(', '));
	}
	args.protocol = args.protocol || 'tcp';
	if (LIBS[args.lib].protocols.indexOf(args.protocol) < 0) {
		throw new Error(args.lib + ' does not support protocol ' + JSON.stringify(args.protocol));
	}
	if (typeof args.host !== 'string' || !args.host) {
		throw new Error('"host" must be a non-empty string');
	}
	if (!Number.isInteger(args.port) || args.port <= 0 || args.port > 65535) {
		throw new Error('"port" must be an integer 1..65535');
	}
	const steps = args.steps === undefined || args.steps === null ? FULL_SEQUENCE : args.steps;
	if (!Array.isArray(steps) || steps.some(function bad(s) { return FULL_SEQUENCE.indexOf(s) < 0; })) {
		throw new Error('"steps" must be a list drawn from ' + FULL_SEQUENCE.join(', '));
	}
	args.steps = steps;
	args.stepTimeoutMs = args.stepTimeoutMs || DEFAULT_STEP_TIMEOUT_MS;
	return args;
}

/** Make the library client object for args.lib / args.protocol. */
function makeClient(args) {
	const here = __dirname;
	const req = function requireFromHere(name) {
		return require(require.resolve(name, { paths: [here] }));
	};
	switch (args.lib) {
	case 'particle-4.1.2': {
		const SoftAPSetup = req('@particle/softap-setup');
		// No environment variables are read by 4.x: options only.
		return new SoftAPSetup({ host: args.host, port: args.port, protocol: args.protocol });
	}
	case 'js1':
	case 'js3': {
		// nconf reads process.env when the library is first required.
		process.env.SOFTAP_HOST = args.host;
		process.env.SOFTAP_PORT = String(args.port);
		if (args.lib === 'js3') {
			process.env.SOFTAP_PROTOCOL = args.protocol;
		}
		const SoftAPSetup = req(args.lib === 'js1' ? 'softap-setup-1' : 'softap-setup-3');
		const opts = { host: args.host, port: args.port };
		if (args.lib === 'js3') {
			opts.protocol = args.protocol;
		}
		return new SoftAPSetup(opts);
	}
	case 'ts': {
		const loadTs = require(path.join(here, 'load_softap_setup_ts.js'));
		const SoftAPSetup = loadTs().SoftAPSetup;
		return new SoftAPSetup({ host: args.host, port: args.port, protocol: args.protocol });
	}
	default:
		throw new Error('unreachable');
	}
}

/**
 * Start one step. `invoke(cb)` calls the library; it may return the socket
 * (1.x/3.x over TCP do), which lets us notice a close without a callback.
 */
function runStep(name, args, invoke, done) {
	const started = Date.now();
	let settled = false;
	let watchdog = null;
	let graceTimer = null;

	function settle(err, result) {
		if (settled) {
			report.extraCallbacks[name] = (report.extraCallbacks[name] || 0) + 1;
			if (err) {
				report.uncaught.push(name + ': late error: ' + errorText(err));
			}
			return;
		}
		settled = true;
		clearTimeout(watchdog);
		clearTimeout(graceTimer);
		currentStep = null;
		const ms = Date.now() - started;
		if (err) {
			report.steps[name] = { ok: false, error: errorText(err), ms: ms };
		} else {
			report.steps[name] = { ok: true, result: result === undefined ? null : result, ms: ms };
		}
		// Let the library finish its own handler before the next step starts.
		setImmediate(function next() { done(!err); });
	}

	currentStep = { name: name, settle: settle };
	lastStepName = name;
	watchdog = setTimeout(function stepTimedOut() {
		settle(new Error('driver watchdog: no callback within ' + args.stepTimeoutMs + ' ms'));
	}, args.stepTimeoutMs);

	let sock;
	try {
		sock = invoke(function libraryCallback(err, result) {
			settle(err, result);
		});
	} catch (err) {
		settle(new Error('threw: ' + errorText(err)));
		return;
	}
	if (sock && typeof sock.once === 'function' && !settled) {
		// 1.x/3.x: they never call back when no data arrives (the device may close
		// with zero bytes, or an error may have no handler). Report it promptly.
		sock.once('close', function socketClosed() {
			if (settled) {
				return;
			}
			graceTimer = setTimeout(function noCallbackAfterClose() {
				settle(new Error('no callback: the connection closed without a usable reply ' +
					'(this library would wait forever)'));
			}, CLOSE_GRACE_MS);
		});
	}
}

function stepInvoker(client, args, name) {
	switch (name) {
	case 'deviceInfo':
		return function deviceInfo(cb) { return client.deviceInfo(cb); };
	case 'scan':
		return function scan(cb) { return client.scan(cb); };
	case 'publicKey':
		return function publicKey(cb) { return client.publicKey(cb); };
	case 'setClaimCode':
		return function setClaimCode(cb) { return client.setClaimCode(args.claimCode, cb); };
	case 'configure':
		return function configure(cb) {
			// The documented flow: publicKey() first, then configure({ssid, security, password, channel}).
			// channel null/undefined -> parseInt gives NaN -> "ch":null on the wire (clients.md §2.1).
			const opts = { ssid: args.ssid, security: args.security, channel: args.channel };
			if (args.password !== undefined && args.password !== null) {
				opts.password = args.password;
			}
			return client.configure(opts, cb);
		};
	case 'connect':
		// ts: only the connect(cb) form works (connect(index, cb) is broken, clients.md §2.3).
		// js1's connect(cb) sends no body; 4.x/js3/ts send {"idx":0}.
		return function connect(cb) { return client.connect(cb); };
	default:
		throw new Error('unknown step ' + name);
	}
}

function main() {
	let args;
	try {
		args = readArgs();
	} catch (err) {
		fail('bad driver input: ' + errorText(err), 2);
		return;
	}
	report.lib = args.lib;
	report.protocol = args.protocol;

	let client;
	try {
		client = makeClient(args);
	} catch (err) {
		fail('cannot create client: ' + errorText(err), 1);
		return;
	}

	let i = 0;
	let allOk = true;
	let firstError = null;
	let lastKey = null;
	const seen = {};
	function next(prevOk) {
		if (prevOk === false) {
			allOk = false;
			if (!firstError) {
				firstError = lastKey + ': ' + report.steps[lastKey].error;
			}
			if (!args.continueOnError) {
				report.ok = false;
				report.error = firstError;
				finish(1);
				return;
			}
		}
		if (i >= args.steps.length) {
			report.ok = allOk;
			report.error = firstError;
			// Give the library a moment to surface late callbacks/exceptions.
			setTimeout(function done() { finish(allOk ? 0 : 1); }, 20);
			return;
		}
		const name = args.steps[i++];
		// A step may be repeated; later runs are reported as "name#2", "name#3", ...
		seen[name] = (seen[name] || 0) + 1;
		lastKey = seen[name] === 1 ? name : name + '#' + seen[name];
		runStep(lastKey, args, stepInvoker(client, args, name), next);
	}
	next(true);
}

main();
