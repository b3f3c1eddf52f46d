'use strict';
// A styletx.v1 client in another stack: Node.js with @grpc/grpc-js, built from the proto alone
// (protos/styletx/v1/style_transfer.proto; google.rpc's status and error_details protos to read
// `grpc-status-details-bin`; grpc.health.v1 from the grpc-health-check package). It runs named
// checks against a running server, prints one line per check (`ok NAME (secs): detail` or
// `FAIL NAME (secs): why`) and exits 1 when any failed. tests/e2e/test_node_interop.py runs it.
//
//   npm ci --ignore-scripts
//   node interop.js --server 127.0.0.1:50051 --token A --other-token B \
//     --googleapis .venv/lib/python3.11/site-packages [--content F --style F] [--only a,b]
//
// The server it expects: one worker (`--workers 1`), a small `--queue-size` (2-8), and an
// `--auth-tokens-file` naming two tenants: one with --token, one with --other-token and
// `max_calls = 1`. The checks run one after another and leave the server idle.

const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { parseArgs } = require('node:util');
const { performance } = require('node:perf_hooks');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

const REPO = path.resolve(__dirname, '..', '..', '..');

const { values: args } = parseArgs({
  options: {
    server: { type: 'string', default: process.env.STYLETX_SERVER ?? '127.0.0.1:50051' },
    token: { type: 'string', default: process.env.STYLETX_TOKEN },
    'other-token': { type: 'string', default: process.env.STYLETX_OTHER_TOKEN },
    googleapis: { type: 'string', default: process.env.STYLETX_GOOGLEAPIS_PROTOS },
    content: { type: 'string', default: path.join(REPO, 'examples', 'content_chelsea.png') },
    style: { type: 'string', default: path.join(REPO, 'examples', 'style_starry_night.jpg') },
    only: { type: 'string' },
    'check-timeout': { type: 'string', default: '90' },
  },
});
assert.ok(args.token, '--token (or STYLETX_TOKEN) is required');
assert.ok(args['other-token'], '--other-token (or STYLETX_OTHER_TOKEN) is required');
assert.ok(
  args.googleapis && fs.existsSync(path.join(args.googleapis, 'google', 'rpc', 'status.proto')),
  '--googleapis (or STYLETX_GOOGLEAPIS_PROTOS) must be a folder holding google/rpc/status.proto ' +
    '(e.g. the site-packages of googleapis-common-protos)',
);

// ---- The protos -------------------------------------------------------------------------------

// keepCase: field names as the proto spells them; oneofs: `event` names the event that is set.
const LOAD = { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true };
const STYLETX_PROTO = path.join(REPO, 'protos', 'styletx', 'v1', 'style_transfer.proto');
const HEALTH_PROTO = path.join(
  path.dirname(require.resolve('grpc-health-check/package.json')),
  'proto', 'health', 'v1', 'health.proto',
);
const api = grpc.loadPackageDefinition(protoLoader.loadSync(STYLETX_PROTO, LOAD)).styletx.v1;
const healthApi = grpc.loadPackageDefinition(protoLoader.loadSync(HEALTH_PROTO, LOAD)).grpc.health.v1;

// google.rpc.Status and its details, read with protobufjs (google/protobuf/* are bundled there).
const rpcProtos = new protobuf.Root();
rpcProtos.resolvePath = (origin, target) => {
  const local = path.join(args.googleapis, target);
  return fs.existsSync(local) ? local : protobuf.util.path.resolve(origin, target);
};
rpcProtos.loadSync(['google/rpc/status.proto', 'google/rpc/error_details.proto'], { keepCase: true });
const StatusProto = rpcProtos.lookupType('google.rpc.Status');

/** The google.rpc.Status of a failed call, its details unpacked by type name. */
function richStatus(error) {
  const [bin] = error.metadata?.get('grpc-status-details-bin') ?? [];
  assert.ok(bin, `no grpc-status-details-bin on ${error.code} ${error.details}`);
  const status = StatusProto.decode(bin);
  const details = {};
  for (const any of status.details) {
    const name = any.type_url.slice(any.type_url.lastIndexOf('/') + 1);
    const type = rpcProtos.lookupType(name);
    details[name] = type.toObject(type.decode(any.value), { longs: Number, defaults: true });
  }
  return { code: status.code, message: status.message, details };
}

/**
 * Assert a failed call's status: its gRPC code, the rich status agreeing with it, the ErrorInfo
 * (domain styletx.v1, `reason`), BadRequest `fields` (each named by a violation), RetryInfo
 * present (`retry: true`) or absent (`retry: false`). Returns the decoded status.
 */
function expectStatus(error, { code, reason, fields, retry }) {
  assert.ok(error, `expected ${code} ${reason}, the call succeeded`);
  assert.equal(grpc.status[error.code], code, `code of: ${error.details}`);
  const rich = richStatus(error);
  assert.equal(rich.code, error.code, 'google.rpc.Status.code differs from grpc-status');
  assert.equal(rich.message, error.details, 'google.rpc.Status.message differs from grpc-message');
  const info = rich.details['google.rpc.ErrorInfo'];
  assert.ok(info, `no ErrorInfo in ${Object.keys(rich.details)}`);
  assert.equal(info.domain, 'styletx.v1');
  assert.equal(info.reason, reason, `ErrorInfo.reason of: ${error.details}`);
  if (fields) {
    const bad = rich.details['google.rpc.BadRequest'];
    assert.ok(bad, 'no BadRequest');
    const named = bad.field_violations.map((v) => v.field);
    for (const field of fields) assert.ok(named.includes(field), `${field} not in ${named}`);
    assert.ok(bad.field_violations.every((v) => v.description), 'a violation without description');
  }
  const retryInfo = rich.details['google.rpc.RetryInfo'];
  if (retry === true) {
    assert.ok(retryInfo?.retry_delay, `no RetryInfo in ${Object.keys(rich.details)}`);
    const { seconds, nanos } = retryInfo.retry_delay;
    assert.ok(seconds + nanos / 1e9 > 0, `RetryInfo delay ${seconds}s ${nanos}ns`);
  }
  if (retry === false) assert.equal(retryInfo, undefined, 'RetryInfo where retrying cannot help');
  return rich;
}

// ---- Calls ------------------------------------------------------------------------------------

const clients = [];
function newClient(Service) {
  const client = new Service(args.server, grpc.credentials.createInsecure());
  clients.push(client);
  return client;
}
const styletx = newClient(api.StyleTransferService);
const health = newClient(healthApi.Health);

/** Call metadata: a bearer token (none when `token` is null) and extra headers. */
function meta(token = args.token, extra = {}) {
  const metadata = new grpc.Metadata();
  if (token !== null) metadata.set('authorization', token.includes(' ') ? token : `Bearer ${token}`);
  for (const [key, value] of Object.entries(extra)) metadata.set(key, value);
  return metadata;
}

function callOptions(deadlineMs) {
  return deadlineMs === undefined ? {} : { deadline: Date.now() + deadlineMs };
}

/** A unary call as a promise. */
function unary(method, request, { token, deadlineMs = 30000, client = styletx } = {}) {
  return new Promise((resolve, reject) => {
    client[method](request, meta(token), callOptions(deadlineMs), (error, response) =>
      error ? reject(error) : resolve(response),
    );
  });
}

/** The error a unary call fails with (an assertion error when it succeeds). */
async function unaryError(method, request, options) {
  try {
    await unary(method, request, options);
  } catch (error) {
    return error;
  }
  assert.fail(`${method} succeeded where it should fail`);
}

/**
 * Follow a server stream to its end: `{ events, error, times }`; `onEvent(event, events)` runs
 * as each event comes (it may cancel the call). Events are tagged with `event` (the oneof).
 */
async function follow(call, onEvent) {
  const events = [];
  const times = [];
  try {
    for await (const event of call) {
      events.push(event);
      times.push(performance.now());
      await onEvent?.(event, events);
    }
  } catch (error) {
    return { events, times, error };
  }
  return { events, times, error: null };
}

/** Streams not ended yet: the runner cancels what a failed check left open. */
const live = new Set();
function track(call) {
  live.add(call);
  call.on('status', () => live.delete(call));
  return call;
}

function stylize(request, { token, headers, deadlineMs } = {}) {
  return track(styletx.Stylize(request, meta(token, headers), callOptions(deadlineMs)));
}

function watchJob(key, { token } = {}) {
  return track(styletx.WatchJob({ request_key: key }, meta(token), callOptions(60000)));
}

/**
 * Start a call and wait for its first event (of kind `until`, when given), or for its end:
 * `{ call, first, done }`, `first` null when the call ended before, `done` its `follow` outcome.
 */
function open(call, until) {
  let resolveFirst;
  const firstEvent = new Promise((resolve) => (resolveFirst = resolve));
  const done = follow(call, (event) => {
    if (until === undefined || event.event === until) resolveFirst(event);
  }).then((outcome) => {
    resolveFirst(null);
    return outcome;
  });
  return firstEvent.then((first) => ({ call, first, done }));
}

/** `open`, failing when the call ends before that event. */
async function openOk(call, until) {
  const opened = await open(call, until);
  if (!opened.first) assert.fail(`the call ended early: ${(await opened.done).error?.details}`);
  return opened;
}

const CONTENT = fs.readFileSync(args.content);
const STYLE = fs.readFileSync(args.style);
const RUN = `${Date.now().toString(36)}-${process.pid}`; // request keys unique to this run

/** A small job (a few L-BFGS iterations at 32 px), with `options` and request fields merged. */
function request(options = {}, fields = {}) {
  return {
    content_image: CONTENT,
    style_images: [{ image: STYLE }],
    options: { size: 32, max_evaluations: 8, seed: 1, ...options },
    ...fields,
  };
}
/** A job that runs for many seconds: the checks cancel it or let it time out. */
const LONG = { size: 64, max_evaluations: 1000 };

const seconds = (duration) => (duration ? duration.seconds + duration.nanos / 1e9 : 0);
const kinds = (events) => events.map((e) => e.event);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Width and height from a PNG's IHDR chunk. */
function pngSize(data) {
  assert.ok(
    data.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])),
    'not a PNG',
  );
  return { width: data.readUInt32BE(16), height: data.readUInt32BE(20) };
}

/** Assert the shape of a successful Stylize stream and return its events by kind. */
function assertStreamOrder(events) {
  const order = kinds(events).join(' ');
  assert.match(order, /^(queued )*started (progress )+result$/, `event order: ${order}`);
  const queued = events.filter((e) => e.event === 'queued');
  const started = events.find((e) => e.event === 'started').started;
  const progress = events.filter((e) => e.event === 'progress').map((e) => e.progress);
  const result = events.at(-1).result;
  queued.forEach((q, i) => {
    assert.ok(q.queued.position >= 1, `queue position ${q.queued.position}`);
    if (i > 0) assert.ok(q.queued.position < queued[i - 1].queued.position, 'position grew');
  });
  for (const id of [...queued.map((q) => q.queued.request_id), result.request_id]) {
    assert.equal(id, started.request_id, 'request ids differ within one stream');
  }
  progress.forEach((p, i) => {
    assert.equal(p.iteration, i + 1, 'iterations are not 1, 2, 3, ...');
    if (i > 0) assert.ok(p.evaluations >= progress[i - 1].evaluations, 'evaluations went back');
    assert.ok(p.evaluations <= p.max_evaluations, `${p.evaluations} > ${p.max_evaluations}`);
    const { total, content, style, tv } = p.losses;
    assert.ok(Math.abs(total - (content + style + tv)) <= 1e-6 * Math.abs(total), 'total != sum');
  });
  assert.equal(result.iterations, progress.length, 'result.iterations');
  assert.equal(result.evaluations, progress.at(-1).evaluations, 'result.evaluations');
  return { queued, started, progress, result };
}

async function stylizeOk(req, options) {
  const outcome = await follow(stylize(req, options));
  assert.equal(outcome.error, null, `Stylize failed: ${outcome.error?.details}`);
  return { ...assertStreamOrder(outcome.events), events: outcome.events };
}

async function healthStatus(service = '') {
  const { status } = await unary('Check', { service }, { client: health, token: null });
  return status;
}

// ---- Checks -----------------------------------------------------------------------------------

const checks = [];
const check = (name, fn) => checks.push({ name, fn });

check('health', async () => {
  // Probes send no token: health stays open under auth.
  assert.equal(await healthStatus(''), 'SERVING');
  assert.equal(await healthStatus('styletx.v1.StyleTransferService'), 'SERVING');
  const unknown = await unaryError('Check', { service: 'no.such.Service' }, { client: health, token: null });
  assert.equal(grpc.status[unknown.code], 'NOT_FOUND');
  const watch = health.Watch({ service: '' }, meta(null));
  const { events } = await follow(watch, () => watch.cancel());
  assert.deepEqual(events.map((e) => e.status), ['SERVING'], 'Watch did not start with SERVING');
  return 'Check "", the service, an unknown service; Watch';
});

check('stream', async () => {
  const requestId = `node-interop-${RUN}`;
  const { started, progress, result } = await stylizeOk(request({}, { preview_every: 2 }), {
    headers: { 'x-request-id': requestId },
  });
  assert.equal(started.request_id, requestId, "the caller's x-request-id is not the request id");
  const options = started.options;
  assert.deepEqual([options.size, options.max_evaluations, options.seed], [32, 8, 1]);
  assert.ok(options.content_layer && options.style_layers.length > 0, 'options not resolved');
  assert.equal(options.preset, 'PRESET_REFERENCE');
  assert.ok(['tensorflow', 'jax'].includes(started.backend), `backend ${started.backend}`);
  assert.ok(started.precision && started.device, 'precision or device missing');
  const [w, h] = [started.width, started.height];
  const aspect = pngSize(CONTENT);
  assert.equal(Math.max(w, h), 32);
  assert.ok(Math.abs(w / h - aspect.width / aspect.height) < 0.1, `aspect ${w}x${h}`);
  assert.equal(result.evaluations, 8, 'the evaluation budget is not exact');
  assert.equal(result.image.format, 'IMAGE_FORMAT_PNG');
  assert.deepEqual(pngSize(result.image.data), { width: w, height: h });
  assert.deepEqual([result.image.width, result.image.height], [w, h]);
  assert.ok(Number.isFinite(result.losses.total) && result.losses.total > 0, 'result losses');
  assert.ok(seconds(result.compute_time) > 0, 'compute_time');
  for (const p of progress) {
    assert.equal(p.max_evaluations, 8);
    if (p.iteration % 2 === 0) {
      assert.ok(p.preview, `no preview at iteration ${p.iteration}`);
      assert.deepEqual(pngSize(p.preview.data), { width: w, height: h });
    } else {
      assert.equal(p.preview, null, `a preview at iteration ${p.iteration}`);
    }
  }
  return `started ${w}x${h} ${started.backend}/${started.precision}, ${progress.length} progress, result`;
});

check('same-bytes', async () => {
  const first = await stylizeOk(request({ seed: 7 }));
  const second = await stylizeOk(request({ seed: 7 }));
  const other = await stylizeOk(request({ seed: 8 }));
  assert.notEqual(first.result.request_id, second.result.request_id, 'one job answered twice');
  assert.ok(first.result.image.data.equals(second.result.image.data), 'seed 7 twice: bytes differ');
  assert.ok(!first.result.image.data.equals(other.result.image.data), 'seeds 7 and 8: same bytes');
  return `${first.result.image.data.length} identical bytes`;
});

check('errors', async () => {
  const stylizeError = async (req) => (await follow(stylize(req))).error;
  // Beyond this server's limits: LIMIT_EXCEEDED, the metadata naming the limit.
  const limit = expectStatus(await stylizeError(request({ size: 100000 })), {
    code: 'INVALID_ARGUMENT', reason: 'LIMIT_EXCEEDED', fields: ['options.size'], retry: false,
  });
  const limitMeta = limit.details['google.rpc.ErrorInfo'].metadata;
  assert.ok(Object.keys(limitMeta).length > 0, 'LIMIT_EXCEEDED names no limit');
  // Out of the API's range, every violation at once.
  expectStatus(await stylizeError(request({ tv_power: 10, content_weight: -1 })), {
    code: 'INVALID_ARGUMENT', reason: 'INVALID_INPUT', retry: false,
    fields: ['options.tv_power', 'options.content_weight'],
  });
  expectStatus(await stylizeError(request({}, { content_image: Buffer.alloc(0) })), {
    code: 'INVALID_ARGUMENT', reason: 'INVALID_INPUT', fields: ['content_image'],
  });
  expectStatus(await stylizeError(request({}, { style_images: [] })), {
    code: 'INVALID_ARGUMENT', reason: 'INVALID_INPUT', fields: ['style_images'],
  });
  expectStatus(await stylizeError(request({}, { content_image: Buffer.from('not an image') })), {
    code: 'INVALID_ARGUMENT', reason: 'INVALID_INPUT', fields: ['content_image'],
  });
  expectStatus(await stylizeError(request({}, { request_key: 'not a key!' })), {
    code: 'INVALID_ARGUMENT', reason: 'INVALID_INPUT', fields: ['request_key'],
  });
  // Request keys: unknown to the job calls, reused for another request.
  const unknown = `node-${RUN}-unknown`;
  expectStatus(await unaryError('GetJob', { request_key: unknown }), {
    code: 'NOT_FOUND', reason: 'JOB_NOT_FOUND',
  });
  expectStatus(await unaryError('CancelJob', { request_key: unknown }), {
    code: 'NOT_FOUND', reason: 'JOB_NOT_FOUND',
  });
  expectStatus((await follow(watchJob(unknown))).error, {
    code: 'NOT_FOUND', reason: 'JOB_NOT_FOUND',
  });
  expectStatus(await unaryError('GetJob', { request_key: '' }), {
    code: 'INVALID_ARGUMENT', reason: 'INVALID_INPUT', fields: ['request_key'],
  });
  const key = `node-${RUN}-reused`;
  await stylizeOk(request({ seed: 3 }, { request_key: key }));
  expectStatus(await stylizeError(request({ seed: 4 }, { request_key: key })), {
    code: 'ALREADY_EXISTS', reason: 'KEY_REUSED', fields: ['request_key'],
  });
  return `LIMIT_EXCEEDED ${JSON.stringify(limitMeta)}, INVALID_INPUT x5, JOB_NOT_FOUND x3, KEY_REUSED`;
});

/**
 * After a long job was abandoned (deadline, cancel), a short job must start at once: the server
 * stops the abandoned one within an evaluation. A client's cancel ends its call locally at once
 * and reaches the server a moment later, so a refusal as busy is retried for a short while.
 * Returns the seconds from the first try to the short job's `started`.
 */
async function nextCallIsServedAtOnce() {
  const t0 = performance.now();
  for (;;) {
    const { events, times, error } = await follow(stylize(request({ seed: 2 })));
    if (grpc.status[error?.code] === 'RESOURCE_EXHAUSTED' && performance.now() - t0 < 2000) {
      await sleep(100);
      continue;
    }
    assert.equal(error, null, `the next call failed: ${error?.details}`);
    assertStreamOrder(events);
    const waited = (times[kinds(events).indexOf('started')] - t0) / 1000;
    assert.ok(waited < 3, `the next call started ${waited.toFixed(2)} s after it was sent`);
    return waited;
  }
}

check('deadline', async () => {
  const t0 = performance.now();
  const { events, error } = await follow(stylize(request(LONG), { deadlineMs: 1500 }));
  const elapsed = (performance.now() - t0) / 1000;
  assert.ok(error, `the ${LONG.max_evaluations}-evaluation job finished within 1.5 s`);
  assert.equal(grpc.status[error.code], 'DEADLINE_EXCEEDED', error.details);
  assert.ok(elapsed >= 1.4 && elapsed < 3.5, `DEADLINE_EXCEEDED after ${elapsed.toFixed(2)} s`);
  assert.ok(kinds(events).includes('started'), `events before the deadline: ${kinds(events)}`);
  const waited = await nextCallIsServedAtOnce();
  return `after ${elapsed.toFixed(2)} s; the next call waited ${waited.toFixed(2)} s`;
});

check('cancel', async () => {
  let cancelledAfter = null;
  const call = stylize(request(LONG));
  const { events, error } = await follow(call, (event, all) => {
    if (cancelledAfter === null && all.filter((e) => e.event === 'progress').length === 2) {
      cancelledAfter = all.length;
      call.cancel();
    }
  });
  assert.ok(cancelledAfter, `the stream ended before two progress events: ${kinds(events)}`);
  assert.ok(error, 'no error after cancel');
  assert.equal(grpc.status[error.code], 'CANCELLED');
  assert.equal(events.length, cancelledAfter, 'events arrived after cancel()');
  const waited = await nextCallIsServedAtOnce();
  return `cancelled after ${cancelledAfter} events; the next call waited ${waited.toFixed(2)} s`;
});

check('queue-full', async () => {
  // One job runs, the next ones wait, until the queue refuses one.
  const calls = [await openOk(stylize(request(LONG)), 'started')];
  let refusal = null;
  while (!refusal) {
    assert.ok(calls.length < 20, 'no QUEUE_FULL after 20 calls: is --queue-size small?');
    const opened = await open(stylize(request({ ...LONG, seed: calls.length })));
    if (opened.first === null) refusal = (await opened.done).error;
    else calls.push(opened);
  }
  expectStatus(refusal, { code: 'RESOURCE_EXHAUSTED', reason: 'QUEUE_FULL', retry: true });
  const positions = calls.slice(1).map((c) => c.first.queued?.position);
  assert.deepEqual(positions, positions.map((_, i) => i + 1), `queue positions ${positions}`);
  for (const { call } of calls.reverse()) call.cancel();
  for (const { done } of calls) {
    const { error } = await done;
    assert.equal(grpc.status[error?.code], 'CANCELLED');
  }
  const waited = await nextCallIsServedAtOnce();
  return `1 running + ${calls.length - 1} queued, then QUEUE_FULL with RetryInfo; freed in ${waited.toFixed(2)} s`;
});

check('tenant-quota', async () => {
  // The other tenant has `max_calls = 1`: a second open call of its is refused.
  const other = args['other-token'];
  const first = await openOk(stylize(request(LONG), { token: other }), 'started');
  const { error } = await follow(stylize(request(), { token: other, deadlineMs: 10000 }));
  const rich = expectStatus(error, { code: 'RESOURCE_EXHAUSTED', reason: 'TENANT_QUOTA', retry: true });
  const info = rich.details['google.rpc.ErrorInfo'].metadata;
  assert.equal(info.quota, 'max_calls', JSON.stringify(info));
  assert.equal(info.max_calls, '1', JSON.stringify(info));
  assert.ok(info.tenant, 'ErrorInfo metadata names no tenant');
  first.call.cancel();
  assert.equal(grpc.status[(await first.done).error?.code], 'CANCELLED');
  await nextCallIsServedAtOnce();
  return `TENANT_QUOTA ${JSON.stringify(info)}`;
});

check('jobs', async () => {
  const running = `node-${RUN}-running`;
  const waiting = `node-${RUN}-waiting`;
  const done = `node-${RUN}-done`;

  // A finished keyed job: GetJob (with and without the image), WatchJob, CancelJob, re-attach.
  const ran = await stylizeOk(request({ seed: 5 }, { request_key: done }));
  const got = await unary('GetJob', { request_key: done });
  assert.equal(got.state, 'JOB_STATE_DONE');
  assert.equal(got.request_key, done);
  assert.equal(got.request_id, ran.result.request_id);
  assert.ok(got.result.image.data.equals(ran.result.image.data), 'GetJob: other bytes');
  assert.equal(got.options.seed, 5);
  const bare = await unary('GetJob', { request_key: done, omit_image: true });
  assert.equal(bare.result.image.data.length, 0, 'omit_image sent the image');
  assert.deepEqual([bare.result.image.width, bare.result.image.height], [ran.started.width, ran.started.height]);
  const watched = await follow(watchJob(done));
  assert.equal(watched.error, null, watched.error?.details);
  assert.deepEqual(kinds(watched.events), ['result'], 'WatchJob of a finished job');
  assert.ok(watched.events[0].result.image.data.equals(ran.result.image.data));
  assert.equal((await unary('CancelJob', { request_key: done })).state, 'JOB_STATE_DONE');
  const again = await follow(stylize(request({ seed: 5 }, { request_key: done })));
  assert.deepEqual(kinds(again.events), ['result'], 'the same key and request did not re-attach');
  assert.equal(again.events[0].result.request_id, ran.result.request_id);

  // A running and a queued keyed job: GetJob, WatchJob, CancelJob; every stream ends CANCELLED.
  const runCall = await openOk(stylize(request({ ...LONG, seed: 1 }, { request_key: running })), 'started');
  const waitCall = await openOk(stylize(request({ ...LONG, seed: 2 }, { request_key: waiting })));
  assert.equal(waitCall.first.event, 'queued', 'the second job is not queued');
  let state;
  for (let i = 0; i < 100; i++) {
    state = await unary('GetJob', { request_key: running });
    if (state.progress) break;
    await sleep(50);
  }
  assert.equal(state.state, 'JOB_STATE_RUNNING');
  assert.ok(state.started && state.progress, 'RUNNING without started or progress');
  assert.equal(state.options.max_evaluations, LONG.max_evaluations);
  const queuedState = await unary('GetJob', { request_key: waiting });
  assert.equal(queuedState.state, 'JOB_STATE_QUEUED');
  assert.equal(queuedState.queue_position, 1);
  assert.equal(queuedState.started, null);

  const watchRunning = await openOk(watchJob(running));
  const watchWaiting = await openOk(watchJob(waiting));
  assert.equal(watchRunning.first.event, 'started', 'WatchJob of a running job starts with started');
  assert.equal(watchWaiting.first.queued?.position, 1, 'WatchJob of a queued job starts with queued');

  assert.equal((await unary('CancelJob', { request_key: waiting })).state, 'JOB_STATE_CANCELLED');
  assert.equal((await unary('CancelJob', { request_key: running })).state, 'JOB_STATE_CANCELLED');
  assert.equal((await unary('CancelJob', { request_key: running })).state, 'JOB_STATE_CANCELLED');
  for (const opened of [runCall, waitCall, watchRunning, watchWaiting]) {
    const { error } = await opened.done;
    expectStatus(error, { code: 'CANCELLED', reason: 'CANCELLED' });
  }
  const watchedRun = await watchRunning.done;
  const order = kinds(watchedRun.events).join(' ');
  assert.match(order, /^started( progress)*$/, `WatchJob events of a running job: ${order}`);
  const ended = await unary('GetJob', { request_key: running });
  assert.equal(ended.state, 'JOB_STATE_CANCELLED');
  assert.equal(ended.error?.code, grpc.status.CANCELLED);
  assert.equal(ended.error?.reason, 'ERROR_REASON_CANCELLED');
  assert.ok(ended.progress, 'a job cancelled part-way keeps its last progress');
  await nextCallIsServedAtOnce();
  return 'DONE (image, omit_image, watch, cancel, re-attach), RUNNING, QUEUED, CANCELLED';
});

check('tokens', async () => {
  const other = args['other-token'];
  for (const token of [null, 'wrong-token', 'Basic dXNlcjpwYXNz']) {
    const { error } = await follow(stylize(request(), { token }));
    expectStatus(error, { code: 'UNAUTHENTICATED', reason: 'UNAUTHENTICATED', retry: false });
    expectStatus(await unaryError('GetJob', { request_key: 'any' }, { token }), {
      code: 'UNAUTHENTICATED', reason: 'UNAUTHENTICATED',
    });
  }
  // Request keys are per tenant: the other tenant cannot see, watch or cancel this one's job,
  // and hears NOT_FOUND word for word as for a key nobody used.
  const key = `node-${RUN}-private`;
  const mine = await stylizeOk(request({ seed: 6 }, { request_key: key }));
  const theirs = await unaryError('GetJob', { request_key: key }, { token: other });
  expectStatus(theirs, { code: 'NOT_FOUND', reason: 'JOB_NOT_FOUND' });
  const nobody = `node-${RUN}-nobody`;
  const unknown = await unaryError('GetJob', { request_key: nobody }, { token: other });
  assert.equal(theirs.details.replaceAll(key, nobody), unknown.details, 'NOT_FOUND messages differ');
  expectStatus(await unaryError('CancelJob', { request_key: key }, { token: other }), {
    code: 'NOT_FOUND', reason: 'JOB_NOT_FOUND',
  });
  expectStatus((await follow(watchJob(key, { token: other }))).error, {
    code: 'NOT_FOUND', reason: 'JOB_NOT_FOUND',
  });
  // The same key and request from the other tenant runs a job of its own.
  const own = await stylizeOk(request({ seed: 6 }, { request_key: key }), { token: other });
  assert.notEqual(own.result.request_id, mine.result.request_id, 'attached to the other tenant');
  assert.ok(own.result.image.data.equals(mine.result.image.data), 'same request, other bytes');
  assert.equal((await unary('GetJob', { request_key: key })).request_id, mine.result.request_id);
  return 'none, wrong and malformed tokens refused; keys private to each tenant';
});

check('parallel', async () => {
  // Three calls at once on one channel, on a one-worker server: they queue, then all finish;
  // the two with the same seed give the same bytes. Health answers fast meanwhile.
  let busy = true;
  const latencies = [];
  const probe = (async () => {
    while (busy) {
      const t0 = performance.now();
      assert.equal(await healthStatus(), 'SERVING');
      latencies.push(performance.now() - t0);
      await sleep(100);
    }
  })();
  let outcomes;
  try {
    outcomes = await Promise.all(
      [11, 12, 11].map((seed) => stylizeOk(request({ seed, size: 48, max_evaluations: 20 }))),
    );
  } finally {
    busy = false;
    await probe;
  }
  const ids = new Set(outcomes.map((o) => o.result.request_id));
  assert.equal(ids.size, 3, 'request ids repeat across calls');
  const highest = Math.max(0, ...outcomes.flatMap((o) => o.queued.map((q) => q.queued.position)));
  assert.ok(highest >= 2, `three calls at once on one worker, yet the highest position was ${highest}`);
  const [a, b, c] = outcomes.map((o) => o.result.image.data);
  assert.ok(a.equals(c), 'the same request in parallel gave other bytes');
  assert.ok(!a.equals(b), 'different seeds gave the same bytes');
  const slowest = Math.max(...latencies);
  assert.ok(latencies.length > 0 && slowest < 1000, `health took ${slowest.toFixed(0)} ms`);
  return `3 calls, queue positions up to ${highest}, ${latencies.length} health checks (max ${slowest.toFixed(0)} ms)`;
});

// ---- Runner -----------------------------------------------------------------------------------

async function main() {
  const only = args.only ? new Set(args.only.split(',')) : null;
  const timeoutMs = Number(args['check-timeout']) * 1000;
  let failed = 0;
  for (const { name, fn } of checks) {
    if (only && !only.has(name)) continue;
    const t0 = performance.now();
    let timer;
    try {
      const timeout = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs / 1000} s`)), timeoutMs);
      });
      const detail = await Promise.race([fn(), timeout]);
      console.log(`ok ${name} (${((performance.now() - t0) / 1000).toFixed(2)} s): ${detail}`);
    } catch (error) {
      failed += 1;
      const why = `${error.message ?? error}`.replaceAll('\n', ' ');
      console.log(`FAIL ${name} (${((performance.now() - t0) / 1000).toFixed(2)} s): ${why}`);
      console.error(`--- ${name}\n${error.stack ?? error}`);
    } finally {
      clearTimeout(timer);
      for (const call of live) call.cancel();
      live.clear();
    }
  }
  for (const client of clients) client.close();
  process.exitCode = failed ? 1 : 0;
}

main().catch((error) => {
  console.error(error);
  process.exitCode = 2;
});
