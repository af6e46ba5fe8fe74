// A resuming client for the Tollgate end-to-end tests (tests/tests/e2e/resume.rs): one
// server stream read to its end across interruptions, resuming each time through the
// next proxy with the stream's token and the count of messages received
// (`runResumable` in rpc.mjs, which the browser page uses too).
// `node resume.mjs '<json>'`, results as NDJSON on stdout.
//
// Arguments (one JSON object):
//   baseUrls      ["https://grpc.test:PORT", ...]: the first call goes to the first, each
//                 resume to the next (round robin); every name resolves to 127.0.0.1
//   ca, descriptorSet, transport ("connect-proto" | "connect-json" | "grpc-web"),
//   httpVersion   as in client.mjs
//   request       the ServerStream request (count, intervalMs, ...)
//   headers       extra request headers (credentials)
//   abortAt       [k, ...]: after the k-th message overall, the client cuts its own
//                 connection (abort) and resumes
//   pauseAt       [k, ...]: after the k-th message, print {"paused": k} and wait for a
//                 line on stdin before reading on (the test stops a proxy meanwhile)
//   resumeWith    {token, after}: start by resuming this stream instead of calling
//   maxResumes    give up after this many resumes (default 10)
//
// Output: {"token"} once known, {"msg": seq} per message, {"resume": {attempt, after,
// why}} per resume, then {"done": {ok, seqs, error, resumes, trailers}}.
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { loadService, runResumable } from "./rpc.mjs";

function print(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

function loopbackLookup(_hostname, options, callback) {
  if (typeof options === "function") {
    callback = options;
    options = {};
  }
  if (options && options.all) callback(null, [{ address: "127.0.0.1", family: 4 }]);
  else callback(null, "127.0.0.1", 4);
}

function transportFor(args, baseUrl, registry) {
  const httpVersion = args.httpVersion ?? "2";
  const common = {
    baseUrl,
    httpVersion,
    nodeOptions: {
      ca: readFileSync(args.ca),
      lookup: loopbackLookup,
      ALPNProtocols: httpVersion === "2" ? ["h2"] : ["http/1.1"],
    },
    jsonOptions: { registry },
  };
  switch (args.transport) {
    case "connect-json":
      return createConnectTransport({ ...common, useBinaryFormat: false });
    case "connect-proto":
      return createConnectTransport({ ...common, useBinaryFormat: true });
    case "grpc-web":
      return createGrpcWebTransport({ ...common, useBinaryFormat: true });
    default:
      throw new Error(`unknown transport ${JSON.stringify(args.transport)}`);
  }
}

async function main() {
  const args = JSON.parse(process.argv[2] ?? "");
  const { registry, service } = loadService(readFileSync(args.descriptorSet));
  const clients = args.baseUrls.map((url) =>
    createClient(service, transportFor(args, url, registry)),
  );
  const abortAt = new Set(args.abortAt ?? []);
  const pauseAt = new Set(args.pauseAt ?? []);
  const stdin = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
  const afterMessage = async (n) => {
    if (pauseAt.delete(n)) {
      print({ paused: n });
      await stdin.next();
    }
    return abortAt.delete(n) ? "cut" : undefined;
  };
  const done = await runResumable(clients, args, afterMessage, print);
  print({ done });
}

main().then(
  () => process.exit(0),
  (e) => {
    process.stderr.write(`resume.mjs: ${e?.stack ?? e}\n`);
    process.exit(2);
  },
);
