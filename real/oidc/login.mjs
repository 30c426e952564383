#!/usr/bin/env node
// The scripted authorization_code + PKCE (S256) flow against the suite's oidc-provider,
// over plain HTTP on 127.0.0.1, with no human: provider.mjs logs the login_hint account in
// and consents automatically. Prints the token response of the code exchange as one JSON
// line per grant: {"refresh_token":"…","access_token":"…","expires_in":N,"scope":"…"}.
//
//   node real/oidc/login.mjs --issuer http://127.0.0.1:PORT --client tv-01 [--account alice] [--count N]
//   node real/oidc/login.mjs --issuer … --client tv-01 --accounts w000,w001,…   # one grant per account
//
// Each of the --count grants is a separate login with a fresh cookie jar (its own session),
// so each refresh token belongs to a grant of its own: revoking one leaves the others alone.

import { readFileSync } from 'node:fs';
import { createHash, createHmac, createPrivateKey, randomBytes, sign } from 'node:crypto';
import { parseArgs } from 'node:util';

import {
  CLIENT_KEY_FILE, CLIENT_SECRET_JWT_CLIENT, PRIVATE_KEY_JWT_CLIENT, REDIRECT_URI, secretOf,
} from './config.mjs';

const { values: args } = parseArgs({
  options: {
    issuer: { type: 'string' },
    client: { type: 'string' },
    secret: { type: 'string' },
    account: { type: 'string', default: 'alice' },
    count: { type: 'string', default: '1' },
    accounts: { type: 'string' },
    scope: { type: 'string', default: 'openid offline_access api' },
  },
});
if (!args.issuer || !args.client) {
  console.error('usage: login.mjs --issuer URL --client ID [--secret S] [--account A] [--count N]');
  process.exit(2);
}
const clientSecret = args.secret ?? secretOf(args.client);
const basic = `Basic ${Buffer.from(`${encodeURIComponent(args.client)}:${encodeURIComponent(clientSecret)}`).toString('base64')}`;

const b64url = (buf) => buf.toString('base64url');

// How the code exchange authenticates: HTTP Basic, or for the assertion clients of
// config.mjs a client assertion (RFC 7523 §2.2) with the issuer as its audience.
function clientAuth() {
  const pk = args.client === PRIVATE_KEY_JWT_CLIENT;
  if (!pk && args.client !== CLIENT_SECRET_JWT_CLIENT) return { headers: { authorization: basic }, params: {} };
  const now = Math.floor(Date.now() / 1000);
  const json = (v) => b64url(Buffer.from(JSON.stringify(v)));
  const payload = { iss: args.client, sub: args.client, aud: args.issuer, jti: b64url(randomBytes(16)), iat: now, exp: now + 60 };
  const input = `${json({ alg: pk ? 'ES256' : 'HS256', typ: 'JWT' })}.${json(payload)}`;
  const signature = pk
    ? sign('sha256', Buffer.from(input), { key: createPrivateKey(readFileSync(CLIENT_KEY_FILE)), dsaEncoding: 'ieee-p1363' })
    : createHmac('sha256', clientSecret).update(input).digest();
  return {
    headers: {},
    params: {
      client_id: args.client,
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: `${input}.${b64url(signature)}`,
    },
  };
}

/** A minimal cookie jar: name → {value, path}; honours deletion and path prefixes. */
class Jar {
  #cookies = new Map();

  store(res) {
    for (const line of res.headers.getSetCookie()) {
      const [pair, ...attrs] = line.split(';');
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      let path = '/';
      let expired = value === '';
      for (const a of attrs) {
        const [k, v = ''] = a.trim().split('=');
        if (k.toLowerCase() === 'path') path = v;
        if (k.toLowerCase() === 'expires' && Date.parse(v) < Date.now()) expired = true;
        if (k.toLowerCase() === 'max-age' && Number(v) <= 0) expired = true;
      }
      const key = `${name};${path}`;
      if (expired) this.#cookies.delete(key);
      else this.#cookies.set(key, { name, value, path });
    }
  }

  header(url) {
    const { pathname } = new URL(url);
    return [...this.#cookies.values()]
      .filter((c) => pathname.startsWith(c.path))
      .map((c) => `${c.name}=${c.value}`)
      .join('; ');
  }
}

async function oneGrant(account) {
  const verifier = b64url(randomBytes(32));
  const challenge = b64url(createHash('sha256').update(verifier).digest());
  const state = b64url(randomBytes(12));
  const auth = new URL('/auth', args.issuer);
  auth.search = new URLSearchParams({
    client_id: args.client,
    response_type: 'code',
    redirect_uri: REDIRECT_URI,
    scope: args.scope,
    prompt: 'consent',
    login_hint: account,
    state,
    nonce: b64url(randomBytes(12)),
    code_challenge: challenge,
    code_challenge_method: 'S256',
  }).toString();

  const jar = new Jar();
  let url = auth.toString();
  let code;
  for (let hop = 0; hop < 20; hop += 1) {
    const res = await fetch(url, { redirect: 'manual', headers: { cookie: jar.header(url) } });
    jar.store(res);
    const location = res.headers.get('location');
    if (res.status < 300 || res.status >= 400 || !location) {
      throw new Error(`${url} answered ${res.status} without a redirect: ${(await res.text()).slice(0, 300)}`);
    }
    await res.arrayBuffer();
    const next = new URL(location, url);
    if (next.toString().startsWith(REDIRECT_URI)) {
      const p = next.searchParams;
      if (p.get('error')) throw new Error(`authorization failed: ${p.get('error')}: ${p.get('error_description')}`);
      if (p.get('state') !== state) throw new Error('state mismatch');
      code = p.get('code');
      break;
    }
    url = next.toString();
  }
  if (!code) throw new Error('no authorization code after 20 redirects');

  const { headers, params } = clientAuth();
  const res = await fetch(new URL('/token', args.issuer), {
    method: 'POST',
    headers: { ...headers, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      ...params,
      grant_type: 'authorization_code',
      code,
      redirect_uri: REDIRECT_URI,
      code_verifier: verifier,
    }),
  });
  const body = await res.json();
  if (res.status !== 200 || !body.refresh_token) {
    throw new Error(`code exchange answered ${res.status}: ${JSON.stringify(body).slice(0, 300)}`);
  }
  return {
    refresh_token: body.refresh_token,
    access_token: body.access_token,
    expires_in: body.expires_in,
    scope: body.scope,
  };
}

const accounts = args.accounts
  ? args.accounts.split(',').filter((a) => a !== '')
  : Array.from({ length: Number.parseInt(args.count, 10) }, () => args.account);
for (const account of accounts) {
  process.stdout.write(`${JSON.stringify(await oneGrant(account))}\n`);
}
