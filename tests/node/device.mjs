// RFC 8628 device flow with openid-client: initiateDeviceAuthorization, then
// pollDeviceAuthorizationGrant until the user approves (or denies) on another device.
//
// Lines: {"event": "device_authorization", user_code, verification_uri, verification_uri_complete,
// expires_in, interval}, then one "token_response" per poll, then the result: the token response
// (ID token validated by openid-client, signature included) and the userinfo answer
// (fetchUserInfo checks that its sub is the ID token's).
//
// Extra environment: QR_OIDC_SCOPE (default "openid profile"), QR_OIDC_NONCE (sent and expected
// back in the ID token), QR_OIDC_POLL_EVERY (seconds: poll at this interval instead of the one the
// server gave, to see how openid-client copes with slow_down).
import { client, configure, emit, env, main, optionalEnv, tokenSummary } from './lib.mjs'

await main(async () => {
  const config = await configure()
  const parameters = { scope: env('QR_OIDC_SCOPE', 'openid profile') }
  const nonce = optionalEnv('QR_OIDC_NONCE')
  if (nonce) parameters.nonce = nonce

  const authorization = await client.initiateDeviceAuthorization(config, parameters)
  const { user_code, verification_uri, verification_uri_complete, expires_in, interval } =
    authorization
  emit('device_authorization', {
    user_code, verification_uri, verification_uri_complete, expires_in, interval,
  })

  const every = optionalEnv('QR_OIDC_POLL_EVERY')
  const polled = every === undefined ? authorization : { ...authorization, interval: Number(every) }
  const response = await client.pollDeviceAuthorizationGrant(config, polled)
  const summary = tokenSummary(response)
  summary.userinfo = await client.fetchUserInfo(config, response.access_token, summary.claims.sub)
  return summary
})
