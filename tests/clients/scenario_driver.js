#!/usr/bin/env node
'use strict';
/*
 * scenario_driver.js: setup_driver.js with the client library's OWN timeout
 * shortened, for the scenario tests (tests/conformance/test_scenarios.py).
 *
 * Input and output are exactly those of setup_driver.js (read its header),
 * plus one optional input key:
 *
 *   "libTimeoutMs": 600     the `timeout` option of @particle/softap-setup 4.1.2
 *                           (default 8000 ms: TCP "TCP socket timed out",
 *                           HTTP "HTTP timed out")
 *
 * setup_driver.js creates the 4.x client as new SoftAPSetup({host, port, protocol}),
 * so the option cannot be passed through it. Both the 4.x entry point and its
 * TcpSoftAP/HttpSoftAP constructors start from SoftAP.defaultOptions(); we wrap
 * that function (same module instance: require() caches by resolved filename)
 * before setup_driver.js loads the library. The library's code is untouched.
 * Other libraries ignore libTimeoutMs (softap-setup 3.x has a 2 s default;
 * 1.x never handles its socket timeout: it waits forever, which is the point of
 * pain point #3 / softap-setup-js#23, and the driver's step watchdog reports it).
 */

const path = require('path');

function libTimeoutMs() {
	const raw = process.env.SOFTAP_DRIVER_ARGS || process.argv[2];
	if (!raw) {
		return undefined;
	}
	try {
		const args = JSON.parse(raw);
		const value = args && args.libTimeoutMs;
		return Number.isInteger(value) && value > 0 ? value : undefined;
	} catch (_err) {
		return undefined; // setup_driver.js reports bad input itself
	}
}

const timeout = libTimeoutMs();
if (timeout !== undefined) {
	const softApPath = require.resolve('@particle/softap-setup/lib/SoftAP.js', { paths: [__dirname] });
	const SoftAP = require(softApPath);
	const original = SoftAP.defaultOptions;
	SoftAP.defaultOptions = function defaultOptionsWithTimeout() {
		const opts = original.apply(this, arguments);
		opts.timeout = timeout;
		return opts;
	};
}

require(path.join(__dirname, 'setup_driver.js'));
