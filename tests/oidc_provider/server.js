// The OpenID Connect provider the tests start on loopback (tests/oidc_provider.py): panva's
// oidc-provider (OpenID Certified) with the accounts, clients and signing keys the tests give it.
//
//   OIDC_STATE=/path/state.json OIDC_ADMIN_TOKEN=secret node server.js
//       -> prints {"issuer": "http://127.0.0.1:N"} once discovery answers
//
// state.json is {"jwks": {"keys": [private JWKs]}, "accounts": [{"sub", "username", "password",
// "claims": {...}}], "clients": [client metadata], "resource": {"audience", "ttl"}}. The first
// key of each type signs; the others are still published (key rotation with overlap).
//
// Sign-in goes through this server's own login page (/interaction/:uid): a form asking for a
// user name and password, checked against the accounts, so a browser really signs in here.
// Consent is implied for the registered clients (first-party hospital applications).
//
// PUT /_test/state with "Authorization: Bearer $OIDC_ADMIN_TOKEN" replaces the state (new
// signing keys, new clients) without changing the issuer; the tests rotate keys this way.
// Client-credentials grants with resource=<audience> give JWT access tokens for the API, with
// the client's "roles"/"groups" metadata as claims.
import http from 'node:http';
import { readFileSync } from 'node:fs';
import { timingSafeEqual } from 'node:crypto';
import Provider from 'oidc-provider';

const ADMIN = process.env.OIDC_ADMIN_TOKEN;
if (!ADMIN || !process.env.OIDC_STATE) {
  console.error('OIDC_STATE and OIDC_ADMIN_TOKEN are required');
  process.exit(2);
}

let provider;
let state;

function escape(s) {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function same(a, b) {
  const x = Buffer.from(String(a));
  const y = Buffer.from(String(b));
  return x.length === y.length && timingSafeEqual(x, y);
}

function build(issuer, next) {
  const accounts = new Map(next.accounts.map((a) => [a.sub, a]));
  const resource = next.resource || { audience: 'clinical-mlops', ttl: 600 };
  const p = new Provider(issuer, {
    clients: next.clients,
    jwks: next.jwks,
    claims: {
      openid: ['sub'],
      profile: ['preferred_username', 'name'],
      groups: ['groups'],
    },
    scopes: ['openid', 'profile', 'groups'],
    // the ID token of the code flow carries the scopes' claims (no userinfo call needed)
    conformIdTokenClaims: false,
    pkce: { required: () => true },
    cookies: { keys: [ADMIN] },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      rpInitiatedLogout: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => undefined,
        useGrantedResource: () => false,
        getResourceServerInfo: (_ctx, indicator) => {
          if (indicator !== resource.audience) throw new Error(`unknown resource ${indicator}`);
          return {
            scope: 'api',
            audience: resource.audience,
            accessTokenFormat: 'jwt',
            accessTokenTTL: resource.ttl,
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
    extraClientMetadata: { properties: ['roles', 'groups'] },
    extraTokenClaims: (_ctx, token) => {
      if (token.kind !== 'ClientCredentials' || !token.client) return undefined;
      const out = {};
      if (token.client.roles) out.roles = token.client.roles;
      if (token.client.groups) out.groups = token.client.groups;
      return out;
    },
    findAccount: (_ctx, sub) => {
      const account = accounts.get(sub);
      if (!account) return undefined;
      return {
        accountId: sub,
        claims: () => ({ sub, preferred_username: account.username, ...account.claims }),
      };
    },
    loadExistingGrant: async (ctx) => {
      const grantId = ctx.oidc.result?.consent?.grantId
        || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
      if (grantId) return ctx.oidc.provider.Grant.find(grantId);
      const grant = new ctx.oidc.provider.Grant({
        clientId: ctx.oidc.client.clientId,
        accountId: ctx.oidc.session.accountId,
      });
      grant.addOIDCScope('openid profile groups');
      await grant.save();
      return grant;
    },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    ttl: { Session: 3600, Grant: 3600, Interaction: 600, IdToken: 300, AuthorizationCode: 60 },
  });
  p.proxy = false;
  p.on('server_error', (_ctx, err) => console.error(err));
  return { p, accounts };
}

function loginPage(res, uid, error, status = 200) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(`<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Hospital sign-in</title></head>
<body><main><h1>Hospital sign-in</h1>${error ? `<p role="alert">${escape(error)}</p>` : ''}
<form method="post" action="/interaction/${escape(uid)}/login">
<label>Username <input name="username" autocomplete="username" required></label>
<label>Password <input name="password" type="password" autocomplete="current-password" required></label>
<button type="submit">Continue</button></form></main></body></html>`);
}

async function body(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  return Buffer.concat(chunks).toString('utf8');
}

async function interaction(req, res, accounts) {
  const url = new URL(req.url, 'http://x');
  const [, , uid, action] = url.pathname.split('/');
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw new Error('interaction mismatch');
  if (req.method === 'GET' && !action) return loginPage(res, uid);
  if (req.method === 'POST' && action === 'login') {
    const form = new URLSearchParams(await body(req));
    const account = [...accounts.values()].find((a) => a.username === form.get('username'));
    if (!account || !same(account.password, form.get('password') || '')) {
      return loginPage(res, uid, 'Unknown user name or wrong password.', 401);
    }
    return provider.interactionFinished(
      req,
      res,
      { login: { accountId: account.sub } },
      { mergeWithLastSubmission: false },
    );
  }
  res.writeHead(404).end();
}

const server = http.createServer(async (req, res) => {
  try {
    if (req.url === '/_test/state' && req.method === 'PUT') {
      const auth = req.headers.authorization || '';
      if (!same(auth, `Bearer ${ADMIN}`)) return res.writeHead(401).end();
      const next = JSON.parse(await body(req));
      const built = build(provider.issuer, next);
      state = next;
      provider = built.p;
      server.accounts = built.accounts;
      res.writeHead(204).end();
      return;
    }
    if (req.url.startsWith('/interaction/')) return await interaction(req, res, server.accounts);
    return provider.callback()(req, res);
  } catch (err) {
    console.error(err);
    if (!res.headersSent) res.writeHead(400, { 'content-type': 'text/plain' });
    res.end(String(err && err.message));
  }
});

server.listen(0, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  state = JSON.parse(readFileSync(process.env.OIDC_STATE, 'utf8'));
  const built = build(issuer, state);
  provider = built.p;
  server.accounts = built.accounts;
  console.log(JSON.stringify({ issuer }));
});
