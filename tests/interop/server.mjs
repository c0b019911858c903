// A real, independently written OpenID provider (the npm package
// `oidc-provider`) shaped like AVEVA Identity Manager, for aim-token's
// interop tests. Started by tests/support/peer.rs; not a mock: every token,
// error and discovery document below is produced by oidc-provider itself.
//
// Usage: node server.mjs '<config json>'
//   {
//     "clients": [{ "client_id", "client_secret", "token_endpoint_auth_method", "scope" }],
//     "scopes": ["mes.api", ...],          // every scope the server knows
//     "initial_access_token": "...",       // enables RFC 7591 registration
//     "access_token_ttl": 3600,            // seconds
//     "tls": { "cert": "path.pem", "key": "path.pem" }   // optional: serve https
//   }
//
// Listens on 127.0.0.1 with a free port and, once ready, prints ONE line of
// JSON on stdout: { "ready": true, "port", "issuer", "discovery",
// "token_endpoint", "registration_endpoint", "stats" }. Everything else goes to
// stderr. Exits when stdin closes, so it cannot outlive the test process that
// started it, even one killed with SIGKILL.
//
// AIM's shape: everything under /identitymanager, IdentityServer's route names
// (/connect/token, /connect/register, ...). Extra route for the tests:
// GET /__stats -> counts of the requests seen, to prove "no retry".

import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import process from 'node:process';

import { Provider } from 'oidc-provider';

const PREFIX = '/identitymanager';
// The one resource server (the MES Web API); tokens for it are JWTs, as AIM's are.
const RESOURCE = 'urn:aveva:mes';

const config = JSON.parse(process.argv[2] ?? '{}');
const scopes = config.scopes ?? ['mes.api'];
const ttl = config.access_token_ttl ?? 3600;

const stats = {
  requests: 0,
  discovery_requests: 0,
  token_requests: 0,
  token_successes: 0,
  // OAuth error code -> count, e.g. { "invalid_client": 1 }
  token_errors: {},
  registration_requests: 0,
};

function log(...args) {
  console.error('[interop-peer]', ...args);
}

// Fresh signing key per run: nothing secret is committed, and no
// "development keys" warning from oidc-provider.
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), alg: 'RS256', use: 'sig' };

function providerConfiguration() {
  return {
    clients: (config.clients ?? []).map((c) => ({
      client_id: c.client_id,
      client_secret: c.client_secret,
      token_endpoint_auth_method: c.token_endpoint_auth_method ?? 'client_secret_post',
      scope: c.scope ?? scopes.join(' '),
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
    })),
    scopes: ['openid', 'offline_access', ...scopes],
    jwks: { keys: [signingKey] },
    cookies: { keys: [randomUUID()] },
    clientAuthMethods: ['client_secret_post', 'client_secret_basic'],
    routes: {
      authorization: '/connect/authorize',
      end_session: '/connect/endsession',
      introspection: '/connect/introspect',
      jwks: '/.well-known/openid-configuration/jwks',
      registration: '/connect/register',
      revocation: '/connect/revocation',
      token: '/connect/token',
      userinfo: '/connect/userinfo',
    },
    ttl: {
      ClientCredentials: ttl,
      // Registration access tokens: long enough for any test.
      RegistrationAccessToken: 3600,
    },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
      registration: config.initial_access_token
        ? { enabled: true, initialAccessToken: config.initial_access_token }
        : { enabled: false },
      resourceIndicators: {
        enabled: true,
        // Clients do not name a resource (AIM's don't): default to MES.
        defaultResource: async (_ctx, _client, oneOf) => oneOf ?? RESOURCE,
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx, resourceIndicator) => {
          if (resourceIndicator !== RESOURCE) {
            throw new Error(`unknown resource ${resourceIndicator}`);
          }
          return {
            scope: scopes.join(' '),
            audience: RESOURCE,
            accessTokenTTL: ttl,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
  };
}

// oidc-provider needs its issuer (with the port) before it can be built, and
// the port is known only once the server listens: route through `handle`.
let handle = (_req, res) => {
  res.statusCode = 503;
  res.end();
};

const serverOptions = config.tls
  ? { cert: readFileSync(config.tls.cert), key: readFileSync(config.tls.key) }
  : {};
const server = config.tls
  ? https.createServer(serverOptions, (req, res) => handle(req, res))
  : http.createServer((req, res) => handle(req, res));

server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const scheme = config.tls ? 'https' : 'http';
  const issuer = `${scheme}://127.0.0.1:${port}${PREFIX}`;
  const provider = new Provider(issuer, providerConfiguration());

  // Count what reached the token endpoint and how it was answered.
  provider.use(async (ctx, next) => {
    await next();
    const route = ctx.oidc?.route;
    if (route === 'token') {
      stats.token_requests += 1;
      const error = ctx.body?.error;
      if (error) {
        stats.token_errors[error] = (stats.token_errors[error] ?? 0) + 1;
      } else if (ctx.status === 200) {
        stats.token_successes += 1;
      }
    } else if (route === 'discovery') {
      stats.discovery_requests += 1;
    } else if (route === 'registration') {
      stats.registration_requests += 1;
    }
  });
  provider.on('server_error', (_ctx, err) => log('server_error', err));

  const callback = provider.callback();
  handle = (req, res) => {
    stats.requests += 1;
    const path = req.url.split('?')[0];
    if (req.method === 'GET' && path === '/__stats') {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify(stats));
      return;
    }
    if (path === PREFIX || path.startsWith(`${PREFIX}/`)) {
      // Mount under the prefix the way express does: oidc-provider derives
      // the mount path from originalUrl minus url.
      req.originalUrl = req.url;
      req.url = req.url.slice(PREFIX.length) || '/';
      callback(req, res);
      return;
    }
    res.statusCode = 404;
    res.end('not found');
  };

  const base = `${scheme}://127.0.0.1:${port}`;
  process.stdout.write(`${JSON.stringify({
    ready: true,
    port,
    issuer,
    discovery: `${issuer}/.well-known/openid-configuration`,
    token_endpoint: `${issuer}/connect/token`,
    registration_endpoint: config.initial_access_token ? `${issuer}/connect/register` : null,
    stats: `${base}/__stats`,
  })}\n`);
});

server.on('error', (err) => {
  log('server error', err);
  process.exit(1);
});

// The test process holds our stdin: when it goes away, so do we.
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
process.on('SIGTERM', () => process.exit(0));
