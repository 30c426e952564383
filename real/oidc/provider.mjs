#!/usr/bin/env node
// oidc-provider for tokenvisor's real-components suite, on 127.0.0.1 only.
//
//   node real/oidc/provider.mjs [--port N] [--log FILE] [--access-ttl SECONDS]
//
// Listens on 127.0.0.1 (port 0 = any free port), then prints one JSON line to stdout:
//   {"event":"ready","issuer":"http://127.0.0.1:PORT","port":PORT,"pid":PID}
// and appends one JSON line per HTTP request to --log (what reached the provider: time of
// arrival in ms, method, path, client id, grant type, the account of the grant a refresh
// token belongs to, status, error code and description) and one per provider event that
// matters to the suite (grant.revoked with its account, server_error, …). The jwt-bearer and
// token-exchange grants are registered by grants.mjs.
// Stops on SIGTERM/SIGINT.

import { appendFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';
import MemoryAdapter from 'oidc-provider/lib/adapters/memory_adapter.js';

import { LOGIN_CLIENTS, configuration } from './config.mjs';
import { registerWorkloadGrants } from './grants.mjs';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    log: { type: 'string' },
    'access-ttl': { type: 'string', default: process.env.REAL_OIDC_ACCESS_TTL ?? '6' },
  },
});

const logFile = args.log;
function record(entry) {
  if (!logFile) return;
  // one append per line; a reader may still catch a line half-written (one that crosses a
  // page), so the suite's reader keeps only complete lines (`components::complete_lines`)
  appendFileSync(logFile, `${JSON.stringify(entry)}\n`);
}

const accessTtl = Number.parseInt(args['access-ttl'], 10);
if (!Number.isInteger(accessTtl) || accessTtl < 1) {
  console.error(`--access-ttl must be a positive number of seconds, not ${args['access-ttl']}`);
  process.exit(2);
}

/**
 * Storage for oidc-provider's in-memory adapter without its 1,000-entry LRU: with a few
 * hundred rotating grants the LRU evicted live refresh tokens ("refresh token not found",
 * a grant lost that tokenvisor never lost). Entries expire as the adapter asks; expired ones
 * are swept every minute.
 */
class Store {
  #entries = new Map();

  constructor() {
    setInterval(() => {
      const now = Date.now();
      for (const [key, e] of this.#entries) {
        if (e.expiry !== undefined && e.expiry <= now) this.#entries.delete(key);
      }
    }, 60_000).unref();
  }

  get(key) {
    const e = this.#entries.get(key);
    if (e === undefined) return undefined;
    if (e.expiry !== undefined && e.expiry <= Date.now()) {
      this.#entries.delete(key);
      return undefined;
    }
    return e.value;
  }

  set(key, value, options) {
    const expiry = typeof options?.maxAge === 'number' ? Date.now() + options.maxAge : undefined;
    this.#entries.set(key, { value, expiry });
  }

  delete(key) {
    this.#entries.delete(key);
  }
}
const store = new Store();

/** The account a request's grant belongs to (a refresh token's, once the provider found it). */
function accountOf(ctx) {
  const entities = ctx?.oidc?.entities ?? {};
  return entities.RefreshToken?.accountId ?? entities.Account?.accountId ?? null;
}

let handler = (_req, res) => {
  res.statusCode = 503;
  res.end();
};
const server = createServer((req, res) => handler(req, res));
server.keepAliveTimeout = 30_000;

server.listen(Number.parseInt(args.port, 10), '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    ...configuration({ accessTtl, cookieKey: randomBytes(16).toString('hex') }),
    adapter: (model) => new MemoryAdapter(model, store),
  });

  // What reached the provider, one line per request, written when the answer is known.
  provider.use(async (ctx, next) => {
    const t = Date.now();
    try {
      await next();
    } finally {
      const body = ctx.body && typeof ctx.body === 'object' && !Buffer.isBuffer(ctx.body) ? ctx.body : {};
      record({
        type: 'request',
        t,
        method: ctx.method,
        path: ctx.path,
        client: ctx.oidc?.client?.clientId ?? null,
        grant_type: ctx.oidc?.params?.grant_type ?? null,
        account: accountOf(ctx),
        status: ctx.status,
        error: typeof body.error === 'string' ? body.error : null,
        error_description: typeof body.error_description === 'string' ? body.error_description : null,
        // the names of a token request's form parameters (never their values)
        params: ctx.path === '/token' && ctx.oidc?.body ? Object.keys(ctx.oidc.body).sort() : [],
        // the workload-identity grants (grants.mjs): what was presented (a jti, never a token)
        detail: ctx.state?.grantDetail,
      });
    }
  });

  // The automatic login and consent: the login_hint account (default "alice") logs in and
  // everything the client asked for is granted, so login.mjs needs no human.
  provider.use(async (ctx, next) => {
    const m = /^\/interaction\/([^/]+)$/.exec(ctx.path);
    if (!m || ctx.method !== 'GET') {
      await next();
      return;
    }
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    const { prompt, params, session } = details;
    // `tokenvisor login`'s clients log in through the provider's own pages (config.mjs)
    if (LOGIN_CLIENTS.includes(params.client_id)) {
      await next();
      return;
    }
    const accountId = session?.accountId ?? params.login_hint ?? 'alice';
    const result = {};
    if (prompt.name === 'login') {
      result.login = { accountId };
    }
    let grant = details.grantId ? await provider.Grant.find(details.grantId) : undefined;
    if (!grant) {
      grant = new provider.Grant({ accountId, clientId: params.client_id });
    }
    const missing = prompt.details ?? {};
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    if (missing.missingResourceScopes) {
      for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes)) {
        grant.addResourceScope(indicator, scopes.join(' '));
      }
    }
    if (prompt.name === 'login' && typeof params.scope === 'string') {
      grant.addOIDCScope(params.scope);
    }
    result.consent = { grantId: await grant.save() };
    ctx.respond = false; // interactionFinished answers on the raw response
    await provider.interactionFinished(ctx.req, ctx.res, result, { mergeWithLastSubmission: true });
  });

  for (const event of ['grant.revoked', 'server_error', 'revocation.error', 'grant.error']) {
    provider.on(event, (ctx, arg) => {
      const entry = {
        type: 'event',
        event,
        t: Date.now(),
        client: ctx?.oidc?.client?.clientId ?? null,
        account: accountOf(ctx),
      };
      if (event === 'grant.revoked') entry.grant = String(arg).slice(0, 8);
      else if (arg instanceof Error) {
        entry.error = arg.error ?? arg.name;
        entry.error_description = arg.error_description ?? arg.message;
        if (arg.error_detail) entry.error_detail = arg.error_detail;
      }
      record(entry);
    });
  }

  registerWorkloadGrants(provider);

  handler = provider.callback();
  // The suite reads the ready line and closes the pipe; oidc-provider prints notices to
  // stdout later (the device flow's pages, on first use): a closed pipe must not kill it.
  process.stdout.on('error', () => {});
  process.stdout.write(`${JSON.stringify({ event: 'ready', issuer, port, pid: process.pid })}\n`);
});

function stop() {
  server.close();
  server.closeAllConnections?.();
  process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
