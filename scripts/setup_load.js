#!/usr/bin/env node
'use strict';
/*
 * setup_load.js: run many full Photon SoftAP setups concurrently in ONE node
 * process, each with its own client object of the real npm library
 * @particle/softap-setup 4.1.2 (loaded from tests/clients/node_modules by an
 * absolute path), and stream one JSON line per finished setup on stdout.
 * It is the load generator of scripts/bench_setup.py; one process keeps the
 * driver's own cost low (a process per setup would cost far more than a setup).
 *
 * INPUT: one JSON object in the environment variable SETUP_LOAD_ARGS:
 *   {
 *     "protocol": "tcp" | "http",
 *     "targets": [{"host": "127.0.0.1", "port": 5609}, ...],   device d is targets[d]
 *     "mode": "gated" | "free",
 *     "budget": n,                 setups to start in total; then drain and exit
 *     "concurrency": k,            free mode only: k workers; worker w uses targets[w % len]
 *     "steps": ["deviceInfo", "scan", "publicKey", "setClaimCode", "configure", "connect"],
 *     "ssid", "password", "security", "channel", "claimCode",
 *     "stepTimeoutMs": 15000,      per-step watchdog
 *     "waitClaim": false,          gated mode: after connect, wait for {"ev":"claimed"}
 *     "claimTimeoutMs": 30000,
 *     "freshHttpSockets": true     HTTP: before each setup, destroy the idle keep-alive sockets
 *                                  of node's global agent to that device (see below)
 *   }
 *
 * HTTP and keep-alive: 4.x uses http.request with node's global agent, which keeps
 * connections alive since node 19. The device closes every connection when its AP goes
 * down after connect-ap; between two real setups the phone also changes networks, so no
 * idle socket survives. Here the next setup on the same device can start within
 * milliseconds, before node has processed that FIN, and the agent then hands out the dead
 * socket: the first request fails with "socket hang up". freshHttpSockets (default true)
 * models the network change; false shows the race (an app that sets up two devices
 * back to back over HTTP, all of them at 192.168.0.1:80, can meet it).
 *
 * gated mode (our emulator: a device serves one setup per listening session):
 *   stdin  <- JSON lines from the emulator process:
 *             {"ev":"ready","d":i,"code":"<claim code or absent>"}  device i listens: set it up
 *             {"ev":"claimed","d":i,"t":<monotonic s>}             the cloud confirmed its claim
 *   fd serverFd (a pipe the parent passes; "serverFd" in the input) -> JSON lines to the emulator process: {"op":"recycle","d":i} after each setup
 *             (the emulator then brings device i back into listening mode and says ready).
 * free mode (a stateless peer such as softap-emulator-js): k workers loop back to back,
 *   no stdin, no serverFd.
 *
 * OUTPUT (stdout), one JSON line per event:
 *   {"ev":"setup","d":i,"ok":bool,"t0":s,"t1":s,"steps":{"<step>":[ok,ms,"error"?]},
 *    "error":"<step>: <message>"|null,"claimMs":ms|null}
 *      t0/t1: process.hrtime (CLOCK_MONOTONIC on Linux, the clock of Python's
 *      time.monotonic()), in seconds; t1 is the connect callback, or the claim when
 *      waitClaim is set; claimMs = connect callback -> claimed event.
 *   {"ev":"uncaught","message":"..."}   an exception thrown inside the library outside
 *      any callback (4.x throws after calling back with an error, clients.md §2.1)
 *   {"ev":"done","started":n,"finished":n,"extraCallbacks":n}   last line; then exit 0.
 * Exit status 2: bad input.
 */

const path = require('path');
const http = require('http');
const net = require('net');
const readline = require('readline');

const REPO = path.resolve(__dirname, '..');
const SoftAPSetup = require(path.join(REPO, 'tests', 'clients', 'node_modules', '@particle', 'softap-setup'));

const FULL_SEQUENCE = ['deviceInfo', 'scan', 'publicKey', 'setClaimCode', 'configure', 'connect'];

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

function now() {
	return Number(process.hrtime.bigint()) / 1e9;
}

let out = [];
let flushScheduled = false;
function emit(obj) {
	// batch the lines of one loop turn into one write
	out.push(JSON.stringify(obj));
	if (!flushScheduled) {
		flushScheduled = true;
		setImmediate(function flush() {
			flushScheduled = false;
			const text = out.join('\n') + '\n';
			out = [];
			process.stdout.write(text);
		});
	}
}

let args;
try {
	args = JSON.parse(process.env.SETUP_LOAD_ARGS || '');
	delete process.env.SETUP_LOAD_ARGS;
	if (!Array.isArray(args.targets) || args.targets.length === 0) {
		throw new Error('"targets" must be a non-empty list');
	}
	if (['tcp', 'http'].indexOf(args.protocol || 'tcp') < 0) {
		throw new Error('"protocol" must be tcp or http');
	}
	args.protocol = args.protocol || 'tcp';
	args.mode = args.mode || 'gated';
	args.steps = args.steps || FULL_SEQUENCE;
	if (args.steps.some(function bad(s) { return FULL_SEQUENCE.indexOf(s) < 0; })) {
		throw new Error('"steps" must be drawn from ' + FULL_SEQUENCE.join(', '));
	}
	args.stepTimeoutMs = args.stepTimeoutMs || 15000;
	args.claimTimeoutMs = args.claimTimeoutMs || 30000;
	if (!Number.isInteger(args.budget) || args.budget < 1) {
		throw new Error('"budget" must be a positive integer');
	}
} catch (err) {
	process.stderr.write('setup_load: bad input: ' + errorText(err) + '\n');
	process.exit(2);
}

let started = 0;
let finished = 0;
let inFlight = 0;
let extraCallbacks = 0;
let exiting = false;
const claimWaiters = new Map(); // device -> function(t)
const claimedEarly = new Map(); // device -> t (claimed before the driver waited)

process.on('uncaughtException', function onUncaught(err) {
	emit({ ev: 'uncaught', message: errorText(err) });
});
process.on('unhandledRejection', function onRejection(reason) {
	emit({ ev: 'uncaught', message: 'unhandled rejection: ' + errorText(reason) });
});

let toServer = null;
if (args.mode === 'gated') {
	if (!Number.isInteger(args.serverFd) || args.serverFd < 0) {
		process.stderr.write('setup_load: gated mode needs "serverFd"\n');
		process.exit(2);
	}
	toServer = new net.Socket({ fd: args.serverFd, readable: false, writable: true });
	toServer.on('error', function ignore() { /* the emulator process went away */ });
}

function maybeExit() {
	if (exiting || started < args.budget || inFlight > 0) {
		return;
	}
	exiting = true;
	emit({ ev: 'done', started: started, finished: finished, extraCallbacks: extraCallbacks });
	setImmediate(function exitAfterFlush() {
		process.stdout.write('', function exitNow() { process.exit(0); });
	});
}

/** One step with a once-guard and a watchdog; done(err, result). */
function runStep(client, name, claimCode, done) {
	let settled = false;
	const t0 = now();
	const watchdog = setTimeout(function stepTimedOut() {
		settle(new Error('driver watchdog: no callback within ' + args.stepTimeoutMs + ' ms'));
	}, args.stepTimeoutMs);

	function settle(err, result) {
		if (settled) {
			extraCallbacks += 1;
			return;
		}
		settled = true;
		clearTimeout(watchdog);
		const ms = (now() - t0) * 1e3;
		setImmediate(function next() { done(err, result, ms); });
	}

	try {
		switch (name) {
		case 'deviceInfo':
			client.deviceInfo(settle);
			break;
		case 'scan':
			client.scan(settle);
			break;
		case 'publicKey':
			client.publicKey(settle);
			break;
		case 'setClaimCode':
			client.setClaimCode(claimCode, settle);
			break;
		case 'configure': {
			const opts = { ssid: args.ssid, security: args.security, channel: args.channel };
			if (args.password !== undefined && args.password !== null) {
				opts.password = args.password;
			}
			client.configure(opts, settle);
			break;
		}
		case 'connect':
			client.connect(settle);
			break;
		default:
			settle(new Error('unknown step ' + name));
		}
	} catch (err) {
		settle(new Error('threw: ' + errorText(err)));
	}
}

function waitForClaim(device, cb) {
	if (claimedEarly.has(device)) {
		const t = claimedEarly.get(device);
		claimedEarly.delete(device);
		cb(null, t);
		return;
	}
	const timer = setTimeout(function claimTimedOut() {
		claimWaiters.delete(device);
		cb(new Error('no claim confirmation within ' + args.claimTimeoutMs + ' ms'));
	}, args.claimTimeoutMs);
	claimWaiters.set(device, function claimed(t) {
		clearTimeout(timer);
		claimWaiters.delete(device);
		cb(null, t);
	});
}

/** Destroy the global agent's idle keep-alive sockets to one target (see the header). */
function dropIdleSockets(target) {
	const prefix = target.host + ':' + target.port + ':';
	const free = http.globalAgent.freeSockets;
	Object.keys(free).forEach(function each(name) {
		if (name.indexOf(prefix) === 0) {
			free[name].slice().forEach(function destroy(sock) { sock.destroy(); });
		}
	});
}

/** One full setup of device d with a fresh client object; then onDone(). */
function runSetup(d, claimCode, onDone) {
	started += 1;
	inFlight += 1;
	claimedEarly.delete(d); // a confirmation left over from an earlier session
	const target = args.targets[d];
	if (args.protocol === 'http' && args.freshHttpSockets !== false) {
		dropIdleSockets(target);
	}
	const client = new SoftAPSetup({ host: target.host, port: target.port, protocol: args.protocol });
	const report = { ev: 'setup', d: d, ok: false, t0: now(), t1: null, steps: {}, error: null, claimMs: null };
	let i = 0;

	function finish(error) {
		report.ok = !error;
		report.error = error || null;
		report.t1 = report.t1 || now();
		finished += 1;
		inFlight -= 1;
		emit(report);
		onDone(d);
		maybeExit();
	}

	function next() {
		if (i >= args.steps.length) {
			if (args.waitClaim && args.steps[args.steps.length - 1] === 'connect') {
				const tConnect = now();
				waitForClaim(d, function claimed(err, t) {
					if (err) {
						finish('claim: ' + errorText(err));
						return;
					}
					report.t1 = t;
					report.claimMs = (t - tConnect) * 1e3;
					finish(null);
				});
				return;
			}
			finish(null);
			return;
		}
		const name = args.steps[i++];
		runStep(client, name, claimCode || args.claimCode, function stepDone(err, _result, ms) {
			if (err) {
				report.steps[name] = [false, ms, errorText(err)];
				finish(name + ': ' + errorText(err));
				return;
			}
			report.steps[name] = [true, ms];
			next();
		});
	}
	next();
}

if (args.mode === 'free') {
	const k = Math.max(1, args.concurrency || args.targets.length);
	const worker = function worker(w) {
		if (started >= args.budget) {
			maybeExit();
			return;
		}
		runSetup(w % args.targets.length, null, function again() {
			setImmediate(function loop() { worker(w); });
		});
	};
	for (let w = 0; w < k; w++) {
		worker(w);
	}
} else {
	const recycle = function recycle(d) {
		if (started < args.budget) {
			toServer.write(JSON.stringify({ op: 'recycle', d: d }) + '\n');
		}
	};
	const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
	rl.on('line', function onLine(line) {
		if (!line) {
			return;
		}
		let msg;
		try {
			msg = JSON.parse(line);
		} catch (err) {
			emit({ ev: 'uncaught', message: 'bad line from the emulator: ' + errorText(err) });
			return;
		}
		if (msg.ev === 'ready') {
			if (started < args.budget) {
				runSetup(msg.d, msg.code, recycle);
			}
		} else if (msg.ev === 'claimed') {
			const waiter = claimWaiters.get(msg.d);
			if (waiter) {
				waiter(msg.t);
			} else {
				claimedEarly.set(msg.d, msg.t);
			}
		}
	});
	rl.on('close', function stdinClosed() {
		// the emulator process ended: nothing more will become ready
		args.budget = Math.min(args.budget, started);
		maybeExit();
	});
}
