#!/usr/bin/env node
'use strict';
/*
 * cloud_driver.js: drive the embedded local cloud with the REAL particle-api-js
 * (pinned 12.0.3 in package.json) and print ONE JSON line with every step's
 * result, exactly as the library surfaces it.
 *
 * INPUT (one JSON object) from the environment variable CLOUD_DRIVER_ARGS, or
 * the first command-line argument (node cloud_driver.js '<json>'); the variable
 * is deleted before the library is loaded.
 *
 *   {
 *     "baseUrl": "http://127.0.0.1:PORT",
 *     "clientId": "...", "clientSecret": "...",   (the default Particle instance)
 *     "stepTimeoutMs": 8000,                      (optional per-step watchdog)
 *     "deadlineMs": 30000,                        (optional whole-run watchdog)
 *     "steps": [ {"op": "<op>", "id": "<name>", ...args}, ... ]
 *   }
 *
 * Every step runs on a `new Particle({baseUrl, clientId, clientSecret})`; a step
 * may override the instance with "clientId"/"clientSecret" and give it a default
 * token with "instanceAuth" (the library then sends that Bearer on every call,
 * login included, cloud-api.md §10.3).
 *
 * References: any string value "{{<stepId>.<path>}}" is replaced by that value
 * of an earlier step's result (e.g. "{{login.body.access_token}}"); a string
 * that is only the reference takes the raw value (number, object...). A
 * reference to a missing value fails the step (ok:false, error "driver_ref").
 *
 * Ops (library method in brackets; "auth" is the Bearer token where it applies):
 *   login               {username, password, tokenDuration?}          [login]
 *   loginAsClientOwner  {}                                            [loginAsClientOwner]
 *   createCustomer      {email, password, product}                    [createCustomer]
 *   request             {uri, method, form?, data?, query?, headers?, auth?,
 *                        basic?: {user, pass}}                         [request]
 *                       "basic" is a convenience that adds the header
 *                       "Authorization: Basic base64(user:pass)".
 *   getClaimCode        {product?, iccid?, auth}                      [getClaimCode]
 *   listDevices         {product?, perPage?, page?, auth}             [listDevices]
 *   getDevice           {deviceId, product?, auth}                    [getDevice]
 *   callFunction        {deviceId, name, argument, product?, auth}    [callFunction]
 *   getVariable         {deviceId, name, product?, auth}              [getVariable]
 *   deleteAccessToken   {token}                                       [deleteAccessToken]
 *   claimDevice         {deviceId, requestTransfer?, auth}            [claimDevice]
 *   getEventStream      {deviceId?, name?, product?, org?, auth, count=1, timeoutMs=5000}
 *                       [getEventStream]: collects `count` events or stops at
 *                       timeoutMs, then aborts the stream. Once connected it
 *                       writes {"stream_open": "<step id>"} as one line to
 *                       STDERR, so a caller can publish only after subscribing.
 *   sleep               {ms}
 *
 * OUTPUT: exactly one JSON line on stdout:
 *   {"ok": bool (every step resolved), "library": "particle-api-js@12.0.3",
 *    "steps": [<result>...], "error": null | "<why the run stopped>"}
 * with each <result> one of
 *   {"id", "op", "ok": true,  "statusCode", "body", "ms"}
 *   {"id", "op", "ok": false, "statusCode", "error": body.error,
 *    "error_description": body.error_description, "shortErrorDescription",
 *    "message", "body", "ms"}
 * ("body" is the parsed error body as the server sent it, without the `response`
 * property the library attaches to it.)
 * getEventStream success: {"ok": true, "statusCode": 200, "events": [...], "stopped": "count"|"timeout", ...}.
 * A missing field is null. A step that exceeds its watchdog gives
 * {"ok": false, "error": "driver_timeout", ...}. Steps never stop the run
 * (error paths are what the tests look at); the process always exits.
 * Exit status: 0 = ran (whatever the step outcomes), 2 = bad driver input.
 */

let raw = process.env.CLOUD_DRIVER_ARGS;
delete process.env.CLOUD_DRIVER_ARGS;
if (raw === undefined && process.argv.length > 2) {
	raw = process.argv[2];
	process.argv.length = 2;
}

const DEFAULT_STEP_TIMEOUT_MS = 8000;
const DEFAULT_DEADLINE_MS = 60000;

const report = { ok: false, library: null, steps: [], error: null };
let finished = false;

function finish(code) {
	if (finished) {
		return;
	}
	finished = true;
	process.stdout.write(JSON.stringify(report) + '\n', () => process.exit(code));
}

function fail(message, code) {
	report.error = message;
	finish(code);
}

let program;
try {
	program = JSON.parse(raw === undefined ? '' : raw);
} catch (e) {
	fail(`bad driver input: ${e.message}`, 2);
	return;
}
if (!program || typeof program !== 'object' || typeof program.baseUrl !== 'string' || !Array.isArray(program.steps)) {
	fail('bad driver input: need {"baseUrl": str, "steps": [...]}', 2);
	return;
}

process.on('uncaughtException', (e) => {
	fail(`uncaught: ${e && e.stack ? e.stack : e}`, 1);
});
process.on('unhandledRejection', (e) => {
	fail(`unhandled rejection: ${e && e.stack ? e.stack : JSON.stringify(e)}`, 1);
});

const Particle = require('particle-api-js');
// the exports map hides package.json: read it from the resolved entry point
report.library = (() => {
	try {
		const path = require('path');
		const fs = require('fs');
		const root = path.resolve(path.dirname(require.resolve('particle-api-js')), '..', '..');
		const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
		return `${pkg.name}@${pkg.version}`;
	} catch (_e) {
		return null;
	}
})();

const stepTimeoutMs = program.stepTimeoutMs || DEFAULT_STEP_TIMEOUT_MS;
const deadline = setTimeout(() => fail('driver deadline exceeded', 1), program.deadlineMs || DEFAULT_DEADLINE_MS);
const results = {};

class DriverError extends Error {
	constructor(code, message) {
		super(message);
		this.driverCode = code;
	}
}

function lookup(ref) {
	const [id, ...path] = ref.split('.');
	if (!Object.prototype.hasOwnProperty.call(results, id)) {
		throw new DriverError('driver_ref', `no earlier step "${id}" (reference {{${ref}}})`);
	}
	let value = results[id];
	for (const key of path) {
		if (value === null || typeof value !== 'object' || !(key in value)) {
			throw new DriverError('driver_ref', `reference {{${ref}}} does not resolve`);
		}
		value = value[key];
	}
	return value;
}

function resolve(value) {
	if (typeof value === 'string') {
		const whole = /^\{\{([^{}]+)\}\}$/.exec(value);
		if (whole) {
			return lookup(whole[1]);
		}
		return value.replace(/\{\{([^{}]+)\}\}/g, (_m, ref) => String(lookup(ref)));
	}
	if (Array.isArray(value)) {
		return value.map(resolve);
	}
	if (value && typeof value === 'object') {
		const out = {};
		for (const [k, v] of Object.entries(value)) {
			out[k] = resolve(v);
		}
		return out;
	}
	return value;
}

function plain(value) {
	// JSON-safe copy; an Error (e.g. the SyntaxError of a non-JSON body) becomes {name, message}
	if (value instanceof Error) {
		return { name: value.name, message: value.message };
	}
	if (value === undefined) {
		return null;
	}
	try {
		return JSON.parse(JSON.stringify(value));
	} catch (_e) {
		return String(value);
	}
}

function field(obj, key) {
	return obj && typeof obj === 'object' && obj[key] !== undefined ? obj[key] : null;
}

function resolved(res) {
	return { ok: true, statusCode: field(res, 'statusCode'), body: plain(field(res, 'body')) };
}

function withoutResponse(body) {
	// the library attaches the fetch Response to the parsed error body as `response`
	// (Agent._promiseResponse); report the body as the server sent it
	const copy = Object.assign({}, body);
	delete copy.response;
	return plain(copy);
}

function rejected(err) {
	// the library's rejection: an Error with statusCode, shortErrorDescription, body (= parsed JSON body);
	// EventStream.connect() rejects with a plain {statusCode, errorDescription, body}
	const body = err && typeof err === 'object' ? err.body : undefined;
	const isObj = body && typeof body === 'object' && !(body instanceof Error);
	return {
		ok: false,
		statusCode: field(err, 'statusCode'),
		error: isObj ? field(body, 'error') : null,
		error_description: isObj ? field(body, 'error_description') : null,
		shortErrorDescription: field(err, 'shortErrorDescription'),
		message: err instanceof Error ? err.message : field(err, 'errorDescription'),
		body: isObj ? withoutResponse(body) : plain(body)
	};
}

function instanceFor(step) {
	const options = {
		baseUrl: program.baseUrl,
		clientId: step.clientId !== undefined ? step.clientId : program.clientId,
		clientSecret: step.clientSecret !== undefined ? step.clientSecret : program.clientSecret
	};
	if (step.instanceAuth) {
		options.auth = step.instanceAuth;
	}
	return new Particle(options);
}

function only(obj, keys) {
	const out = {};
	for (const k of keys) {
		if (obj[k] !== undefined) {
			out[k] = obj[k];
		}
	}
	return out;
}

const OPS = {
	login: (api, s) => api.login(only(s, ['username', 'password', 'tokenDuration'])),
	loginAsClientOwner: (api) => api.loginAsClientOwner({}),
	createCustomer: (api, s) => api.createCustomer(only(s, ['email', 'password', 'product'])),
	request: (api, s) => {
		const args = only(s, ['uri', 'method', 'form', 'data', 'query', 'auth']);
		const headers = Object.assign({}, s.headers || {});
		if (s.basic) {
			const pair = `${s.basic.user}:${s.basic.pass === undefined ? '' : s.basic.pass}`;
			headers.Authorization = `Basic ${Buffer.from(pair, 'utf8').toString('base64')}`;
		}
		if (Object.keys(headers).length) {
			args.headers = headers;
		}
		return api.request(args);
	},
	getClaimCode: (api, s) => api.getClaimCode(only(s, ['product', 'iccid', 'auth'])),
	listDevices: (api, s) => api.listDevices(only(s, ['product', 'perPage', 'page', 'deviceId', 'deviceName', 'auth'])),
	getDevice: (api, s) => api.getDevice(only(s, ['deviceId', 'product', 'auth'])),
	callFunction: (api, s) => api.callFunction(only(s, ['deviceId', 'name', 'argument', 'product', 'auth'])),
	getVariable: (api, s) => api.getVariable(only(s, ['deviceId', 'name', 'product', 'auth'])),
	deleteAccessToken: (api, s) => api.deleteAccessToken(only(s, ['token'])),
	claimDevice: (api, s) => api.claimDevice(only(s, ['deviceId', 'requestTransfer', 'auth'])),
	sleep: (_api, s) => new Promise((res) => setTimeout(() => res({ statusCode: null, body: null }), s.ms || 0))
};

function eventStream(api, s, id, limitMs) {
	// resolves with the collected events; the stream is always aborted afterwards
	const want = s.count === undefined ? 1 : s.count;
	const collectMs = Math.min(s.timeoutMs || 5000, limitMs);
	return api.getEventStream(only(s, ['deviceId', 'name', 'product', 'org', 'auth'])).then((stream) => new Promise((res) => {
		const events = [];
		const disconnects = [];
		let done = false;
		const stop = (why) => {
			if (done) {
				return;
			}
			done = true;
			clearTimeout(timer);
			stream.abort();
			res({ ok: true, statusCode: 200, events, stopped: why, disconnects: disconnects.length });
		};
		const timer = setTimeout(() => stop('timeout'), collectMs);
		stream.on('event', (ev) => {
			events.push(plain(ev));
			if (events.length >= want) {
				stop('count');
			}
		});
		stream.on('disconnect', () => disconnects.push(Date.now()));
		stream.on('error', () => {});
		process.stderr.write(JSON.stringify({ stream_open: id }) + '\n');
		if (want <= 0) {
			stop('count');
		}
	}));
}

function withTimeout(promise, ms) {
	let timer;
	const watchdog = new Promise((_res, rej) => {
		timer = setTimeout(() => rej(new DriverError('driver_timeout', `step exceeded ${ms} ms`)), ms);
	});
	return Promise.race([promise, watchdog]).finally(() => clearTimeout(timer));
}

async function runStep(step, index) {
	const started = Date.now();
	const id = step.id || `${step.op}#${index}`;
	let out;
	try {
		const s = resolve(step);
		const limit = s.timeoutMs && s.op === 'getEventStream' ? s.timeoutMs + stepTimeoutMs : stepTimeoutMs;
		const api = instanceFor(s);
		let promise;
		if (s.op === 'getEventStream') {
			promise = eventStream(api, s, id, limit);
		} else if (Object.prototype.hasOwnProperty.call(OPS, s.op)) {
			promise = OPS[s.op](api, s);
		} else {
			throw new DriverError('driver_bad_op', `unknown op ${JSON.stringify(s.op)}`);
		}
		const res = await withTimeout(Promise.resolve(promise), limit);
		out = s.op === 'getEventStream' ? res : resolved(res);
	} catch (err) {
		if (err instanceof DriverError) {
			out = { ok: false, statusCode: null, error: err.driverCode, error_description: err.message,
				shortErrorDescription: null, message: err.message, body: null };
		} else {
			out = rejected(err);
		}
	}
	out = Object.assign({ id, op: step.op }, out, { ms: Date.now() - started });
	results[id] = out;
	return out;
}

(async () => {
	for (let i = 0; i < program.steps.length && !finished; i++) {
		report.steps.push(await runStep(program.steps[i], i));
	}
	clearTimeout(deadline);
	report.ok = report.steps.every((s) => s.ok);
	finish(0);
})();
