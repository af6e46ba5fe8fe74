// The browser test's page script (bundled by bundle.mjs). Served from one origin, it
// calls TestService through the proxy on another origin (`?proxy=https://grpc.test:PORT`),
// so every call needs the proxy's CORS answers, with connect-web's Connect (JSON and
// binary) and gRPC-Web transports. Results go to `window.__results` and the page.
import { createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import { loadService, runCall, runResumable } from "../rpc.mjs";

const params = new URLSearchParams(location.search);
const proxy = params.get("proxy");
const count = Number(params.get("count") ?? "50");

const failMessage = "quota épuisée: 100% used ✓";

/** One call; its messages collected. */
async function call(client, service, registry, spec) {
  const messages = [];
  const outcome = await runCall(client, service, registry, spec, (json) => messages.push(json));
  return { messages, ...outcome };
}

async function main() {
  const res = await fetch("descriptor.bin");
  if (!res.ok) throw new Error(`descriptor.bin: HTTP ${res.status}`);
  const { registry, service } = loadService(new Uint8Array(await res.arrayBuffer()));
  const transports = {
    connectJson: createConnectTransport({ baseUrl: proxy, useBinaryFormat: false, jsonOptions: { registry } }),
    connectProto: createConnectTransport({ baseUrl: proxy, useBinaryFormat: true }),
    connectGet: createConnectTransport({ baseUrl: proxy, useBinaryFormat: false, useHttpGet: true }),
    grpcWeb: createGrpcWebTransport({ baseUrl: proxy, useBinaryFormat: true }),
  };
  const clients = Object.fromEntries(
    Object.entries(transports).map(([name, t]) => [name, createClient(service, t)]),
  );
  const stream = { method: "serverStream", request: { count, intervalMs: 5, payloadBytes: 16 } };
  const fail = { method: "fail", request: { code: 9, message: failMessage, withDetails: true } };
  const echo = (message) => ({ method: "echo", request: { message } });
  const cases = [
    ["echoConnectJson", "connectJson", echo("hello from the browser")],
    ["echoConnectGet", "connectGet", echo("hello by GET")],
    ["echoGrpcWeb", "grpcWeb", echo("hello over gRPC-Web")],
    ["streamConnectJson", "connectJson", stream],
    ["streamConnectProto", "connectProto", stream],
    ["streamGrpcWeb", "grpcWeb", stream],
    ["failConnectJson", "connectJson", fail],
    ["failGrpcWeb", "grpcWeb", fail],
  ];
  const results = { origin: location.origin, proxy };
  for (const [name, transport, spec] of cases) {
    results[name] = await call(clients[transport], service, registry, spec);
  }
  // Resumable streams (the proxy's app has `resume`): the page cuts its own stream
  // twice and resumes it with the token the edge sent, by the count it received.
  if (params.get("resume") === "1") {
    const cutAt = new Set([7, 23]);
    for (const [name, transport] of [
      ["resumeConnectProto", "connectProto"],
      ["resumeGrpcWeb", "grpcWeb"],
    ]) {
      const cuts = new Set(cutAt);
      const afterMessage = async (n) => (cuts.delete(n) ? "cut" : undefined);
      results[name] = await runResumable([clients[transport]], stream, afterMessage);
    }
  }
  return results;
}

function publish(results) {
  window.__results = results;
  document.getElementById("results").textContent = JSON.stringify(results, null, 2);
  document.getElementById("status").textContent = "done";
}

main().then(publish, (e) => publish({ pageError: String(e?.stack ?? e) }));
