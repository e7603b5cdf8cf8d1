// The authorization code flow with DPoP (RFC 9449), as openid-client does it: a key pair of its
// own (randomDPoPKeyPair), and one DPoP handle (getDPoPHandle) passed to the code grant, to
// userinfo and to the refresh grant. openid-client makes every proof itself (htm, htu, iat, jti,
// ath at userinfo), keeps the server's DPoP-Nonce, and retries once by itself on use_dpop_nonce.
//
// Lines: {"event": "authorization_url", url, nonce, jkt} — jkt is the RFC 7638 thumbprint of the
// public key, for the test to compare with cnf.jkt; the test drives the browser part and writes
// the URL the browser landed on as one line on standard input — {"event": "token_response", ...}
// for every answer of the token endpoint, {"event": "resource_response", url, status, scheme,
// error, nonce} for every other answer (userinfo), then the result or the error.
// Extra environment: QR_OIDC_REDIRECT_URI, QR_OIDC_SCOPE, QR_OIDC_DPOP_ALG (default ES256).
//
// Result: the token response of the code grant; userinfo with the handle; what userinfo answers
// when the same access token is sent as a plain Bearer token and with another key's proofs; the
// refresh with the handle and userinfo with the new access token; what a refresh without the
// handle answers.
import { createHash } from 'node:crypto'
import { createInterface } from 'node:readline'
import { client, configure, describeError, emit, env, main, tokenSummary } from './lib.mjs'

async function firstLine() {
  const lines = createInterface({ input: process.stdin })
  for await (const line of lines) {
    lines.close()
    return line.trim()
  }
  throw new Error('no callback URL on standard input')
}

async function outcome(promise) {
  try {
    return { ok: await promise }
  } catch (err) {
    return describeError(err)
  }
}

// RFC 7638: SHA-256 over the required members of the public JWK, in lexicographic order.
const REQUIRED = { EC: ['crv', 'kty', 'x', 'y'], RSA: ['e', 'kty', 'n'], OKP: ['crv', 'kty', 'x'] }

async function thumbprint(publicKey) {
  const jwk = await crypto.subtle.exportKey('jwk', publicKey)
  const members = Object.fromEntries(REQUIRED[jwk.kty].map((name) => [name, jwk[name]]))
  return createHash('sha256').update(JSON.stringify(members)).digest('base64url')
}

// Every answer that is not the token endpoint's (lib.mjs records those): its status and the
// challenge's scheme and error, and whether it named a DPoP nonce.
function recordResources(config) {
  const tokenEndpoint = config.serverMetadata().token_endpoint
  const inner = config[client.customFetch]
  config[client.customFetch] = async (url, options) => {
    const response = await inner(url, options)
    if (String(url) !== tokenEndpoint) {
      const challenge = response.headers.get('www-authenticate') ?? ''
      emit('resource_response', {
        url: String(url),
        status: response.status,
        scheme: challenge ? challenge.split(' ')[0] : null,
        error: /error="([^"]*)"/.exec(challenge)?.[1] ?? null,
        nonce: response.headers.has('dpop-nonce'),
      })
    }
    return response
  }
}

await main(async () => {
  const config = await configure()
  recordResources(config)
  const keyPair = await client.randomDPoPKeyPair(env('QR_OIDC_DPOP_ALG', 'ES256'))
  const DPoP = client.getDPoPHandle(config, keyPair)
  const jkt = await thumbprint(keyPair.publicKey)

  const codeVerifier = client.randomPKCECodeVerifier()
  const state = client.randomState()
  const nonce = client.randomNonce()
  const url = client.buildAuthorizationUrl(config, {
    redirect_uri: env('QR_OIDC_REDIRECT_URI'),
    scope: env('QR_OIDC_SCOPE', 'openid profile offline_access'),
    code_challenge: await client.calculatePKCECodeChallenge(codeVerifier),
    code_challenge_method: 'S256',
    state,
    nonce,
  })
  emit('authorization_url', { url: url.href, nonce, jkt })

  const callback = new URL(await firstLine())
  const tokens = await client.authorizationCodeGrant(config, callback, {
    pkceCodeVerifier: codeVerifier,
    expectedState: state,
    expectedNonce: nonce,
  }, undefined, { DPoP })
  const sub = tokens.claims().sub
  const userinfo = await client.fetchUserInfo(config, tokens.access_token, sub, { DPoP })

  // the same access token without the key: as a Bearer token, then with another key's proofs
  const asBearer = await outcome(client.fetchUserInfo(config, tokens.access_token, sub))
  const thief = client.getDPoPHandle(config, await client.randomDPoPKeyPair('ES256'))
  const otherKey = await outcome(
    client.fetchUserInfo(config, tokens.access_token, sub, { DPoP: thief }))

  const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token, undefined,
    { DPoP })
  const userinfoRefreshed = await client.fetchUserInfo(config, refreshed.access_token, sub,
    { DPoP })
  // the newest refresh token without the handle (a public client's is bound to the key)
  const refreshWithoutKey = await outcome(client.refreshTokenGrant(config,
    refreshed.refresh_token))
  return {
    jkt,
    tokens: tokenSummary(tokens),
    userinfo,
    userinfo_as_bearer: asBearer,
    userinfo_with_another_key: otherKey,
    refreshed: tokenSummary(refreshed),
    userinfo_refreshed: userinfoRefreshed,
    refresh_without_key: refreshWithoutKey.ok
      ? { ok: tokenSummary(refreshWithoutKey.ok) }
      : refreshWithoutKey,
  }
})
