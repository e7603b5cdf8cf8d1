// Push login (OpenID CIBA, poll mode) with openid-client: initiateBackchannelAuthentication, then
// pollBackchannelAuthenticationGrant until the user approves (or denies) on their phone.
//
// Lines: {"event": "backchannel_authentication", auth_req_id_length, expires_in, interval}, then
// one "token_response" per poll, then the result: the token response (ID token validated by
// openid-client, signature included) and the userinfo answer.
//
// Extra environment: QR_OIDC_LOGIN_HINT (the user), QR_OIDC_BINDING_MESSAGE,
// QR_OIDC_SCOPE (default "openid profile").
import { client, configure, emit, env, main, optionalEnv, tokenSummary } from './lib.mjs'

await main(async () => {
  const config = await configure()
  const parameters = {
    scope: env('QR_OIDC_SCOPE', 'openid profile'),
    login_hint: env('QR_OIDC_LOGIN_HINT'),
  }
  const message = optionalEnv('QR_OIDC_BINDING_MESSAGE')
  if (message) parameters.binding_message = message

  const request = await client.initiateBackchannelAuthentication(config, parameters)
  emit('backchannel_authentication', {
    auth_req_id_length: request.auth_req_id.length,
    expires_in: request.expires_in,
    interval: request.interval,
  })
  const response = await client.pollBackchannelAuthenticationGrant(config, request)
  const summary = tokenSummary(response)
  summary.userinfo = await client.fetchUserInfo(config, response.access_token, summary.claims.sub)
  return summary
})
