// A resuming client for the Tollgate end-to-end tests (tests/tests/e2e/resume.rs): one
// server stream read to its end across interruptions, resuming each time through the
// next proxy with the stream's token and the count of messages received.
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
// Which errors are worth a resume is the client's choice: here its own cuts, dropped
// connections and UNAVAILABLE (a draining proxy); statuses the stream itself ended
// with (a budget cut, DATA_LOSS, NOT_FOUND, ...) are final.
//
// Output: {"token"} once known, {"msg": seq} per message, {"resume": {attempt, after,
// url, why}} per resume, then {"done": {ok, seqs, error, resumes, trailers}}.
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { createClient, ConnectError, Code } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { loadService, errorToJson, headersToJson } from "./rpc.mjs";

const TOKEN = "tollgate-resume-token";
const AFTER = "tollgate-resume-after";

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

const stdinLines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

async function main() {
  const args = JSON.parse(process.argv[2] ?? "");
  const { registry, service } = loadService(readFileSync(args.descriptorSet));
  const clients = args.baseUrls.map((url) =>
    createClient(service, transportFor(args, url, registry)),
  );
  const abortAt = new Set(args.abortAt ?? []);
  const pauseAt = new Set(args.pauseAt ?? []);
  const maxResumes = args.maxResumes ?? 10;
  const seqs = [];
  let token = args.resumeWith?.token ?? null;
  let resumes = 0;
  let target = 0;
  let trailers = {};
  for (;;) {
    const abort = new AbortController();
    const headers = { ...(args.headers ?? {}) };
    if (token !== null) {
      headers[TOKEN] = token;
      headers[AFTER] = String(args.resumeWith && resumes === 0 ? args.resumeWith.after : seqs.length);
    }
    let cutByUs = false;
    try {
      const stream = clients[target % clients.length].serverStream(args.request ?? {}, {
        signal: abort.signal,
        headers,
        onHeader: (h) => {
          const t = h.get(TOKEN);
          if (t && token === null) {
            token = t;
            print({ token });
          }
        },
        onTrailer: (t) => (trailers = headersToJson(t)),
      });
      for await (const res of stream) {
        seqs.push(res.seq);
        print({ msg: res.seq });
        const n = seqs.length;
        if (pauseAt.has(n)) {
          pauseAt.delete(n);
          print({ paused: n });
          await stdinLines.next();
        }
        if (abortAt.has(n)) {
          abortAt.delete(n);
          cutByUs = true;
          abort.abort();
        }
      }
      print({ done: { ok: true, seqs, resumes, trailers } });
      return;
    } catch (e) {
      const err = ConnectError.from(e);
      // Interruptions a client resumes from: its own cut, a dropped connection, a
      // draining proxy (unavailable). Anything else is the stream's own end.
      const final = [
        Code.Canceled,
        Code.DataLoss,
        Code.NotFound,
        Code.PermissionDenied,
        Code.OutOfRange,
        Code.InvalidArgument,
        Code.ResourceExhausted,
      ];
      // A dying connection surfaces as CANCELED without details; the edge's own
      // CANCELED (a budget cut) carries an ErrorInfo detail.
      const dropped = err.code === Code.Canceled && err.details.length === 0;
      const retryable = cutByUs || dropped || !final.includes(err.code);
      if (token === null || !retryable || resumes >= maxResumes) {
        print({ done: { ok: false, seqs, resumes, error: errorToJson(e), trailers } });
        return;
      }
      resumes += 1;
      target += 1;
      print({ resume: { attempt: resumes, after: seqs.length, why: cutByUs ? "cut" : err.rawMessage } });
    }
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    process.stderr.write(`resume.mjs: ${e?.stack ?? e}\n`);
    process.exit(2);
  },
);
