// A real OpenID provider (panva/oidc-provider) for portcullis's integration tests.
//
//   node provider.mjs --port P --keys FILE [--rotate]
//
// TEST FIXTURE ONLY. Everything here is deliberately insecure: fixed client secrets, an
// unauthenticated endpoint that mints tokens for any subject, another that signs arbitrary claims
// (or produces unsigned / algorithm-confusion tokens). It listens on 127.0.0.1 only and must never
// be deployed anywhere.
//
// Keys: FILE holds a JSON array of private JWKs. When it is missing, one RS256 (RSA 2048), one
// ES256 (P-256) and one EdDSA (Ed25519) key are generated and written to it. With --rotate, a new
// RS256 key is prepended to the existing file (the old keys stay, so the JWKS holds new + old).
// The FIRST key in the file signs access tokens.
//
// Prints exactly one line `READY http://127.0.0.1:P` on stdout once listening; everything else
// (provider notices, errors) goes to stderr. Exits when stdin closes (so a test process that dies
// leaves no orphan behind), and on SIGTERM / SIGINT.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { parseArgs } from 'node:util';

import * as jose from 'jose';
import Provider from 'oidc-provider';

// oidc-provider prints its notices with console.info; keep stdout for the READY line alone.
console.log = (...args) => console.error(...args);
console.info = (...args) => console.error(...args);

const AUDIENCE = 'urn:portcullis:gateway';

// Test fixtures: client credentials and the `groups` claim each client's tokens carry.
const CLIENTS = {
  'agent-etl': { secret: 'etl-secret', groups: ['etl'] },
  'agent-support': { secret: 'support-secret', groups: ['support'] },
};

function fail(message) {
  process.stderr.write(`provider.mjs: ${message}\n`);
  process.exit(2);
}

const { values: args } = parseArgs({
  options: {
    port: { type: 'string' },
    keys: { type: 'string' },
    rotate: { type: 'boolean', default: false },
  },
  strict: true,
});
const port = Number.parseInt(args.port ?? '', 10);
if (!Number.isInteger(port) || port <= 0 || port > 65535) fail('--port P is required (1..65535)');
if (!args.keys) fail('--keys FILE is required');

// --- keys ------------------------------------------------------------------------------------

async function newKey(alg, prefix, options = {}) {
  const { privateKey } = await jose.generateKeyPair(alg, { extractable: true, ...options });
  const jwk = await jose.exportJWK(privateKey);
  const thumbprint = await jose.calculateJwkThumbprint(jwk);
  return { ...jwk, kid: `${prefix}-${thumbprint.slice(0, 16)}`, alg, use: 'sig' };
}

function writeKeys(file, keys) {
  const tmp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, `${JSON.stringify(keys, null, 2)}\n`, { mode: 0o600 });
  fs.renameSync(tmp, file);
}

async function loadKeys(file, rotate) {
  let keys;
  if (fs.existsSync(file)) {
    keys = JSON.parse(fs.readFileSync(file, 'utf8'));
    if (!Array.isArray(keys) || keys.length === 0) fail(`${file} must hold a non-empty JSON array of JWKs`);
    if (rotate) {
      keys = [await newKey('RS256', 'rs', { modulusLength: 2048 }), ...keys];
      writeKeys(file, keys);
    }
  } else {
    fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
    keys = [
      await newKey('RS256', 'rs', { modulusLength: 2048 }),
      await newKey('ES256', 'es'),
      await newKey('EdDSA', 'ed', { crv: 'Ed25519' }),
    ];
    writeKeys(file, keys);
  }
  return keys;
}

const keys = await loadKeys(args.keys, args.rotate);
const signingKey = keys[0];
if (!signingKey.alg) fail('the first key in the keys file has no "alg"');

// The newest key of each kind (the file is newest-first): what /test/sign means by rs, es, ed.
function firstKey(predicate, what) {
  const jwk = keys.find(predicate);
  if (!jwk) throw new HttpError(400, `the keys file has no ${what} key`);
  return jwk;
}
const namedKeys = {
  rs: () => firstKey((k) => k.kty === 'RSA', 'RSA'),
  es: () => firstKey((k) => k.kty === 'EC' && k.crv === 'P-256', 'P-256'),
  ed: () => firstKey((k) => k.kty === 'OKP' && k.crv === 'Ed25519', 'Ed25519'),
};

// --- the provider ----------------------------------------------------------------------------

const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: Object.entries(CLIENTS).map(([clientId, { secret }]) => ({
    client_id: clientId,
    client_secret: secret,
    // oidc-provider accepts client_secret_post as well for a client_secret_basic client.
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    scope: 'db',
  })),
  jwks: { keys },
  scopes: ['openid', 'offline_access', 'db'],
  cookies: { keys: ['portcullis-test-idp-cookie-key-not-secret'] },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => AUDIENCE,
      useGrantedResource: async () => true,
      getResourceServerInfo: async () => ({
        scope: 'db',
        audience: AUDIENCE,
        accessTokenFormat: 'jwt',
        accessTokenTTL: 300,
        jwt: { sign: { alg: signingKey.alg, kid: signingKey.kid } },
      }),
    },
  },
  extraTokenClaims: async (_ctx, token) => {
    const client = CLIENTS[token.clientId];
    return client ? { groups: client.groups } : undefined;
  },
});

// --- test-only endpoints ---------------------------------------------------------------------

class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

const b64url = (data) => Buffer.from(data).toString('base64url');

// Compact JWS by hand (not through jose) so that a test can put anything in the header,
// including an `alg` that does not match the key: negative tests need exactly that.
function compactJws(header, claims, keyName) {
  const signingInput = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  let signature;
  switch (keyName) {
    case 'rs': {
      const key = crypto.createPrivateKey({ key: namedKeys.rs(), format: 'jwk' });
      signature = crypto.sign('sha256', Buffer.from(signingInput), key); // RSASSA-PKCS1-v1_5
      break;
    }
    case 'es': {
      const key = crypto.createPrivateKey({ key: namedKeys.es(), format: 'jwk' });
      signature = crypto.sign('sha256', Buffer.from(signingInput), { key, dsaEncoding: 'ieee-p1363' });
      break;
    }
    case 'ed': {
      const key = crypto.createPrivateKey({ key: namedKeys.ed(), format: 'jwk' });
      signature = crypto.sign(null, Buffer.from(signingInput), key);
      break;
    }
    case 'hs-with-public-key': {
      // The algorithm-confusion attack: HS256 keyed with the RSA public key's PEM (SPKI) text,
      // exactly as `KeyObject.export({ type: 'spki', format: 'pem' })` gives it (trailing newline
      // included). A verifier that lets the token's alg pick how the RS key is used accepts this.
      const publicPem = crypto
        .createPublicKey({ key: namedKeys.rs(), format: 'jwk' })
        .export({ type: 'spki', format: 'pem' });
      signature = crypto.createHmac('sha256', publicPem).update(signingInput).digest();
      break;
    }
    case 'none':
      signature = Buffer.alloc(0);
      break;
    default:
      throw new HttpError(400, `unknown key "${keyName}": use rs, es, ed, hs-with-public-key or none`);
  }
  return `${signingInput}.${b64url(signature)}`;
}

const defaultHeaders = {
  rs: () => ({ alg: 'RS256', typ: 'at+jwt', kid: namedKeys.rs().kid }),
  es: () => ({ alg: 'ES256', typ: 'at+jwt', kid: namedKeys.es().kid }),
  ed: () => ({ alg: 'EdDSA', typ: 'at+jwt', kid: namedKeys.ed().kid }),
  'hs-with-public-key': () => ({ alg: 'HS256', typ: 'at+jwt', kid: namedKeys.rs().kid }),
  none: () => ({ alg: 'none', typ: 'at+jwt' }),
};

// POST /test/sign {"header": {...}, "claims": {...}, "key": "rs"|"es"|"ed"|"hs-with-public-key"|"none"}
// The header starts from the key's natural one ({alg, typ: "at+jwt", kid}); fields given in
// `header` replace those, and a field given as null is removed. The claims are signed verbatim.
function testSign(body) {
  const keyName = body.key ?? 'rs';
  if (!(keyName in defaultHeaders)) {
    throw new HttpError(400, `unknown key "${keyName}": use rs, es, ed, hs-with-public-key or none`);
  }
  const header = { ...defaultHeaders[keyName](), ...(body.header ?? {}) };
  for (const [name, value] of Object.entries(header)) if (value === null) delete header[name];
  if (typeof body.claims !== 'object' || body.claims === null || Array.isArray(body.claims)) {
    throw new HttpError(400, '"claims" must be a JSON object');
  }
  return { token: compactJws(header, body.claims, keyName) };
}

// POST /test/human-token {"sub", "groups"?, "may_act"?, "ttl"?, "aud"?, ...other claims}
// Stands in for the access token a human gets from an interactive (authorization code) login at
// this provider: a test cannot drive a browser login, so this mints the same shape of token,
// signed by the provider's current signing key. Any other fields in the body are added as claims.
function testHumanToken(body) {
  const { sub, groups = [], may_act: mayAct, ttl = 300, aud = AUDIENCE, ...extra } = body;
  if (typeof sub !== 'string' || !sub) throw new HttpError(400, '"sub" (a string) is required');
  if (!Array.isArray(groups)) throw new HttpError(400, '"groups" must be an array');
  if (typeof ttl !== 'number') throw new HttpError(400, '"ttl" must be a number of seconds');
  const iat = Math.floor(Date.now() / 1000);
  const claims = {
    ...extra,
    iss: issuer,
    sub,
    aud,
    iat,
    exp: iat + ttl,
    jti: crypto.randomUUID(),
    groups,
    ...(mayAct === undefined ? {} : { may_act: mayAct }),
  };
  const header = { alg: signingKey.alg, typ: 'at+jwt', kid: signingKey.kid };
  const key = crypto.createPrivateKey({ key: signingKey, format: 'jwk' });
  const input = Buffer.from(`${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`);
  let signature;
  switch (signingKey.alg) {
    case 'RS256': signature = crypto.sign('sha256', input, key); break;
    case 'ES256': signature = crypto.sign('sha256', input, { key, dsaEncoding: 'ieee-p1363' }); break;
    case 'EdDSA': case 'Ed25519': signature = crypto.sign(null, input, key); break;
    default: throw new HttpError(500, `unsupported signing alg ${signingKey.alg}`);
  }
  return { token: `${input.toString()}.${b64url(signature)}` };
}

const testRoutes = {
  '/test/sign': testSign,
  '/test/human-token': testHumanToken,
};

function sendJson(res, status, value) {
  const body = JSON.stringify(value);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
  });
  res.end(body);
}

async function readJson(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 1 << 20) throw new HttpError(413, 'body too large');
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (!text) return {};
  try {
    const value = JSON.parse(text);
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      throw new Error('not an object');
    }
    return value;
  } catch (err) {
    throw new HttpError(400, `body must be a JSON object: ${err.message}`);
  }
}

async function handleTest(req, res) {
  const route = testRoutes[new URL(req.url, issuer).pathname];
  try {
    if (!route) throw new HttpError(404, `no such test endpoint ${req.url}`);
    if (req.method !== 'POST') throw new HttpError(405, 'use POST');
    sendJson(res, 200, route(await readJson(req)));
  } catch (err) {
    const status = err instanceof HttpError ? err.status : 500;
    if (status === 500) console.error(err);
    sendJson(res, status, { error: err.message });
  }
}

// --- server and lifetime ---------------------------------------------------------------------

const providerCallback = provider.callback();
const server = http.createServer((req, res) => {
  if (req.url.startsWith('/test/')) {
    handleTest(req, res);
  } else {
    providerCallback(req, res);
  }
});

let stopping = false;
function stop(code = 0) {
  if (stopping) return;
  stopping = true;
  server.close();
  server.closeAllConnections?.();
  process.exit(code);
}

process.on('SIGTERM', () => stop(0));
process.on('SIGINT', () => stop(0));
// The parent holds our stdin: when it exits or closes it, so do we.
process.stdin.on('end', () => stop(0));
process.stdin.on('close', () => stop(0));
process.stdin.on('error', () => stop(0));
process.stdin.resume();

server.on('error', (err) => {
  console.error(`provider.mjs: cannot listen on 127.0.0.1:${port}: ${err.message}`);
  process.exit(1);
});
server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`READY ${issuer}\n`);
});
