// A real OpenID Provider for chatapp's tests: panva's oidc-provider on 127.0.0.1, with one
// confidential client and a few accounts, both read from the JSON file named on the command line
// (tests/support/oidc.py writes it, and rewrites it to allow another redirect URI while it runs).
//
//   node provider.mjs SETTINGS.json
//
// Discovery, the authorization endpoint, the token endpoint (ID tokens signed with a key made at
// start, published at the JWKS URI), userinfo and RP-initiated logout are the library's own. What
// is ours: the account store, the sign-in and consent pages (plain forms, a password checked), and
// pages that load nothing from elsewhere (the library's defaults import a web font).
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

import Provider from 'oidc-provider';
// Not in the package's documented interface: its version is pinned in package.json.
import { createMemoryAdapter } from 'oidc-provider/lib/adapters/memory_adapter.js';

const settingsFile = process.argv[2];
const readSettings = () => JSON.parse(readFileSync(settingsFile, 'utf8'));
// The issuer names 127.0.0.1, or localhost for an app that must be on another site than the provider.
const { port, issuer, accounts } = readSettings();

// The client lives in the settings file, read again at each lookup (the library keeps the client
// that the file described last), so a redirect URI allowed after start is honoured at once. The rest
// (sessions, interactions, codes, tokens, grants) stays in the library's own in-memory store.
const inMemory = createMemoryAdapter();
const clientFile = {
  async find(id) {
    const { client } = readSettings();
    return client.client_id === id ? client : undefined;
  },
};
const adapter = (model) => (model === 'Client' ? clientFile : inMemory(model));

const escape = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function page(title, body) {
  return `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escape(title)} - test OpenID Provider</title>
<style>body{font-family:sans-serif;max-width:24rem;margin:2rem auto}label,input,button{display:block;margin:.5rem 0}</style>
</head>
<body><main><h1>${escape(title)}</h1>
${body}
</main></body>
</html>`;
}

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: randomBytes(8).toString('hex'), alg: 'RS256', use: 'sig' };

const provider = new Provider(issuer, {
  adapter,
  jwks: { keys: [signingKey] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  async findAccount(ctx, sub) {
    const account = accounts.find((candidate) => candidate.sub === sub);
    if (!account) {
      return undefined;
    }
    return {
      accountId: sub,
      async claims() {
        return {
          sub,
          email: account.email,
          email_verified: account.email_verified,
          name: account.name,
          preferred_username: account.username,
        };
      },
    };
  },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
  },
  scopes: ['openid', 'email', 'profile'],
  // The scopes' claims go into the ID token too, as most providers do (the spec keeps them for
  // userinfo when an access token is issued; userinfo answers either way).
  conformIdTokenClaims: false,
  responseTypes: ['code'],
  pkce: { required: () => true },
  // Lifetimes in seconds; an ID token is checked against the clock (exp, iat) by the app.
  ttl: { AuthorizationCode: 60, IdToken: 600, AccessToken: 600, Interaction: 600, Session: 3600, Grant: 3600 },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  features: {
    devInteractions: { enabled: false },
    rpInitiatedLogout: {
      enabled: true,
      async logoutSource(ctx, form) {
        ctx.body = page('Sign out', `${form}
<p>Sign out of the test OpenID Provider?</p>
<button type="submit" form="op.logoutForm" name="logout" value="yes">Yes, sign me out</button>
<button type="submit" form="op.logoutForm">No, stay signed in</button>`);
      },
      async postLogoutSuccessSource(ctx) {
        ctx.body = page('Signed out', '<p>You are signed out of the test OpenID Provider.</p>');
      },
    },
  },
  async renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = page('Error', `<p id="error">${escape(out.error)}</p><p id="error-description">${escape(out.error_description ?? '')}</p>`);
  },
});

provider.on('server_error', (ctx, error) => console.error('server_error', error));

function signInForm(uid, params, error) {
  const login = params.login_hint ?? '';
  return page('Sign in', `${error ? `<p role="alert" id="error">${escape(error)}</p>` : ''}
<form method="post" action="/interaction/${escape(uid)}/login">
<label for="username">Username</label>
<input id="username" name="username" autocomplete="username" required value="${escape(login)}">
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Sign in</button>
</form>
<p><a href="/interaction/${escape(uid)}/abort">Cancel</a></p>`);
}

function consentForm(uid, client, details) {
  const scopes = (details.missingOIDCScope ?? []).map((scope) => `<li>${escape(scope)}</li>`).join('');
  return page('Allow access', `<p>${escape(client.clientName ?? client.clientId)} asks to know who you are:</p>
<ul id="scopes">${scopes}</ul>
<form method="post" action="/interaction/${escape(uid)}/confirm">
<button type="submit" name="decision" value="allow">Allow</button>
<button type="submit" name="decision" value="deny">Deny</button>
</form>`);
}

async function readForm(req) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 10_000) {
      throw new Error('form too large');
    }
  }
  return new URLSearchParams(body);
}

const denied = { error: 'access_denied', error_description: 'End-User aborted interaction' };

// The sign-in and consent steps: GET shows the page the current prompt asks for; POST finishes it
// and sends the browser back to the authorization endpoint, which goes on with the protocol.
async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) {
    throw new Error('interaction mismatch');
  }
  const { prompt, params } = details;
  const html = (status, body) => {
    res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    res.end(body);
  };

  if (req.method === 'GET' && action === undefined) {
    if (prompt.name === 'login') {
      return html(200, signInForm(uid, params));
    }
    const client = await provider.Client.find(params.client_id);
    return html(200, consentForm(uid, client, prompt.details));
  }
  if (req.method === 'GET' && action === 'abort') {
    return provider.interactionFinished(req, res, denied, { mergeWithLastSubmission: false });
  }
  if (req.method === 'POST' && action === 'login' && prompt.name === 'login') {
    const form = await readForm(req);
    const account = accounts.find((candidate) => candidate.username === form.get('username'));
    if (!account || account.password !== form.get('password')) {
      return html(200, signInForm(uid, { login_hint: form.get('username') ?? '' }, 'Wrong username or password.'));
    }
    return provider.interactionFinished(req, res, { login: { accountId: account.sub } }, { mergeWithLastSubmission: false });
  }
  if (req.method === 'POST' && action === 'confirm' && prompt.name === 'consent') {
    const form = await readForm(req);
    if (form.get('decision') !== 'allow') {
      return provider.interactionFinished(req, res, denied, { mergeWithLastSubmission: false });
    }
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: params.client_id });
    if (prompt.details.missingOIDCScope) {
      grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
    }
    if (prompt.details.missingOIDCClaims) {
      grant.addOIDCClaims(prompt.details.missingOIDCClaims);
    }
    const grantId = await grant.save();
    return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  }
  return html(400, page('Error', '<p id="error">This step does not match the sign-in in progress.</p>'));
}

const callback = provider.callback();
const server = createServer((req, res) => {
  const match = /^\/interaction\/([\w-]+)(?:\/(login|confirm|abort))?$/.exec(new URL(req.url, issuer).pathname);
  if (!match) {
    callback(req, res);
    return;
  }
  interaction(req, res, match[1], match[2]).catch((error) => {
    console.error('interaction failed', error);
    if (!res.headersSent) {
      res.writeHead(400, { 'content-type': 'text/html; charset=utf-8' });
    }
    res.end(page('Error', `<p id="error">${escape(error.message)}</p>`));
  });
});

server.listen(port, '127.0.0.1', () => console.log(`listening ${issuer}`));

// Stop with the test run: on SIGTERM, and when the harness that started it is gone (its pipe closes).
const stop = () => server.close(() => process.exit(0)) && server.closeAllConnections();
process.on('SIGTERM', stop);
process.stdin.on('end', stop);
process.stdin.resume();
