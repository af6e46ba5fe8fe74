// What the Node client (client.mjs) and the browser page (page/app.mjs) share: the
// TestService descriptor built at run time from a binary FileDescriptorSet (no codegen),
// and one JSON shape for messages, headers and errors, which the Rust tests parse.
import { ConnectError, Code } from "@connectrpc/connect";
import { createFileRegistry, fromBinary, toJson } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { base64Encode } from "@bufbuild/protobuf/wire";

export const SERVICE = "tollgate.test.v1.TestService";

/** The registry of a FileDescriptorSet and the TestService in it. */
export function loadService(bytes) {
  const registry = createFileRegistry(fromBinary(FileDescriptorSetSchema, bytes));
  const service = registry.getService(SERVICE);
  if (!service) throw new Error(`${SERVICE} is not in the descriptor set`);
  return { registry, service };
}

/** A response message as proto JSON, every field present; bytes fields as their length. */
export function messageToJson(schema, msg, registry) {
  const json = toJson(schema, msg, { registry, alwaysEmitImplicit: true });
  for (const f of schema.fields) {
    const v = msg[f.localName];
    if (v instanceof Uint8Array) json[f.jsonName] = { bytes: v.length };
  }
  return json;
}

/** Headers as an object, lower-case names; repeated values joined with ", ". */
export function headersToJson(headers) {
  const out = {};
  if (!headers) return out;
  headers.forEach((value, name) => {
    out[name] = value;
  });
  return out;
}

/** Connect's name for a code: DeadlineExceeded -> deadline_exceeded. */
export function codeName(code) {
  const name = Code[code];
  if (name === undefined) return `code_${code}`;
  return name.replace(/[A-Z]/g, (c, i) => (i ? "_" : "") + c.toLowerCase());
}

/** Any thrown value as `{code, message, details, metadata}`. */
export function errorToJson(e) {
  const err = ConnectError.from(e);
  return {
    code: codeName(err.code),
    message: err.rawMessage,
    details: err.details.map((d) =>
      "desc" in d
        ? { type: d.desc.typeName, value: "" }
        : { type: d.type, value: base64Encode(d.value) },
    ),
    metadata: headersToJson(err.metadata),
    cause: err.cause === undefined ? undefined : String(err.cause),
  };
}

/**
 * Runs one call of any shape. `onMessage(json)` sees each response message of a
 * stream (or the one of a unary call); after `abortAfter` messages the call is aborted
 * from the client side. Resolves to the final NDJSON object: `{ok, headers, trailers}`
 * or `{error}` (never rejects for RPC failures).
 */
export async function runCall(client, service, registry, spec, onMessage) {
  const method = service.methods.find(
    (m) => m.localName === spec.method || m.name === spec.method,
  );
  if (!method) throw new Error(`no method ${spec.method} in ${service.typeName}`);
  let headers;
  let trailers;
  const abort = new AbortController();
  const options = {
    signal: abort.signal,
    timeoutMs: spec.timeoutMs,
    headers: spec.headers,
    onHeader: (h) => (headers = headersToJson(h)),
    onTrailer: (t) => (trailers = headersToJson(t)),
  };
  const request = spec.request ?? {};
  let seen = 0;
  try {
    if (method.methodKind === "unary") {
      const res = await client[method.localName](request, options);
      onMessage(messageToJson(method.output, res, registry), res);
    } else if (method.methodKind === "server_streaming") {
      for await (const res of client[method.localName](request, options)) {
        onMessage(messageToJson(method.output, res, registry), res);
        seen += 1;
        if (spec.abortAfter !== undefined && seen >= spec.abortAfter) {
          abort.abort();
          return { aborted: seen };
        }
      }
    } else {
      throw new Error(`${method.name}: only unary and server-streaming calls are supported`);
    }
    return { ok: true, headers: headers ?? {}, trailers: trailers ?? {} };
  } catch (e) {
    return { error: errorToJson(e), headers: headers ?? {}, trailers: trailers ?? {} };
  }
}

const RESUME_TOKEN = "tollgate-resume-token";
const RESUME_AFTER = "tollgate-resume-after";

/**
 * Reads one ServerStream call to its end across interruptions: after each one it
 * resumes through the next of `clients` with the stream's token and the count of
 * messages received. `afterMessage(n)` runs after the n-th message; it may wait, and
 * returning "cut" aborts the call from the client side (then resumed).
 *
 * Which errors are worth a resume is the client's choice: here its own cuts, dropped
 * connections and UNAVAILABLE (a draining proxy); statuses the stream itself ended with
 * (a budget cut, DATA_LOSS, NOT_FOUND, ...) are final. A dying connection surfaces as
 * CANCELED without details, the edge's own CANCELED (a budget cut) with an ErrorInfo.
 *
 * Resolves to {ok, seqs, resumes, token, error?, trailers, firstMessageMs}: the last
 * holds, per call (the first, then each resume), the milliseconds from sending it to
 * its first message (null when none came).
 */
export async function runResumable(clients, spec, afterMessage, onEvent = () => {}) {
  const final = [
    Code.Canceled,
    Code.DataLoss,
    Code.NotFound,
    Code.PermissionDenied,
    Code.OutOfRange,
    Code.InvalidArgument,
    Code.ResourceExhausted,
  ];
  const maxResumes = spec.maxResumes ?? 10;
  const seqs = [];
  let token = spec.resumeWith?.token ?? null;
  let resumes = 0;
  let trailers = {};
  const firstMessageMs = [];
  for (let target = 0; ; target++) {
    const sent = performance.now();
    firstMessageMs.push(null);
    const abort = new AbortController();
    const headers = { ...(spec.headers ?? {}) };
    if (token !== null) {
      headers[RESUME_TOKEN] = token;
      const first = spec.resumeWith && resumes === 0;
      headers[RESUME_AFTER] = String(first ? spec.resumeWith.after : seqs.length);
    }
    let cutByUs = false;
    try {
      const stream = clients[target % clients.length].serverStream(spec.request ?? {}, {
        signal: abort.signal,
        headers,
        onHeader: (h) => {
          const t = h.get(RESUME_TOKEN);
          if (t && token === null) {
            token = t;
            onEvent({ token });
          }
        },
        onTrailer: (t) => (trailers = headersToJson(t)),
      });
      for await (const res of stream) {
        seqs.push(res.seq);
        if (firstMessageMs[target] === null) firstMessageMs[target] = performance.now() - sent;
        onEvent({ msg: res.seq });
        if ((await afterMessage(seqs.length)) === "cut") {
          cutByUs = true;
          abort.abort();
        }
      }
      return { ok: true, seqs, resumes, token, trailers, firstMessageMs };
    } catch (e) {
      const err = ConnectError.from(e);
      const dropped = err.code === Code.Canceled && err.details.length === 0;
      const retryable = cutByUs || dropped || !final.includes(err.code);
      if (token === null || !retryable || resumes >= maxResumes) {
        return { ok: false, seqs, resumes, token, error: errorToJson(e), trailers, firstMessageMs };
      }
      resumes += 1;
      onEvent({ resume: { attempt: resumes, after: seqs.length, why: cutByUs ? "cut" : err.rawMessage } });
    }
  }
}
