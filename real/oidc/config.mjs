// The identity provider of tokenvisor's real-components suite: oidc-provider's configuration.
//
// Confidential clients (client_secret_basic or client_secret_post) that may use the
// authorization_code (+ PKCE), refresh_token and client_credentials grants; short access-token
// lifetimes (REAL_OIDC_ACCESS_TTL seconds, default 6); refresh tokens rotate on every use, and
// oidc-provider's reuse detection is on (it always is: presenting a consumed refresh token
// revokes the whole grant and answers invalid_grant "refresh token already used").
//
// Logins are automatic (provider.mjs): any account id is accepted (findAccount below), and
// the interaction endpoint logs the login_hint account in and consents to what was asked.

import { X509Certificate, createPublicKey } from 'node:crypto';
import { readFileSync } from 'node:fs';

import { JWT_BEARER, workloadIdentityClients } from './grants.mjs';

/** Client ids `tv-01` … `tv-24`, each with the secret `secret-of-<id>`. */
export const CLIENT_COUNT = 24;

/** The redirect URI every client registers (never fetched: login.mjs stops at it). */
export const REDIRECT_URI = 'http://127.0.0.1:9/callback';

export function clientId(n) {
  return `tv-${String(n).padStart(2, '0')}`;
}

export function secretOf(id) {
  return `secret-of-${id}`;
}

/**
 * Clients that authenticate with a signed client assertion (RFC 7523 §2.2), with grants of
 * their own: `tv-pkjwt` (private_key_jwt: its public key is the one of
 * `keys/private-key-jwt.pem`, a test-only EC P-256 key) and `tv-csjwt` (client_secret_jwt:
 * HS256 over `secret-of-tv-csjwt`). login.mjs signs its code exchange the same way.
 */
export const PRIVATE_KEY_JWT_CLIENT = 'tv-pkjwt';
export const CLIENT_SECRET_JWT_CLIENT = 'tv-csjwt';
export const CLIENT_KEY_FILE = new URL('./keys/private-key-jwt.pem', import.meta.url);

function assertionClients() {
  const common = {
    grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
    response_types: ['code'],
    redirect_uris: [REDIRECT_URI],
    scope: 'openid offline_access api',
  };
  const jwk = createPublicKey(readFileSync(CLIENT_KEY_FILE)).export({ format: 'jwk' });
  return [
    {
      ...common,
      client_id: PRIVATE_KEY_JWT_CLIENT,
      token_endpoint_auth_method: 'private_key_jwt',
      // and the jwt-bearer grant (grants.mjs), authenticated by its own client assertion
      grant_types: [...common.grant_types, JWT_BEARER],
      jwks: { keys: [{ ...jwk, kid: 'tv-pkjwt-1', use: 'sig', alg: 'ES256' }] },
    },
    {
      ...common,
      client_id: CLIENT_SECRET_JWT_CLIENT,
      client_secret: secretOf(CLIENT_SECRET_JWT_CLIENT),
      token_endpoint_auth_method: 'client_secret_jwt',
    },
  ];
}

/**
 * Clients that authenticate with a TLS client certificate (RFC 8705), which nginx
 * (real/nginx/tls.conf.in) passes URL-escaped in `x-ssl-client-cert`: `tv-mtls`
 * (tls_client_auth: a certificate for CN=tv-mtls issued by keys/client-ca.pem) and `tv-ss`
 * (self_signed_tls_client_auth: the registered keys/self-signed.pem). Test-only keys.
 */
export const TLS_CLIENT = 'tv-mtls';
export const SELF_SIGNED_CLIENT = 'tv-ss';
const keyFile = (name) => readFileSync(new URL(`./keys/${name}`, import.meta.url));

function tlsClients() {
  const common = {
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    scope: 'api',
  };
  const selfSigned = new X509Certificate(keyFile('self-signed.pem'));
  const jwk = selfSigned.publicKey.export({ format: 'jwk' });
  return [
    {
      ...common,
      client_id: TLS_CLIENT,
      token_endpoint_auth_method: 'tls_client_auth',
      tls_client_auth_subject_dn: 'CN=tv-mtls',
    },
    {
      ...common,
      client_id: SELF_SIGNED_CLIENT,
      token_endpoint_auth_method: 'self_signed_tls_client_auth',
      jwks: { keys: [{ ...jwk, x5c: [selfSigned.raw.toString('base64')] }] },
    },
  ];
}

/** The client certificate nginx passed, if any (PEM). */
function clientCertificate(ctx) {
  const escaped = ctx.get('x-ssl-client-cert');
  return escaped ? decodeURIComponent(escaped) : undefined;
}

/**
 * Clients only `tokenvisor login`'s tests use (tests-rs/tests/real/login.rs): native
 * applications (RFC 8252: a loopback redirect URI on any port), client_secret_basic, the code
 * and device flows. Their logins go through oidc-provider's own pages (its development
 * interactions: a login form, then a consent form), never the automatic login of
 * provider.mjs. `tv-login-short`'s device codes expire after LOGIN_SHORT_DEVICE_TTL seconds.
 */
export const LOGIN_CLIENTS = ['tv-login', 'tv-login-short'];
export const LOGIN_SHORT_DEVICE_TTL = 2;
const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';

function loginClients() {
  return LOGIN_CLIENTS.map((id) => ({
    client_id: id,
    client_secret: secretOf(id),
    application_type: 'native',
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['authorization_code', 'refresh_token', DEVICE_GRANT],
    response_types: ['code'],
    redirect_uris: ['http://127.0.0.1/callback'],
    scope: 'openid offline_access api',
  }));
}

function clients() {
  const out = [
    ...assertionClients(), ...tlsClients(), ...loginClients(), ...workloadIdentityClients(),
  ];
  for (let n = 1; n <= CLIENT_COUNT; n += 1) {
    const id = clientId(n);
    out.push({
      client_id: id,
      client_secret: secretOf(id),
      // odd clients authenticate with HTTP Basic, even ones in the form body
      token_endpoint_auth_method: n % 2 === 1 ? 'client_secret_basic' : 'client_secret_post',
      grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
      response_types: ['code'],
      redirect_uris: [REDIRECT_URI],
      scope: 'openid offline_access api',
    });
  }
  return out;
}

export function configuration({ accessTtl, cookieKey }) {
  return {
    clients: clients(),
    scopes: ['openid', 'offline_access', 'api'],
    clientAuthMethods: [
      'client_secret_basic', 'client_secret_post', 'client_secret_jwt', 'private_key_jwt',
      'tls_client_auth', 'self_signed_tls_client_auth', 'none',
    ],
    cookies: { keys: [cookieKey] },
    // Any account exists: the suite tests token refresh, not user management.
    async findAccount(_ctx, sub) {
      return {
        accountId: sub,
        async claims() {
          return { sub };
        },
      };
    },
    features: {
      // The login form and consent form of LOGIN_CLIENTS (every other client is logged in
      // automatically by provider.mjs, which answers /interaction/ before these pages).
      devInteractions: { enabled: true },
      // RFC 8628, for `tokenvisor login --device`: /device/auth, the user-code pages at /device
      deviceFlow: { enabled: true },
      clientCredentials: { enabled: true },
      revocation: { enabled: true },
      introspection: { enabled: true },
      mTLS: {
        enabled: true,
        tlsClientAuth: true,
        selfSignedTlsClientAuth: true,
        getCertificate: clientCertificate,
        // nginx asks for a certificate without checking it: the client CA is checked here.
        certificateAuthorized(ctx) {
          const ca = new X509Certificate(keyFile('client-ca.pem'));
          const cert = new X509Certificate(clientCertificate(ctx));
          const now = Date.now();
          return cert.checkIssued(ca) && cert.verify(ca.publicKey)
            && Date.parse(cert.validFrom) <= now && now <= Date.parse(cert.validTo);
        },
        certificateSubjectMatches(ctx, property, expected) {
          const cert = new X509Certificate(clientCertificate(ctx));
          return property === 'tls_client_auth_subject_dn' && cert.subject.trim() === expected;
        },
      },
    },
    pkce: {
      // PKCE (S256) for every authorization request, confidential clients included
      required: () => true,
    },
    // Every refresh rotates the refresh token; a consumed one presented again is reuse.
    rotateRefreshToken: true,
    // A refresh token is issued whenever the client may use the refresh_token grant and
    // offline_access was granted (oidc-provider's default, stated here).
    async issueRefreshToken(_ctx, client, code) {
      return client.grantTypeAllowed('refresh_token') && code.scopes.has('offline_access');
    },
    interactions: {
      url(_ctx, interaction) {
        return `/interaction/${interaction.uid}`;
      },
    },
    ttl: {
      AccessToken: accessTtl,
      ClientCredentials: accessTtl,
      AuthorizationCode: 60,
      IdToken: 3600,
      Interaction: 600,
      Session: 3600,
      Grant: 24 * 3600,
      RefreshToken: 24 * 3600,
      DeviceCode(_ctx, _token, client) {
        return client?.clientId === 'tv-login-short' ? LOGIN_SHORT_DEVICE_TTL : 600;
      },
    },
    renderError(ctx, out) {
      ctx.type = 'json';
      ctx.body = out;
    },
  };
}
