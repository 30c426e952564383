// The workload-identity grants of the real-components suite, registered through
// oidc-provider's own extension point (provider.registerGrantType):
//
// - jwt-bearer (RFC 7523 §2.1): `assertion` is a JWT the "platform" signed with the test-only
//   key keys/platform.pem (ES256), iss PLATFORM_ISSUER, aud the provider's issuer or its token
//   endpoint, exp in the future; anything else is invalid_grant.
// - token-exchange (RFC 8693): `subject_token` (and `actor_token`, when sent) is either such a
//   platform JWT (token type ...:jwt) or an access token this provider issued (...:access_token);
//   `requested_token_type`, when sent, must be ...:access_token.
//
// Both issue an access token (the ClientCredentials model: its TTL is the suite's access TTL)
// and no refresh token. The request log (provider.mjs) gets a `detail` of what was presented:
// the platform token's `jti` (never a token), the audience and resource sent, the types.

import { createPublicKey, verify } from 'node:crypto';
import { readFileSync } from 'node:fs';

import { errors } from 'oidc-provider';

export const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
export const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const TYPE = 'urn:ietf:params:oauth:token-type:';

/** The issuer of the platform's tokens (a Kubernetes cluster, a CI, … in real life). */
export const PLATFORM_ISSUER = 'https://platform.test';

const platformKey = createPublicKey(readFileSync(new URL('./keys/platform.pem', import.meta.url)));

/**
 * Clients of these grants: `tv-jwtb` (public: no client authentication, RFC 7523 §2.1 allows
 * it), `tv-tx` (token exchange, client_secret_basic with `secret-of-tv-tx`) and `tv-tx-post`
 * (client_secret_post with `secret-of-tv-tx-post`).
 */
export function workloadIdentityClients() {
  const common = { response_types: [], redirect_uris: [], scope: 'api' };
  return [
    { ...common, client_id: 'tv-jwtb', token_endpoint_auth_method: 'none', grant_types: [JWT_BEARER] },
    {
      ...common,
      client_id: 'tv-tx',
      client_secret: 'secret-of-tv-tx',
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: [TOKEN_EXCHANGE, 'client_credentials'],
    },
    {
      ...common,
      client_id: 'tv-tx-post',
      client_secret: 'secret-of-tv-tx-post',
      token_endpoint_auth_method: 'client_secret_post',
      grant_types: [TOKEN_EXCHANGE],
    },
  ];
}

/** The claims of a platform JWT, verified (signature, iss, aud, exp); else invalid_grant. */
function platformClaims(jwt, audiences, what) {
  const parts = String(jwt).split('.');
  const bad = (why) => new errors.InvalidGrant(`${what} rejected: ${why}`);
  if (parts.length !== 3) throw bad('not a JWT');
  const [h, p, s] = parts;
  let header;
  let claims;
  try {
    header = JSON.parse(Buffer.from(h, 'base64url').toString());
    claims = JSON.parse(Buffer.from(p, 'base64url').toString());
  } catch {
    throw bad('not a JWT');
  }
  if (header.alg !== 'ES256') throw bad('not signed ES256');
  const signed = Buffer.from(`${h}.${p}`);
  const ok = verify('sha256', signed, { key: platformKey, dsaEncoding: 'ieee-p1363' }, Buffer.from(s, 'base64url'));
  if (!ok) throw bad('signature does not verify with the platform key');
  if (claims.iss !== PLATFORM_ISSUER) throw bad('unknown issuer');
  const aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
  if (!aud.some((a) => audiences.includes(a))) throw bad('aud is not this provider');
  if (typeof claims.exp !== 'number' || claims.exp <= Date.now() / 1000) throw bad('expired');
  return claims;
}

/** An access token for the grant's client, as client_credentials would issue it. */
async function issue(provider, ctx, extra = {}) {
  const { scope } = ctx.oidc.params;
  const token = new provider.ClientCredentials({ client: ctx.oidc.client, scope: scope || undefined });
  ctx.oidc.entity('ClientCredentials', token);
  const value = await token.save();
  ctx.body = {
    access_token: value,
    expires_in: token.expiration,
    token_type: 'Bearer',
    ...(scope ? { scope } : {}),
    ...extra,
  };
}

/** The `jti` (or a marker) of a subject or actor token of `type`, verified; else an error. */
async function presented(provider, audiences, token, type, what) {
  if (type === `${TYPE}jwt`) return platformClaims(token, audiences, what).jti ?? null;
  if (type === `${TYPE}access_token`) {
    const at = (await provider.ClientCredentials.find(token)) ?? (await provider.AccessToken.find(token));
    if (!at || at.isExpired) throw new errors.InvalidGrant(`${what} rejected: unknown or expired access token`);
    return 'provider-access-token';
  }
  throw new errors.InvalidRequest(`${what}_type ${type} is not supported here`);
}

export function registerWorkloadGrants(provider) {
  const audiences = [provider.issuer, `${provider.issuer}/token`];
  provider.registerGrantType(
    JWT_BEARER,
    async (ctx) => {
      const { assertion, audience, resource } = ctx.oidc.params;
      if (!assertion) throw new errors.InvalidRequest('missing assertion');
      const claims = platformClaims(assertion, audiences, 'assertion');
      ctx.state.grantDetail = { presented: claims.jti ?? null, sub: claims.sub ?? null, audience, resource };
      await issue(provider, ctx);
    },
    ['assertion', 'scope', 'audience', 'resource'],
  );
  provider.registerGrantType(
    TOKEN_EXCHANGE,
    async (ctx) => {
      const p = ctx.oidc.params;
      if (!p.subject_token || !p.subject_token_type) {
        throw new errors.InvalidRequest('missing subject_token or subject_token_type');
      }
      if (Boolean(p.actor_token) !== Boolean(p.actor_token_type)) {
        throw new errors.InvalidRequest('actor_token and actor_token_type go together');
      }
      const subject = await presented(provider, audiences, p.subject_token, p.subject_token_type, 'subject_token');
      const actor = p.actor_token
        ? await presented(provider, audiences, p.actor_token, p.actor_token_type, 'actor_token')
        : null;
      const access = `${TYPE}access_token`;
      if (p.requested_token_type && p.requested_token_type !== access) {
        throw new errors.InvalidRequest('only access tokens are issued (requested_token_type)');
      }
      ctx.state.grantDetail = {
        presented: subject,
        subject_token_type: p.subject_token_type,
        actor,
        actor_token_type: p.actor_token_type ?? null,
        requested_token_type: p.requested_token_type ?? null,
        audience: p.audience ?? null,
        resource: p.resource ?? null,
      };
      await issue(provider, ctx, { issued_token_type: access });
    },
    [
      'subject_token', 'subject_token_type', 'actor_token', 'actor_token_type',
      'requested_token_type', 'audience', 'resource', 'scope',
    ],
  );
}
