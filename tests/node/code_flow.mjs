// The plain authorization code flow with openid-client, through the hosted login page (where the
// user may scan the QR instead of typing a password). openid-client checks the state, sends the
// PKCE verifier, and validates the ID token: signature, iss, aud, exp, iat and the nonce it sent.
//
// Lines: {"event": "authorization_url", url} — the test drives the browser part with it and
// writes the URL the browser was redirected to (the redirect_uri with code or error) on standard
// input as one line — then the result (token response and claims) or the error.
// Extra environment: QR_OIDC_REDIRECT_URI, QR_OIDC_SCOPE.
import { createInterface } from 'node:readline'
import { client, configure, emit, env, main, tokenSummary } from './lib.mjs'

async function firstLine() {
  const lines = createInterface({ input: process.stdin })
  for await (const line of lines) {
    lines.close()
    return line.trim()
  }
  throw new Error('no callback URL on standard input')
}

await main(async () => {
  const config = await configure()
  const codeVerifier = client.randomPKCECodeVerifier()
  const state = client.randomState()
  const nonce = client.randomNonce()
  const url = client.buildAuthorizationUrl(config, {
    redirect_uri: env('QR_OIDC_REDIRECT_URI'),
    scope: env('QR_OIDC_SCOPE', 'openid profile'),
    code_challenge: await client.calculatePKCECodeChallenge(codeVerifier),
    code_challenge_method: 'S256',
    state,
    nonce,
  })
  emit('authorization_url', { url: url.href, nonce })

  const callback = new URL(await firstLine())
  const response = await client.authorizationCodeGrant(config, callback, {
    pkceCodeVerifier: codeVerifier,
    expectedState: state,
    expectedNonce: nonce,
  })
  return tokenSummary(response)
})
