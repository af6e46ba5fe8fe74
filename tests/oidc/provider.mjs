// A real OpenID provider (the certified `oidc-provider` package) for Tollgate's
// end-to-end tests. It issues client-credentials access tokens as RFC 9068 JWTs
// (`typ: at+jwt`) for one resource server.
//
//   node provider.mjs <config.json> [port]
//
// The config file (written by tests/src/oidc.rs):
//   {
//     "port": 0,                                  // 0 = ephemeral; argv[3] wins
//     "keys": { "keys": [ <private JWKs> ] },      // signing keys, each with a kid
//     "alg": "RS256",                             // RS256 | PS256 | ES256 | EdDSA
//     "signing_kid": null,                        // pin the signing key (else first match)
//     "resource": "https://api.tollgate.test",    // resource indicator = token audience
//     "scope": "read write admin",                // scopes of the resource server
//     "access_token_ttl": 300,                    // seconds
//     "clients": [ { "client_id": "svc", "client_secret": "secret",
//                    "scope": "read write",        // optional allow-list
//                    "claims": { "tenant": "acme" } } ]  // added to its access tokens
//   }
//
// Once listening on 127.0.0.1 it prints one line to stdout and nothing else:
//   {"issuer":"http://127.0.0.1:PORT","port":PORT}
// Diagnostics go to stderr.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';

// stdout carries only the ready line: send library notices (console.info/log) to stderr,
// and drop the runtime notice about Node 20 (oidc-provider 9 prefers Node 22, runs on 20).
const toStderr = (...args) => console.error(...args);
console.log = toStderr;
console.info = toStderr;
const warn = console.warn.bind(console);
console.warn = (...args) => {
  if (String(args[0]).includes('Unsupported runtime')) return;
  warn(...args);
};

const { default: Provider } = await import('oidc-provider');

const [configPath, portArg] = process.argv.slice(2);
if (!configPath) {
  console.error('usage: node provider.mjs <config.json> [port]');
  process.exit(2);
}
const cfg = JSON.parse(fs.readFileSync(configPath, 'utf8'));

const resource = cfg.resource ?? 'https://api.tollgate.test';
const rsScope = cfg.scope ?? 'read write admin';
const alg = cfg.alg ?? 'RS256';
const ttl = cfg.access_token_ttl ?? 300;
const clients = cfg.clients ?? [];
const claimsByClient = new Map(clients.map((c) => [c.client_id, c.claims]));

// Listen first: the issuer needs the port, and the port may be ephemeral.
const server = http.createServer();
const port = await listen(server, Number(portArg ?? cfg.port ?? 0));
const issuer = `http://127.0.0.1:${port}`;

// A quiet in-memory adapter (the built-in one warns it is for development).
class MemoryAdapter {
  static store = new Map();

  constructor(name) {
    this.name = name;
  }

  key(id) {
    return `${this.name}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    const exp = expiresIn ? Date.now() + expiresIn * 1000 : undefined;
    MemoryAdapter.store.set(this.key(id), { payload, exp });
    if (payload.grantId) {
      const grant = `grant:${payload.grantId}`;
      const ids = MemoryAdapter.store.get(grant)?.payload ?? [];
      MemoryAdapter.store.set(grant, { payload: [...ids, this.key(id)], exp });
    }
  }

  async find(id) {
    const entry = MemoryAdapter.store.get(this.key(id));
    if (!entry) return undefined;
    if (entry.exp !== undefined && entry.exp < Date.now()) {
      MemoryAdapter.store.delete(this.key(id));
      return undefined;
    }
    return entry.payload;
  }

  async findByUserCode() {
    return undefined;
  }

  async findByUid() {
    return undefined;
  }

  async consume(id) {
    const entry = MemoryAdapter.store.get(this.key(id));
    if (entry) entry.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    MemoryAdapter.store.delete(this.key(id));
  }

  async revokeByGrantId(grantId) {
    const grant = `grant:${grantId}`;
    for (const key of MemoryAdapter.store.get(grant)?.payload ?? []) {
      MemoryAdapter.store.delete(key);
    }
    MemoryAdapter.store.delete(grant);
  }
}

const provider = new Provider(issuer, {
  adapter: MemoryAdapter,
  jwks: cfg.keys,
  clients: clients.map(({ claims, ...metadata }) => ({
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    scope: rsScope,
    ...metadata,
  })),
  // Resource-server scopes are registered so a client's `scope` allow-list is enforced
  // (a scope outside it gets invalid_scope).
  scopes: ['openid', 'offline_access', ...rsScope.split(' ').filter(Boolean)],
  clientDefaults: {
    grant_types: ['client_credentials'],
    response_types: [],
    id_token_signed_response_alg: alg,
  },
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => resource,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, indicator) => {
        if (indicator !== resource) {
          throw new Provider.errors.InvalidTarget(`unknown resource ${indicator}`);
        }
        return {
          scope: rsScope,
          audience: resource,
          accessTokenFormat: 'jwt',
          accessTokenTTL: ttl,
          jwt: { sign: { alg, ...(cfg.signing_kid ? { kid: cfg.signing_kid } : {}) } },
        };
      },
    },
  },
  extraTokenClaims: async (_ctx, token) => {
    const claims = claimsByClient.get(token.clientId);
    return claims && Object.keys(claims).length ? structuredClone(claims) : undefined;
  },
  ttl: {
    ClientCredentials: (_ctx, token) => token.resourceServer?.accessTokenTTL ?? ttl,
  },
});

provider.on('server_error', (_ctx, err) => console.error('server_error', err));

server.on('request', provider.callback());
process.stdout.write(`${JSON.stringify({ issuer, port })}\n`);

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => server.close(() => process.exit(0)));
}

// Binds 127.0.0.1:port. A fixed port may be held for a moment by the previous
// provider (restart on the same port): retry EADDRINUSE for up to 10 s.
async function listen(srv, wanted) {
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      await new Promise((resolve, reject) => {
        srv.once('error', reject);
        srv.listen(wanted, '127.0.0.1', () => {
          srv.off('error', reject);
          resolve();
        });
      });
      return srv.address().port;
    } catch (err) {
      if (err.code !== 'EADDRINUSE' || Date.now() > deadline) {
        console.error(`cannot listen on 127.0.0.1:${wanted}: ${err.message}`);
        process.exit(1);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}
