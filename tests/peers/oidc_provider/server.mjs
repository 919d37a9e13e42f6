// Partner OIDC IdP for Isthmus integration tests, on panva/node-oidc-provider 9 (ESM).
// Started and stopped by the pytest plugin tests/peers/oidc_provider.py (one process per partner);
// adapted from the recipe in the team's shared peers folder. Configuration: environment variables
//   PORT (required)  HOST (127.0.0.1)  ISSUER (http://$HOST:$PORT)  NAME (partner1)
//   STATE_DIR (required: jwks.json = persisted signing keys)  EMAIL_DOMAIN ($NAME.example)
//   CLIENT_ID  CLIENT_SECRET (required unless auth method none)
//   REDIRECT_URIS  POST_LOGOUT_REDIRECT_URIS  (space or comma separated, exact match)
//   TOKEN_ENDPOINT_AUTH_METHOD (client_secret_basic | client_secret_post | none | ...)
//   ID_TOKEN_ALG (RS256 | ES256; both keys are always in the JWKS)   BACKCHANNEL_LOGOUT_URI
//   CLIENTS_FILE  (JSON array of oidc-provider client metadata; replaces the single CLIENT_* client)
//   USERS_FILE    (JSON array of users {sub, username, password, given_name?, family_name?,
//                  groups?, email?, email_verified?, ...extra claims}; replaces the built-in users)
//   PKCE_REQUIRED (1 = PKCE S256 mandatory for every client; default: only for public clients)
//   CONFORM_ID_TOKEN_CLAIMS (1 = scope claims only via userinfo; default: also in the ID token)
//   PROXY (1 = trust X-Forwarded-*)   TTL_*  (seconds, see below)
//   PARENT_PID (exit when that process is gone: no orphans if the test runner is killed)
// Exit code 98 = the port was taken (the plugin then retries on another port).
import { createServer } from 'node:http';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

import Provider from 'oidc-provider';

const env = process.env;
if (!env.PORT || !env.STATE_DIR) { console.error('PORT and STATE_DIR are required'); process.exit(2); }
const PORT = Number(env.PORT);
const HOST = env.HOST || '127.0.0.1';
const NAME = env.NAME || 'partner1';
const ISSUER = (env.ISSUER || `http://${HOST}:${PORT}`).replace(/\/$/, '');
const EMAIL_DOMAIN = env.EMAIL_DOMAIN || `${NAME}.example`;
const STATE_DIR = env.STATE_DIR;
const COOKIE_SUFFIX = NAME.replace(/[^A-Za-z0-9]/g, '_');
const list = (s) => (s || '').split(/[\s,]+/).filter(Boolean);

mkdirSync(STATE_DIR, { recursive: true });

// ---------------------------------------------------------------- signing keys
// One RSA (RS256) and one EC P-256 (ES256) key, persisted in STATE_DIR/jwks.json so
// that restarts keep the same kids (delete the file to rotate).
const jwksFile = env.JWKS_FILE || path.join(STATE_DIR, 'jwks.json');
function makeJwks() {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
  return {
    keys: [
      { ...rsa, kid: `${NAME}-rs256-${randomBytes(4).toString('hex')}`, alg: 'RS256', use: 'sig' },
      { ...ec, kid: `${NAME}-es256-${randomBytes(4).toString('hex')}`, alg: 'ES256', use: 'sig' },
    ],
  };
}
let jwks;
if (existsSync(jwksFile)) {
  jwks = JSON.parse(readFileSync(jwksFile, 'utf8'));
} else {
  jwks = makeJwks();
  writeFileSync(jwksFile, JSON.stringify(jwks, null, 2), { mode: 0o600 });
}

// ---------------------------------------------------------------- users
const defaultUsers = [
  {
    sub: 'alice', username: 'alice', password: 'alice-password',
    given_name: 'Alice', family_name: 'Anderson', groups: ['engineering', 'admins'],
  },
  {
    sub: 'bob', username: 'bob', password: 'bob-password',
    given_name: 'Bob', family_name: 'Brown', groups: ['sales'],
  },
  {
    sub: 'carol', username: 'carol', password: 'carol-password',
    given_name: 'Carol', family_name: 'Clark', groups: [],
  },
];
const users = (env.USERS_FILE ? JSON.parse(readFileSync(env.USERS_FILE, 'utf8')) : defaultUsers)
  .map((u) => ({
    email: `${u.username}@${EMAIL_DOMAIN}`,
    email_verified: true,
    name: [u.given_name, u.family_name].filter(Boolean).join(' ') || u.username,
    preferred_username: u.username,
    ...u,
  }));
const byId = new Map(users.map((u) => [u.sub, u]));
function findUserByLogin(login) {
  const l = String(login || '').trim().toLowerCase();
  return users.find((u) => u.username.toLowerCase() === l || String(u.email).toLowerCase() === l);
}

// ---------------------------------------------------------------- clients
let clients;
if (env.CLIENTS_FILE) {
  clients = JSON.parse(readFileSync(env.CLIENTS_FILE, 'utf8'));
} else {
  const authMethod = env.TOKEN_ENDPOINT_AUTH_METHOD || 'client_secret_basic';
  const c = {
    client_id: env.CLIENT_ID || 'hub',
    redirect_uris: list(env.REDIRECT_URIS),
    post_logout_redirect_uris: list(env.POST_LOGOUT_REDIRECT_URIS),
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: authMethod,
    id_token_signed_response_alg: env.ID_TOKEN_ALG || 'RS256',
  };
  if (authMethod !== 'none') {
    if (!env.CLIENT_SECRET) { console.error(`CLIENT_SECRET is required for ${authMethod}`); process.exit(2); }
    c.client_secret = env.CLIENT_SECRET;
  }
  if (env.BACKCHANNEL_LOGOUT_URI) {
    c.backchannel_logout_uri = env.BACKCHANNEL_LOGOUT_URI;
    c.backchannel_logout_session_required = true;
  }
  clients = [c];
}

// ---------------------------------------------------------------- provider
const ttl = (k, d) => Number(env[`TTL_${k}`] || d);
const configuration = {
  clients,
  jwks,
  cookies: {
    keys: [env.COOKIE_SECRET || randomBytes(32).toString('hex')],
    // Browsers scope cookies by host, NOT by port: several instances (and the hub) on 127.0.0.1
    // would overwrite each other's `_session` cookie. Suffix the names with the instance NAME.
    names: {
      session: `_session_${COOKIE_SUFFIX}`,
      interaction: `_interaction_${COOKIE_SUFFIX}`,
      resume: `_interaction_resume_${COOKIE_SUFFIX}`,
    },
  },
  claims: {
    // acr/amr come from the login result; listing them under `openid` lets them pass the
    // scope mask into the ID token, so the hub's acr/amr mapping meets real values.
    openid: ['sub', 'acr', 'amr', 'auth_time'],
    email: ['email', 'email_verified'],
    profile: ['name', 'given_name', 'family_name', 'preferred_username'],
    groups: ['groups'],
  },
  scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
  conformIdTokenClaims: env.CONFORM_ID_TOKEN_CLAIMS === '1',
  pkce: {
    required: env.PKCE_REQUIRED === '1' ? () => true : (ctx, client) => client.clientAuthMethod === 'none',
  },
  features: {
    devInteractions: { enabled: false }, // we ship our own small, scriptable login form below
    introspection: { enabled: true },
    revocation: { enabled: true },
    userinfo: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    backchannelLogout: { enabled: true },
    claimsParameter: { enabled: true },
  },
  ttl: {
    AccessToken: ttl('ACCESS_TOKEN', 3600),
    AuthorizationCode: ttl('AUTHORIZATION_CODE', 60),
    IdToken: ttl('ID_TOKEN', 3600),
    RefreshToken: ttl('REFRESH_TOKEN', 86400),
    Interaction: ttl('INTERACTION', 600),
    Session: ttl('SESSION', 86400),
    Grant: ttl('GRANT', 86400),
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, sub) {
    const u = byId.get(sub);
    if (!u) return undefined;
    return {
      accountId: sub,
      async claims() {
        const { password, username, ...claims } = u; // never leak the password
        return { ...claims, sub };
      },
    };
  },
  // Partner IdPs behave like enterprise IdPs: no consent screen. Every requested scope/claim
  // of a registered client is granted automatically.
  async loadExistingGrant(ctx) {
    const { oidc } = ctx;
    const grantId = oidc.result?.consent?.grantId || oidc.session.grantIdFor(oidc.client.clientId);
    let grant = grantId ? await oidc.provider.Grant.find(grantId) : undefined;
    if (!grant) {
      grant = new oidc.provider.Grant({ clientId: oidc.client.clientId, accountId: oidc.session.accountId });
    }
    grant.addOIDCScope([...oidc.requestParamOIDCScopes].join(' '));
    if (oidc.requestParamClaims.size) grant.addOIDCClaims([...oidc.requestParamClaims]);
    await grant.save();
    return grant;
  },
  renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = `<!DOCTYPE html><html><head><title>oops</title></head><body><h1>oops! something went wrong</h1>${
      Object.entries(out).map(([k, v]) => `<pre><strong>${esc(k)}</strong>: ${esc(v)}</pre>`).join('')}</body></html>`;
  },
};

const provider = new Provider(ISSUER, configuration);
if (env.PROXY === '1') provider.proxy = true;

function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
}
async function readForm(req) {
  const chunks = [];
  for await (const ch of req) chunks.push(ch);
  return Object.fromEntries(new URLSearchParams(Buffer.concat(chunks).toString('utf8')));
}
function loginPage({ uid, clientId, error, login }) {
  return `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>${esc(NAME)} sign-in</title></head>
<body>
<h1>${esc(NAME)} corporate sign-in</h1>
<p>Application: <code>${esc(clientId)}</code></p>
${error ? `<p id="error" style="color:red">${esc(error)}</p>` : ''}
<form id="login" method="post" action="/interaction/${esc(uid)}/login" autocomplete="off">
  <label>Username or email <input name="login" value="${esc(login || '')}" autofocus></label><br>
  <label>Password <input name="password" type="password"></label><br>
  <button type="submit">Sign in</button>
</form>
<p><a href="/interaction/${esc(uid)}/abort">Cancel</a></p>
</body></html>`;
}

// Interaction routes (mounted before oidc-provider's own router by provider.use()).
provider.use(async (ctx, next) => {
  const m = ctx.path.match(/^\/interaction\/([\w-]+)(?:\/(login|abort))?$/);
  if (!m) return next();
  ctx.set('Cache-Control', 'no-store');
  const [, uid, action] = m;
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  if (details.uid !== uid) ctx.throw(400, 'interaction mismatch');
  const { prompt, params, session } = details;

  if (ctx.method === 'GET' && !action) {
    if (prompt.name === 'login') {
      ctx.type = 'html';
      ctx.body = loginPage({ uid, clientId: params.client_id, login: params.login_hint });
      return undefined;
    }
    if (prompt.name === 'consent') {
      // auto-consent (e.g. prompt=consent was requested explicitly)
      const grant = details.grantId
        ? await provider.Grant.find(details.grantId)
        : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
      const d = prompt.details;
      if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
      if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
      if (d.missingResourceScopes) {
        for (const [ind, sc] of Object.entries(d.missingResourceScopes)) grant.addResourceScope(ind, sc.join(' '));
      }
      const returnTo = await provider.interactionResult(ctx.req, ctx.res,
        { consent: { grantId: await grant.save() } }, { mergeWithLastSubmission: true });
      ctx.status = 303;
      return ctx.redirect(returnTo);
    }
    ctx.throw(501, `prompt ${prompt.name} not implemented`);
  }
  if (ctx.method === 'POST' && action === 'login') {
    const form = await readForm(ctx.req);
    const user = findUserByLogin(form.login);
    if (!user || user.password !== form.password) {
      ctx.status = 200;
      ctx.type = 'html';
      ctx.body = loginPage({ uid, clientId: params.client_id, error: 'Invalid username or password', login: form.login });
      console.log(`[${NAME}] login failed for ${JSON.stringify(form.login)}`);
      return undefined;
    }
    console.log(`[${NAME}] login ok for ${user.sub}`);
    const returnTo = await provider.interactionResult(ctx.req, ctx.res, {
      login: { accountId: user.sub, amr: ['pwd'], acr: 'urn:partner:pwd', remember: true },
    }, { mergeWithLastSubmission: false });
    ctx.status = 303;
    return ctx.redirect(returnTo);
  }
  if (ctx.method === 'GET' && action === 'abort') {
    const returnTo = await provider.interactionResult(ctx.req, ctx.res, {
      error: 'access_denied', error_description: 'End-User aborted interaction',
    }, { mergeWithLastSubmission: false });
    ctx.status = 303;
    return ctx.redirect(returnTo);
  }
  return ctx.throw(405);
});

provider.on('server_error', (ctx, err) => console.error(`[${NAME}] server_error`, err));
provider.on('grant.error', (ctx, err) => console.error(`[${NAME}] grant.error`, err.message, err.error_description || ''));
provider.on('authorization.error', (ctx, err) => console.error(`[${NAME}] authorization.error`, err.message, err.error_description || ''));

const server = createServer(provider.callback());
server.on('error', (err) => {
  console.error(`[${NAME}] listen error: ${err.code || ''} ${err.message}`);
  process.exit(err.code === 'EADDRINUSE' ? 98 : 1);
});
server.listen(PORT, HOST, () => {
  console.log(`[${NAME}] oidc-provider listening on http://${HOST}:${PORT}, issuer ${ISSUER}, node ${process.version}`);
  console.log(`[${NAME}] clients: ${clients.map((c) => `${c.client_id} -> ${(c.redirect_uris || []).join(' ')}`).join('; ')}`);
  console.log(`[${NAME}] users: ${users.map((u) => `${u.username} <${u.email}>`).join(', ')}`);
});
const shutdown = () => {
  server.close(() => process.exit(0));
  server.closeAllConnections();
};
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
if (env.PARENT_PID) {
  const parent = Number(env.PARENT_PID);
  setInterval(() => {
    try { process.kill(parent, 0); } catch { console.error(`[${NAME}] parent ${parent} gone, exiting`); process.exit(0); }
  }, 1000).unref();
}
