// An outside relying party against MAX: openid-client (panva, pinned in package.json), run by
// scripts/rp-check against a dev `edulink serve`. The person's side (MAX's SMS sign-in and consent
// pages) is played with fetch and a small cookie jar, the code read from MAX's dev SMS inbox.
//
// Checked with openid-client, each step failing the run (exit 1) on any mismatch:
//  1. discovery (issuer, PAR, DPoP algorithms, introspection advertised);
//  2. the app client `mesh-app`: code + PKCE + PAR + DPoP (ES256 ID token, maxAge), refresh with the
//     same key (and refused with another key), UserInfo with DPoP (and refused as Bearer);
//  3. the diary's client `mesh` (confidential, EdDSA): code + PKCE with maxAge, UserInfo;
//  4. RP-initiated logout with buildEndSessionUrl, when the provider advertises end_session_endpoint.
//
// Environment: MAX_ISSUER, DIARY_URL, MESH_SECRET, PHONE (E.164, +7…).

import * as client from 'openid-client'
import assert from 'node:assert/strict'

const issuer = process.env.MAX_ISSUER
const diary = process.env.DIARY_URL
const meshSecret = process.env.MESH_SECRET
const phone = process.env.PHONE ?? '+79160007788'
assert.ok(issuer && diary && meshSecret, 'MAX_ISSUER, DIARY_URL and MESH_SECRET are required')
const insecure = { execute: [client.allowInsecureRequests] } // plain http on 127.0.0.1 only

const APP_REDIRECT = 'ru.mos.dnevnik:/sferum/callback'
const MESH_REDIRECT = `${diary}/sferum/callback`

function ok(what) {
  console.log(`ok   ${what}`)
}

/** A person's browser at MAX: cookies kept, redirects followed by hand, forms posted with our Origin. */
class Person {
  jar = new Map()

  async fetch(url, init = {}) {
    const headers = new Headers(init.headers)
    const cookies = [...this.jar].map(([k, v]) => `${k}=${v}`).join('; ')
    if (cookies) headers.set('cookie', cookies)
    if (init.method === 'POST') headers.set('origin', issuer)
    const res = await fetch(url, { ...init, headers, redirect: 'manual' })
    for (const c of res.headers.getSetCookie()) {
      const [pair] = c.split(';')
      const i = pair.indexOf('=')
      this.jar.set(pair.slice(0, i).trim(), pair.slice(i + 1).trim())
    }
    return res
  }

  post(url, form) {
    return this.fetch(url, { method: 'POST', body: new URLSearchParams(form) })
  }

  /** From an authorization URL through sign-in and consent to the redirect to `redirectUri`. */
  async authorize(url, redirectUri) {
    let res = await this.fetch(url)
    let at = String(url)
    for (let step = 0; step < 20; step++) {
      if (res.status >= 300 && res.status < 400) {
        const loc = res.headers.get('location')
        if (loc.startsWith(redirectUri)) return new URL(loc)
        at = new URL(loc, at).href
        res = await this.fetch(at)
        continue
      }
      const html = await res.text()
      assert.equal(res.status, 200, `${at}: ${res.status} ${html.slice(0, 300)}`)
      const csrf = /name="csrf" value="([^"]+)"/.exec(html)?.[1]
      assert.ok(csrf, `no form at ${at}`)
      const path = new URL(at).pathname
      if (path === '/login') {
        res = await this.post(`${issuer}/login/phone`, { csrf, phone })
      } else if (path === '/login/code') {
        const inbox = await (await fetch(`${issuer}/dev/sms?to=${encodeURIComponent(phone)}`)).json()
        const code = inbox.at(-1)?.text?.split('#').pop()?.trim()
        assert.match(code ?? '', /^\d{6}$/, 'a code in the dev SMS inbox')
        res = await this.post(`${issuer}/login/code`, { csrf, code })
      } else if (path === '/login/register') {
        res = await this.post(`${issuer}/login/register`, { csrf, first_name: 'Ирина', last_name: 'Проверкина' })
      } else if (path === '/authorize/continue') {
        res = await this.post(`${issuer}/authorize/confirm`, { csrf })
      } else {
        assert.fail(`unexpected page ${at}`)
      }
      at = `${issuer}${path}`
    }
    assert.fail(`no redirect to ${redirectUri}`)
  }
}

async function rejects(what, promise, check) {
  try {
    await promise
  } catch (err) {
    check(err)
    ok(what)
    return
  }
  assert.fail(`${what}: expected a refusal`)
}

const person = new Person()

// 1. Discovery, as the app client (public: no client authentication, PKCE, ES256 ID tokens).
const app = await client.discovery(new URL(issuer), 'mesh-app', { id_token_signed_response_alg: 'ES256' }, client.None(), insecure)
const meta = app.serverMetadata()
assert.equal(meta.issuer, issuer)
assert.equal(meta.pushed_authorization_request_endpoint, `${issuer}/oauth/par`)
assert.ok(meta.dpop_signing_alg_values_supported?.includes('ES256'), 'DPoP ES256 advertised')
assert.equal(meta.introspection_endpoint, `${issuer}/oauth/introspect`)
assert.ok(meta.code_challenge_methods_supported?.includes('S256'))
ok('discovery')

// 2. The app: PAR with a DPoP proof (the code is bound to the key), PKCE, maxAge.
const key = await client.randomDPoPKeyPair('ES256')
const dpop = client.getDPoPHandle(app, key)
const verifier = client.randomPKCECodeVerifier()
const state = client.randomState()
const nonce = client.randomNonce()
const parUrl = await client.buildAuthorizationUrlWithPAR(app, {
  redirect_uri: APP_REDIRECT,
  scope: 'openid profile offline_access',
  code_challenge: await client.calculatePKCECodeChallenge(verifier),
  code_challenge_method: 'S256',
  state,
  nonce,
  max_age: '600',
}, { DPoP: dpop })
assert.deepEqual([...parUrl.searchParams.keys()].sort(), ['client_id', 'request_uri'])
assert.match(parUrl.searchParams.get('request_uri'), /^urn:ietf:params:oauth:request_uri:/)
ok('PAR with DPoP (use_dpop_nonce answered and retried by openid-client)')

const callback = await person.authorize(parUrl, APP_REDIRECT)
const tokens = await client.authorizationCodeGrant(app, callback, {
  pkceCodeVerifier: verifier,
  expectedState: state,
  expectedNonce: nonce,
  maxAge: 600,
  idTokenExpected: true,
}, undefined, { DPoP: dpop })
assert.equal(tokens.token_type, 'dpop', 'a DPoP-bound access token')
const claims = tokens.claims()
assert.equal(claims.iss, issuer)
assert.equal(claims.aud, 'mesh-app')
assert.equal(typeof claims.auth_time, 'number', 'auth_time for maxAge')
assert.ok(tokens.refresh_token, 'offline_access gives a refresh token')
ok('code + PKCE + PAR + DPoP for mesh-app, ES256 ID token checked with maxAge')

const info = await client.fetchUserInfo(app, tokens.access_token, claims.sub, { DPoP: dpop })
assert.equal(info.sub, claims.sub)
assert.equal(info.given_name, 'Ирина')
ok('UserInfo with Authorization: DPoP')
await rejects('a DPoP-bound access token presented as Bearer is refused',
  client.fetchUserInfo(app, tokens.access_token, claims.sub),
  (err) => assert.equal(err.response?.status ?? err.cause?.status, 401, String(err)))

const thief = client.getDPoPHandle(app, await client.randomDPoPKeyPair('ES256'))
await rejects('the refresh token with another DPoP key is refused',
  client.refreshTokenGrant(app, tokens.refresh_token, undefined, { DPoP: thief }),
  (err) => assert.equal(err.error, 'invalid_dpop_proof', String(err)))
const refreshed = await client.refreshTokenGrant(app, tokens.refresh_token, undefined, { DPoP: dpop })
assert.equal(refreshed.token_type, 'dpop')
assert.notEqual(refreshed.refresh_token, tokens.refresh_token, 'refresh tokens rotate')
const again = await client.fetchUserInfo(app, refreshed.access_token, claims.sub, { DPoP: dpop })
assert.equal(again.sub, claims.sub)
ok('refresh with the same DPoP key, then UserInfo')

// 3. The diary's web client: confidential (client_secret_basic), EdDSA ID tokens, code + PKCE.
const mesh = await client.discovery(new URL(issuer), 'mesh', { id_token_signed_response_alg: 'EdDSA' },
  client.ClientSecretBasic(meshSecret), insecure)
const meshVerifier = client.randomPKCECodeVerifier()
const meshState = client.randomState()
const meshNonce = client.randomNonce()
const meshUrl = client.buildAuthorizationUrl(mesh, {
  redirect_uri: MESH_REDIRECT,
  scope: 'openid profile',
  code_challenge: await client.calculatePKCECodeChallenge(meshVerifier),
  code_challenge_method: 'S256',
  state: meshState,
  nonce: meshNonce,
  max_age: '300',
})
const meshCallback = await person.authorize(meshUrl, MESH_REDIRECT)
const meshTokens = await client.authorizationCodeGrant(mesh, meshCallback, {
  pkceCodeVerifier: meshVerifier,
  expectedState: meshState,
  expectedNonce: meshNonce,
  maxAge: 300,
  idTokenExpected: true,
})
assert.equal(meshTokens.token_type, 'bearer')
const meshClaims = meshTokens.claims()
assert.equal(meshClaims.aud, 'mesh')
assert.equal(meshClaims.sub, claims.sub, 'the diary and its app share a sector: one pairwise subject')
const meshInfo = await client.fetchUserInfo(mesh, meshTokens.access_token, meshClaims.sub)
assert.equal(meshInfo.family_name, 'Проверкина')
ok('code + PKCE for the diary client (EdDSA ID token, maxAge), UserInfo with Bearer')

// 4. RP-initiated logout, where the provider offers it.
if (mesh.serverMetadata().end_session_endpoint) {
  const params = { id_token_hint: meshTokens.id_token }
  if (process.env.POST_LOGOUT_REDIRECT_URI) params.post_logout_redirect_uri = process.env.POST_LOGOUT_REDIRECT_URI
  const logoutUrl = client.buildEndSessionUrl(mesh, params)
  const res = await person.fetch(logoutUrl)
  assert.ok(res.status < 400, `end_session_endpoint answered ${res.status}`)
  // Signed out at MAX: a silent request finds no session.
  const silent = client.buildAuthorizationUrl(mesh, {
    redirect_uri: MESH_REDIRECT, scope: 'openid', prompt: 'none', state: 's',
    code_challenge: await client.calculatePKCECodeChallenge(client.randomPKCECodeVerifier()), code_challenge_method: 'S256',
  })
  const back = await person.fetch(silent)
  assert.match(back.headers.get('location') ?? '', /error=login_required/, 'no MAX session after logout')
  ok('RP-initiated logout (buildEndSessionUrl)')
} else {
  console.log('skip RP-initiated logout: MAX advertises no end_session_endpoint')
}
console.log('openid-client: all checks passed')
