// A Connect / gRPC-Web client for the Tollgate end-to-end tests (tests/src/connect.rs
// spawns it): `node client.mjs '<json>'`, one call, results as NDJSON on stdout.
//
// Arguments (one JSON object):
//   baseUrl       "https://grpc.test:PORT"; every host name resolves to 127.0.0.1
//   ca            path of a PEM file with the certificates to trust
//   descriptorSet path of a binary google.protobuf.FileDescriptorSet with TestService
//   transport     "connect-json" | "connect-proto" | "connect-get" (JSON, GET for
//                 idempotent methods) | "grpc-web" (binary)
//   httpVersion   "2" (default) or "1.1"
//   gzip          compress requests (and accept gzip responses, as always)
//   method        "echo" | "serverStream" | "fail" | "slow" | ... (local or proto name)
//   request       the request message, as a message init object (camelCase fields)
//   timeoutMs     the call's deadline (client-enforced and sent to the server)
//   headers       extra request headers
//   abortAfter    abort a server stream from the client after N messages
//   summarize     print one {"summary"} line instead of every {"msg"} line
//   waitStdin     after the call, print {"waiting": true} and wait for stdin to close
//   after         {method, request, ...}: a second call on the same transport (and so
//                 the same connection), run after the wait
//
// Output lines: {"msg": {...}} per response message (bytes fields as {"bytes": len}),
// or {"summary": {count, firstSeq, lastSeq, inOrder, payloadBytes}}; then the outcome:
// {"ok": true, "headers", "trailers"} | {"error": {code, message, details, metadata}} |
// {"aborted": N}. An `after` call prints its lines wrapped as {"after": <line>}.
// Exit code 0 whatever the RPC outcome; 2 when the client itself could not run.
import { readFileSync } from "node:fs";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { compressionGzip } from "@connectrpc/connect-node";
import { loadService, runCall } from "./rpc.mjs";

function print(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

// Test host names (grpc.test) resolve to loopback, in both lookup shapes Node uses.
function loopbackLookup(_hostname, options, callback) {
  if (typeof options === "function") {
    callback = options;
    options = {};
  }
  if (options && options.all) callback(null, [{ address: "127.0.0.1", family: 4 }]);
  else callback(null, "127.0.0.1", 4);
}

function transportFor(args, registry) {
  const httpVersion = args.httpVersion ?? "2";
  const nodeOptions = {
    ca: readFileSync(args.ca),
    lookup: loopbackLookup,
    ALPNProtocols: httpVersion === "2" ? ["h2"] : ["http/1.1"],
  };
  const common = {
    baseUrl: args.baseUrl,
    httpVersion,
    nodeOptions,
    jsonOptions: { registry },
    ...(args.gzip ? { sendCompression: compressionGzip, compressMinBytes: 0 } : {}),
  };
  switch (args.transport) {
    case "connect-json":
      return createConnectTransport({ ...common, useBinaryFormat: false });
    case "connect-proto":
      return createConnectTransport({ ...common, useBinaryFormat: true });
    case "connect-get":
      return createConnectTransport({ ...common, useBinaryFormat: false, useHttpGet: true });
    case "grpc-web":
      return createGrpcWebTransport({ ...common, useBinaryFormat: true });
    default:
      throw new Error(`unknown transport ${JSON.stringify(args.transport)}`);
  }
}

function printer(spec, wrap) {
  const out = (obj) => print(wrap ? { after: obj } : obj);
  if (!spec.summarize) return { onMessage: (json) => out({ msg: json }), flush: () => {} };
  const s = { count: 0, firstSeq: null, lastSeq: null, inOrder: true, payloadBytes: 0 };
  return {
    onMessage: (json, msg) => {
      const seq = msg.seq ?? null;
      if (s.count === 0) s.firstSeq = seq;
      if (seq !== s.count) s.inOrder = false;
      s.lastSeq = seq;
      s.payloadBytes += msg.payload?.length ?? 0;
      s.count += 1;
    },
    flush: () => out({ summary: s }),
  };
}

async function run(client, service, registry, spec, wrap) {
  const p = printer(spec, wrap);
  const outcome = await runCall(client, service, registry, spec, p.onMessage);
  p.flush();
  print(wrap ? { after: outcome } : outcome);
}

async function stdinClosed() {
  process.stdin.resume();
  await new Promise((resolve) => {
    process.stdin.on("end", resolve);
    process.stdin.on("close", resolve);
  });
}

async function main() {
  const args = JSON.parse(process.argv[2] ?? "");
  const { registry, service } = loadService(readFileSync(args.descriptorSet));
  const client = createClient(service, transportFor(args, registry));
  await run(client, service, registry, args, false);
  if (args.waitStdin) {
    print({ waiting: true });
    await stdinClosed();
  }
  if (args.after) await run(client, service, registry, args.after, true);
}

main().then(
  // Open HTTP/2 sessions would keep the process alive.
  () => process.exit(0),
  (e) => {
    process.stderr.write(`client.mjs: ${e?.stack ?? e}\n`);
    process.exit(2);
  },
);
